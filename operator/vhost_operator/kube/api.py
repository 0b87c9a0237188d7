"""Connecting to the API server, and the error mapping every call goes through."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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


ApiClient = kubernetes.client.ApiClient
"""The client :func:`connect` returns, named here so that the code holding one (the operator's
wiring, the agent, the gate) does not import ``kubernetes`` itself."""

CONNECTIONS = 10
"""Default size of the client's connection pool (the ``kubernetes`` client's own default is
CPU count x 5). A call that finds every pooled connection busy opens one of its own and throws
it away afterwards: a TLS handshake per call. Size it to the threads that make calls."""


def connect(connections: int = CONNECTIONS, *, kubeconfig: Path | None = None) -> ApiClient:
    """An API client from ``kubeconfig`` if given, else from the in-cluster service account, else
    from the default kubeconfig, keeping up to ``connections`` connections open (one per thread
    that calls it at the same time)."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is not None:
        kubernetes.config.load_kube_config(
            config_file=str(kubeconfig), client_configuration=configuration
        )
    else:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    throttle_token_refresh(configuration)
    return kubernetes.client.ApiClient(configuration)


TOKEN_CHECK_INTERVAL = 1.0
"""Seconds between two checks whether the client's token needs reading again."""


def throttle_token_refresh(
    configuration: Any,
    *,
    interval: float = TOKEN_CHECK_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Let the client check its token at most once per ``interval``, not before every request.

    With a token (the in-cluster service account, or a kubeconfig token) the client calls its
    refresh hook before every request, and the hook sets the server address and CA again each
    time, which scans the whole environment for proxy variables: about 0.1 ms of CPU per
    request, a few % of the operator's CPU while it provisions. A token is read again well
    before it expires (the in-cluster file every minute, a kubeconfig token 5 minutes before
    its expiry), so a second's delay changes nothing. The hook puts itself back on every call
    (both loaders do): whatever it installs becomes the one this wrapper calls next.
    """
    hook = configuration.refresh_api_key_hook
    if hook is None:
        return
    lock = threading.Lock()
    checked: float | None = None

    def refresh(config: Any) -> None:
        nonlocal hook, checked
        with lock:
            now = clock()
            if checked is not None and now - checked < interval:
                return
            checked = now
            hook(config)
            if config.refresh_api_key_hook is not refresh:
                hook = config.refresh_api_key_hook
                config.refresh_api_key_hook = refresh

    configuration.refresh_api_key_hook = refresh


def json_body(response: Any) -> Any:
    """The JSON document of a response fetched with ``_preload_content=False``.

    Reads and writes go that way: the client's own deserialization into model classes (every
    field validated, every timestamp parsed) costs more CPU than the request itself, and the
    operator only needs the plain JSON, or nothing at all for a write.
    """
    return json.loads(response.data) if response.data else None


def drained(response: Any) -> None:
    """Read and drop the body of a write made with ``_preload_content=False``: only a body read
    to its end hands the connection back to the pool."""
    response.read()


async def write(function: Callable[[], Any], *, what: str) -> None:
    """:func:`call` for a write whose answer nobody reads: ``function`` makes the request with
    ``_preload_content=False``; the body is read and dropped, never deserialized."""
    await call(lambda: drained(function()), what=what)


def _describe(error: ApiException) -> str:
    # The API's own message, without the request id and headers that change on every call.
    reason = error.reason or "error"
    return f"Kubernetes API answered {error.status} {reason}"


async def call(
    function: Callable[[], T],
    *,
    what: str,
    delays: tuple[float, ...] = RETRY_DELAYS,
    executor: concurrent.futures.Executor | None = None,
) -> T:
    """Run one blocking API call in a thread (of ``executor``, else the loop's default pool);
    retry transient failures, then map the error."""
    for delay in (*delays, None):
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, function)
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
