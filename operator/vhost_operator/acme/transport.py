"""How one request reaches the CA, and how its failure comes back.

:class:`Network` is the acme library's transport, sending a request again while the CA rejects
its nonce and keeping the ``Retry-After`` of a ``429``/``503`` answer, over the client's
:class:`~vhost_operator.acme.connections.SharedConnections` (which trust the client's CA
bundle and outlive its issuances). :func:`blocking` runs one blocking ``acme`` call in a worker
thread and maps its failure onto the error tree (``errors``); a ``Retry-After`` the CA sent
starts a :class:`Pause` of every new issuance of the account.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import requests
from acme import messages
from acme.client import ClientNetwork
from requests.structures import CaseInsensitiveDict
from requests.utils import default_headers

from vhost_operator.acme.config import AcmeConfig
from vhost_operator.acme.connections import SharedConnections
from vhost_operator.acme.errors import (
    LIBRARY_ERRORS,
    AcmeError,
    AcmeRetryLater,
    retry_later,
    translate,
)

logger = logging.getLogger(__name__)
acme_logger = logging.getLogger("acme.client")
"""The acme library's logger: the request and response lines it would log, it still logs."""

T = TypeVar("T")

BAD_NONCE_ATTEMPTS = 10
"""Times one request is sent while the CA rejects its replay nonce (``badNonce``). A rejected
nonce means the CA did not process the request, so sending it again is always safe; CAs may
reject good nonces at random (pebble rejects 5 % by default, up to any share it is told), and
the acme library tries only twice: at 30 % that fails 9 % of all requests. Ten tries leave
0.3 ** 10, about six in a million."""


NONCE_FETCHES = 5
"""Times one request fetches a nonce when other threads keep taking the shared pool's."""


def environment_ca_bundle() -> str | None:
    """The CA bundle requests itself would take from the environment, if any."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


async def blocking(
    config: AcmeConfig,
    pause: Pause,
    step: str,
    hostname: str,
    net: Network,
    function: Callable[..., T],
    *args: Any,
) -> T:
    """Run one blocking ``acme`` call in a thread and map its failure onto our error tree; a
    ``Retry-After`` the CA sent with it pauses every new issuance of the account."""
    try:
        return await asyncio.to_thread(function, *args)
    except AcmeError:
        raise
    except LIBRARY_ERRORS as error:
        doing = f"{step} for {hostname}" if hostname else step
        until = net.retry_after
        if until is None or isinstance(error, requests.RequestException):
            raise translate(error, config.ca_origin, doing, hostname) from error
        wait = retry_later(error, config.ca_origin, doing, hostname, until)
        pause.note(wait)
        raise wait from error


def parse_retry_after(value: str | None, now: datetime) -> datetime | None:
    """The time a ``Retry-After`` header names (seconds, or an HTTP-date), as aware UTC.

    ``None`` for a missing or unreadable header. A time in the past means "now". The result
    is rounded up to a whole second: status shows seconds, and waking a moment late is
    harmless while a moment early would call the CA before the time it gave.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        until = now + timedelta(seconds=int(value))
    else:
        try:
            until = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if until.tzinfo is None:  # "-0000": UTC by RFC 5322
            until = until.replace(tzinfo=UTC)
    until = max(until.astimezone(UTC), now)
    whole = until.replace(microsecond=0)
    return whole if whole == until else whole + timedelta(seconds=1)


class Pause:
    """The end of the latest pause the CA asked for: no new issuance starts before it.

    Let's Encrypt's limits on new orders are per account and its overload answers per client
    address, so a ``Retry-After`` given to one host's request holds for every host's.
    """

    def __init__(self) -> None:
        self._until: datetime | None = None
        self._reason = ""

    def note(self, wait: AcmeRetryLater) -> None:
        if self._until is None or wait.until > self._until:
            self._until, self._reason = wait.until, wait.reason

    def check(self, origin: str) -> None:
        """Raise :class:`AcmeRetryLater` while the pause lasts."""
        if self._until is not None and datetime.now(UTC) < self._until:
            raise AcmeRetryLater(
                f"the CA at {origin} asked to wait: {self._reason}",
                until=self._until,
                reason=self._reason,
            )


