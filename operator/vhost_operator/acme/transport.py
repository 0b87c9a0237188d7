"""How one request reaches the CA, and how its failure comes back.

:class:`Network` is the acme library's transport, sending a request again while the CA rejects
its nonce and keeping the ``Retry-After`` of a ``429``/``503`` answer; :class:`TrustingAdapter`
trusts a CA bundle per client, and :class:`SharedConnections` keeps a client's connections to the
CA across its issuances. :func:`blocking` runs one blocking ``acme`` call in a worker
thread and maps its failure onto the error tree (``errors``); a ``Retry-After`` the CA sent
starts a :class:`Pause` of every new issuance of the account.
"""

from __future__ import annotations

import asyncio
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
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from vhost_operator.acme.config import AcmeConfig
from vhost_operator.acme.errors import (
    LIBRARY_ERRORS,
    AcmeError,
    AcmeRetryLater,
    retry_later,
    translate,
)

logger = logging.getLogger(__name__)

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


class TrustingAdapter(HTTPAdapter):
    """Verifies the CA's HTTPS certificate against a given bundle instead of the system store
    (``None``: as ``requests`` verifies).

    ``acme`` passes ``verify=True`` with every request, which overrides a session-level bundle;
    substituting it at the transport keeps the trust decision per client instead of global
    (``REQUESTS_CA_BUNDLE`` would change it for the whole process).
    """

    def __init__(self, ca_bundle_path: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ca_bundle_path = ca_bundle_path
        self._bundle_is_directory: dict[str, bool] = {}

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        # requests turns verify=True into REQUESTS_CA_BUNDLE when that is set, so anything but
        # an explicit "do not verify" means: verify against the configured bundle.
        if self._ca_bundle_path is not None and verify is not False:
            verify = self._ca_bundle_path
        return super().send(request, stream, timeout, verify, cert, proxies)

    # requests looks at the bundle's path for every request (whether it exists, twice whether
    # it is a directory): three or four filesystem calls per ACME request, about 2 % of the
    # operator's CPU in a profile of a 300-host round. The two methods below give requests'
    # own answers, looking once per path (a missing bundle is looked for again).

    def _bundle(self, verify: bool | str) -> tuple[str, bool]:
        """The bundle ``verify`` names (requests' default for ``True``), and whether it is a
        directory; ``OSError`` as requests raises it if there is none."""
        location = verify if isinstance(verify, str) else DEFAULT_CA_BUNDLE_PATH
        directory = self._bundle_is_directory.get(location)
        if directory is None:
            if not os.path.exists(location):
                raise OSError(
                    f"Could not find a suitable TLS CA certificate bundle, invalid path: {location}"
                )
            directory = self._bundle_is_directory[location] = os.path.isdir(location)
        return location, directory

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if not isinstance(verify, str):  # requests looks at nothing then
            return super().build_connection_pool_key_attributes(request, verify, cert)
        host, pool = super().build_connection_pool_key_attributes(request, True, cert)
        location, directory = self._bundle(verify)
        pool["ca_cert_dir" if directory else "ca_certs"] = location
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: Any) -> None:
        if cert or not verify or not url.lower().startswith("https"):
            super().cert_verify(conn, url, verify, cert)
            return
        location, directory = self._bundle(verify)
        conn.cert_reqs = "CERT_REQUIRED"
        if directory:
            conn.ca_cert_dir = location
        else:
            conn.ca_certs = location


class SharedConnections(TrustingAdapter):
    """Connections to the CA kept open for every issuance of one client, up to ``connections``
    (one per thread that may call the CA at the same time), verified as
    :class:`TrustingAdapter` verifies.

    Each issuance has its own session (its own nonces), and a session used to bring its own
    connection: a TCP and TLS handshake per issuance and per renewal-information fetch, with a
    TLS context built and the CA bundle loaded for each. Issuing against pebble, 16 at a time,
    that was 2.8 of the client's 15.8 ms of CPU per certificate (and the CA's side of every
    handshake). Mounted in each session, this outlives them: a session's ``close`` (every
    issuance closes its own, and the acme library again when the session is collected)
    leaves the connections open; :meth:`close_all` closes them.
    """

    def __init__(self, ca_bundle_path: str | None, *, connections: int) -> None:
        super().__init__(ca_bundle_path, pool_maxsize=connections)

    def close(self) -> None:
        """Nothing: called by every session that closes, while the others go on."""

    def close_all(self) -> None:
        """Close every pooled connection (a later request opens a new one)."""
        super().close()


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

    ``nonces``: a pool of replay nonces to share with the client's other sessions (its other
    threads). Each session used to start with an empty pool, so each issuance began with a
    ``HEAD`` for a nonce: one of its 9 requests. A CA's nonce is good for any request of any
    account until used, or until the CA forgets it (a restart, or age), which it answers with
    ``badNonce``: then every pooled nonce is suspect, and the pool is emptied.
    """

    def __init__(self, *args: Any, nonces: set[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if nonces is not None:
            self._nonces = nonces
        self.retry_after: datetime | None = None
        """When the last answer was a 429 or 503 with a readable ``Retry-After``: its time."""
        self.session.hooks["response"].append(self._note_retry_after)

    def _note_retry_after(self, response: requests.Response, *_: Any, **__: Any) -> None:
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
