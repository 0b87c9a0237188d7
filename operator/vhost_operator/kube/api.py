"""Connecting to the API server, and the error mapping every call goes through."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

import kubernetes
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from vhost_operator.errors import ApiError, TransientApiError

T = TypeVar("T")
logger = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
"""Conflict, throttling and server-side hiccups: a retry may succeed without anyone acting."""

RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
"""Seconds between attempts of one call: bounded, so a step fails in seconds, not forever."""


def connect() -> kubernetes.client.ApiClient:
    """An API client from the in-cluster service account, or else from the kubeconfig."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


def _describe(error: ApiException) -> str:
    # The API's own message, without the request id and headers that change on every call.
    reason = error.reason or "error"
    return f"Kubernetes API answered {error.status} {reason}"


async def call(
    function: Callable[[], T], *, what: str, delays: tuple[float, ...] = RETRY_DELAYS
) -> T:
    """Run one blocking API call in a thread; retry transient failures, then map the error."""
    for delay in (*delays, None):
        try:
            return await asyncio.to_thread(function)
        except ApiException as error:
            if error.status not in TRANSIENT_STATUSES:
                raise ApiError(f"{what}: {_describe(error)}", status=error.status) from error
            failure: Exception = error
            message = f"{what}: {_describe(error)}"
        except (urllib3.exceptions.HTTPError, OSError) as error:
            failure = error
            message = f"{what}: API server unreachable ({type(error).__name__})"
        if delay is None:
            raise TransientApiError(message) from failure
        logger.debug("retrying %s in %ss after %s", what, delay, failure)
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")
