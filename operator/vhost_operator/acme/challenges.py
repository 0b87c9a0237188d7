"""HTTP-01 challenge serving and the self-check that runs before the CA is asked to validate.

nginx forwards ``/.well-known/acme-challenge/`` of every host to :class:`ChallengeResponder`,
which answers from a :class:`ChallengeStore`: the challenges the ACME client of this process
published while an order is open, and those another replica shared (fed by a watch); a token
found in neither may be read through (the watch may trail the leader's write by a moment).
:func:`self_check` fetches that URL the way the CA will, so a host whose DNS or port 80 is wrong
fails fast with a useful message instead of burning the CA's failed-validation rate limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
from aiohttp import web

from vhost_operator.acme.errors import AcmeError

logger = logging.getLogger(__name__)

CHALLENGE_PATH = "/.well-known/acme-challenge/"

# ACME tokens are base64url without padding (RFC 8555 section 8.3); anything else is not ours.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

# A key authorization is a token and a thumbprint: a few hundred bytes at most. Reading more
# from a misrouted server (a full web page) would only waste memory.
_MAX_BODY = 4096


class ChallengeStore:
    """Key authorizations being served, by token.

    Its ``publish``/``unpublish`` methods have the shape ``AcmeClient.issue`` expects, so the store
    itself can be passed as the hooks. A lock makes it safe to touch from worker threads too.
    """

    def __init__(self) -> None:
        self._answers: dict[str, str] = {}
        self._shared: dict[str, tuple[str, str]] = {}
        """``owner → (token, key authorization)``: every replica's challenges, from a watch."""
        self._shared_answers: dict[str, str] = {}
        self._lock = threading.Lock()

    async def publish(self, token: str, key_authorization: str) -> None:
        """Start answering ``token`` with ``key_authorization``."""
        with self._lock:
            self._answers[token] = key_authorization

    async def unpublish(self, token: str, key_authorization: str) -> None:
        """Stop answering ``token``; a no-op when another order replaced or removed it."""
        with self._lock:
            if self._answers.get(token) == key_authorization:
                del self._answers[token]

    def get(self, token: str) -> str | None:
        """The key authorization for ``token``, or ``None`` when none is published."""
        with self._lock:
            return self._answers.get(token) or self._shared_answers.get(token)

    def share(self, owner: str, challenge: tuple[str, str] | None) -> None:
        """``owner``'s challenge as published for every replica (``None``: it has none now)."""
        with self._lock:
            if challenge is None:
                self._shared.pop(owner, None)
            else:
                self._shared[owner] = challenge
            self._shared_answers = dict(self._shared.values())

    def share_all(self, challenges: Mapping[str, tuple[str, str]]) -> None:
        """Every owner's challenge at once (a watch's full list)."""
        with self._lock:
            self._shared = dict(challenges)
            self._shared_answers = dict(self._shared.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._answers)


Refresh = Callable[[str], Awaitable[None]]
"""``(hostname)``: read that host's published challenge at its source into the store."""

REFRESH_INTERVAL = 1.0
"""Seconds between two reads at the source for one hostname: requests for unknown tokens (a
scanner, a CA's retries) cost at most one API read per hostname and second."""