class Network(ClientNetwork):
    """The acme library's transport, sending a request again while the CA rejects its nonce
    (:data:`BAD_NONCE_ATTEMPTS`), and keeping the ``Retry-After`` of a ``429``/``503`` answer
    (the library's errors do not carry the response).

    Requests go over ``connections`` (:meth:`SharedConnections.request`) instead of the
    ``requests.Session`` the library makes for each instance: with the same headers, body and
    timeout, the session's machinery cost more CPU per request than sending it.

    ``nonces``: a pool of replay nonces to share with the client's other sessions (its other
    threads). Each session used to start with an empty pool, so each issuance began with a
    ``HEAD`` for a nonce: one of its 9 requests. A CA's nonce is good for any request of any
    account until used, or until the CA forgets it (a restart, or age), which it answers with
    ``badNonce``: then every pooled nonce is suspect, and the pool is emptied.
    """

    def __init__(
        self,
        *args: Any,
        connections: SharedConnections,
        nonces: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._connections = connections
        if nonces is not None:
            self._nonces = nonces
        self.retry_after: datetime | None = None
        """When the last answer was a 429 or 503 with a readable ``Retry-After``: its time."""
        # What requests.Session adds to every request's headers, in its order (the request's
        # own come after, or replace one in place); the library's User-Agent replaces its.
        self._headers = default_headers()
        self._headers["User-Agent"] = self.user_agent

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        # The library's own method, sending over the shared connections instead of its
        # session. It passes data (the JWS, for a POST), headers and nothing else.
        if args or not set(kwargs) <= {"data", "headers", "timeout"}:
            raise TypeError(f"unexpected arguments for an ACME request: {args} {kwargs}")
        data: str | None = kwargs.get("data")
        asked: dict[str, str] = kwargs.get("headers") or {}
        headers = CaseInsensitiveDict(self._headers)
        headers.update(asked)
        body = None if data is None else data.encode()
        if body:  # as requests.PreparedRequest.prepare_content_length
            headers["Content-Length"] = str(len(body))
        elif method not in ("GET", "HEAD"):
            headers["Content-Length"] = "0"
        if method == "POST":
            acme_logger.debug("Sending POST request to %s:\n%s", url, data)
        else:
            acme_logger.debug("Sending %s request to %s.", method, url)
        response = self._connections.request(
            method,
            url,
            body=body,
            headers=headers,
            timeout=kwargs.get("timeout", self._default_timeout),
            verify=self.verify_ssl,
        )
        self._note_retry_after(response)
        # As the library: an answer to a request without Accept is UTF-8 (JSON, a PEM chain),
        # not whatever requests would guess.
        if "Accept" not in asked:
            response.encoding = "utf-8"
        if acme_logger.isEnabledFor(logging.DEBUG):  # the library formats this every time
            acme_logger.debug(
                "Received response:\nHTTP %d\n%s\n\n%s",
                response.status_code,
                "\n".join(f"{k}: {v}" for k, v in response.headers.items()),
                response.text if "Accept" not in asked else base64.b64encode(response.content),
            )
        return response

    def _note_retry_after(self, response: requests.Response) -> None:
        self.retry_after = None
        if response.status_code in (429, 503):
            header = response.headers.get("Retry-After")
            self.retry_after = parse_retry_after(header, datetime.now(UTC))

    def _get_nonce(self, url: str, new_nonce_url: str) -> str:
        # The library checks the pool, fetches one if it is empty and takes one: with a shared
        # pool another thread may take it in between (KeyError); fetch again then.
        for _ in range(NONCE_FETCHES - 1):
            with contextlib.suppress(KeyError):
                return super()._get_nonce(url, new_nonce_url)
        return super()._get_nonce(url, new_nonce_url)

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for attempt in range(1, BAD_NONCE_ATTEMPTS + 1):
            try:
                response: requests.Response = self._post_once(*args, **kwargs)
                return response
            except messages.Error as error:
                if error.code != "badNonce" or attempt == BAD_NONCE_ATTEMPTS:
                    raise
                self._nonces.clear()
                logger.debug("the CA rejected a nonce (attempt %d), sending again", attempt)
        raise AssertionError("unreachable")