class ChallengeResponder:
    """A small aiohttp server answering ``GET /.well-known/acme-challenge/{token}``.

    ``refresh`` is asked, with the request's host, for a token the store does not hold: the
    watch that feeds the store may trail the leader's write by a moment, and the CA (or the
    self-check) may ask this replica first."""

    def __init__(self, store: ChallengeStore, refresh: Refresh | None = None) -> None:
        self._store = store
        self._refresh = refresh
        self._refreshes: dict[str, tuple[float, asyncio.Future[None]]] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful after ``start(port=0)``)."""
        if self._port is None:
            raise RuntimeError("the challenge responder is not running")
        return self._port

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``; port 0 picks a free one, see :attr:`port`."""
        if self._runner is not None:
            raise RuntimeError("the challenge responder is already running")
        app = web.Application()
        app.router.add_get(CHALLENGE_PATH + "{token}", self._answer)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = _bound_port(runner)

    async def stop(self) -> None:
        """Stop listening; safe to call when not running."""
        runner, self._runner, self._port = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if not _TOKEN.match(token):
            return _no_such_challenge()
        answer = self._store.get(token)
        if answer is None and self._refresh is not None:
            await self._refreshed(request.host.rsplit(":", 1)[0].lower())
            answer = self._store.get(token)
        if answer is None:
            return _no_such_challenge()
        return web.Response(text=answer, content_type="text/plain")

    async def _refreshed(self, hostname: str) -> None:
        """Refresh ``hostname`` at most once per :data:`REFRESH_INTERVAL`; requests meanwhile
        wait for the same read."""
        assert self._refresh is not None
        now = asyncio.get_running_loop().time()
        for name, (started, _) in list(self._refreshes.items()):
            if now - started >= REFRESH_INTERVAL:
                del self._refreshes[name]
        if hostname not in self._refreshes:
            read = asyncio.ensure_future(self._refresh(hostname))
            self._refreshes[hostname] = (now, read)
        try:
            await asyncio.shield(self._refreshes[hostname][1])
        except Exception:  # the CA gets a 404 and may ask again; the log says why
            logger.exception("could not read the challenge of %s", hostname)


def _no_such_challenge() -> web.Response:
    return web.Response(status=404, text="no such challenge\n", content_type="text/plain")


def _bound_port(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])


class SelfCheckReason(enum.Enum):
    """Why a self-check failed: picks the advice in the message, and lets callers branch."""

    DNS = "dns"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    WRONG_STATUS = "wrong-status"
    WRONG_ANSWER = "wrong-answer"


class SelfCheckFailed(AcmeError):
    """Our own challenge URL did not answer as the CA would need; the CA was not asked.

    The message names the host and the likely cause but never the token or the address
    connected to, so identical failures produce identical text for ``status.error``.
    """

    def __init__(self, message: str, *, reason: SelfCheckReason) -> None:
        super().__init__(message)
        self.reason = reason


async def self_check(
    url_base: str | None,
    hostname: str,
    token: str,
    expected: str,
    timeout: float = 10.0,
    *,
    session: aiohttp.ClientSession | None = None,
) -> None:
    """Fetch ``http://<hostname>/.well-known/acme-challenge/<token>`` and expect ``expected``.

    ``url_base`` is where to connect (``http://127.0.0.1:8080`` behind a hairpin, or in tests);
    ``None`` means ``http://<hostname>``, as the CA will do. The ``Host`` header is always
    ``hostname``. Redirects are not followed: our nginx serves the challenge path directly, so a
    redirect means the request reached some other configuration. ``session``: the connections
    to use (:class:`SelfChecker`'s); ``None``: a connection of its own, closed afterwards.
    Raises :class:`SelfCheckFailed`.
    """
    url = (url_base or f"http://{hostname}").rstrip("/") + CHALLENGE_PATH + token
    status, body = await _fetch(url, hostname, timeout, session)
    if status != 200:
        raise _wrong_status(hostname, status)
    if body.rstrip() != expected:  # RFC 8555 8.3: trailing whitespace is ignored
        raise SelfCheckFailed(
            f"self-check of http://{hostname}{CHALLENGE_PATH}: the answer is not this order's "
            "challenge; DNS probably points at another server, or another ACME client answers "
            "for this name",
            reason=SelfCheckReason.WRONG_ANSWER,
        )


class SelfChecker:
    """:func:`self_check` in the shape ``AcmeClient.issue`` takes, for the operator's life:
    with an address to connect to (``url_base``: a hairpin, a load balancer), its checks go over
    connections kept open between them instead of a new session and connection each.

    A new session and TCP connection per check cost the operator about 0.45 ms of CPU more per
    check than a request over an open connection (measured against a local server), and nginx
    an accepted connection each; a host's self-check is one per name and order. The request is
    the same (``Host``, path, no redirects, the timeout per check); nginx picks the server by
    each request's ``Host``, and a connection that nginx closed meanwhile (a reload, its idle
    timeout) is retried once on a new one (aiohttp does so for a ``GET``). Without an address
    each check connects to the hostname's own address anew, resolved as the CA will, so a DNS
    record fixed a moment ago counts at once. Bound to the event loop that first used it;
    :meth:`close` it there. ``keep_connections=False``: a connection per check, closed after it
    (for a checker nobody closes).
    """

    def __init__(
        self, url_base: str | None = None, timeout: float = 10.0, *, keep_connections: bool = True
    ) -> None:
        self._url_base = url_base
        self._timeout = timeout
        self._keep_connections = keep_connections and url_base is not None
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, name: str, token: str, key_authorization: str) -> None:
        session = self._connections() if self._keep_connections else None
        await self_check(
            self._url_base, name, token, key_authorization, self._timeout, session=session
        )

    def _connections(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No DNS cache: the address is configured, and a changed record must count at once.
            connector = aiohttp.TCPConnector(use_dns_cache=False)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        """Close the open connections; a later check opens new ones."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _fetch(
    url: str, hostname: str, timeout: float, shared: aiohttp.ClientSession | None = None
) -> tuple[int, str]:
    """GET ``url`` with ``Host: hostname`` over ``shared`` (else a session of its own);
    connection problems become :class:`SelfCheckFailed`."""
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with contextlib.AsyncExitStack() as stack:
            session = shared
            if session is None:
                session = await stack.enter_async_context(aiohttp.ClientSession())
            response = await stack.enter_async_context(
                session.get(
                    url,
                    headers={"Host": hostname},
                    allow_redirects=False,
                    timeout=client_timeout,
                )
            )
            body = await response.content.read(_MAX_BODY)
            return response.status, body.decode("utf-8", errors="replace")
    except aiohttp.ClientConnectorDNSError as error:
        raise _failure(hostname, SelfCheckReason.DNS) from error
    except (TimeoutError, aiohttp.ServerTimeoutError) as error:
        raise _failure(hostname, SelfCheckReason.TIMEOUT) from error
    except aiohttp.ClientError as error:
        raise _failure(hostname, SelfCheckReason.UNREACHABLE) from error


_ADVICE = {
    SelfCheckReason.DNS: "the name does not resolve; create its DNS record pointing at this "
    "cluster's public address",
    SelfCheckReason.TIMEOUT: "no answer in time; port 80 is probably blocked by a firewall or "
    "load balancer, or DNS points at an address that drops traffic",
    SelfCheckReason.UNREACHABLE: "could not connect; port 80 is closed or blocked, or DNS does "
    "not point at this cluster",
}


def _failure(hostname: str, reason: SelfCheckReason) -> SelfCheckFailed:
    return SelfCheckFailed(
        f"self-check of http://{hostname}{CHALLENGE_PATH}: {_ADVICE[reason]}", reason=reason
    )


def _wrong_status(hostname: str, status: int) -> SelfCheckFailed:
    if 300 <= status < 400:
        cause = "nginx must serve the challenge path on port 80 without redirecting"
    else:
        cause = "DNS probably points at another server, or nginx does not route the path here"
    return SelfCheckFailed(
        f"self-check of http://{hostname}{CHALLENGE_PATH}: answered HTTP {status} instead of "
        f"the challenge; {cause}",
        reason=SelfCheckReason.WRONG_STATUS,
    )


__all__ = [
    "CHALLENGE_PATH",
    "ChallengeResponder",
    "ChallengeStore",
    "SelfCheckFailed",
    "SelfCheckReason",
    "SelfChecker",
    "self_check",
]
