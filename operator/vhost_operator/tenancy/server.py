"""The gate's HTTP API (aiohttp): the boundary where requests become ``LoginRequest``s.

Routes::

    POST /v1/login-check      JSON in, JSON out: {allowed, reason, message}; 200 allowed or not
    GET  /v1/auth             for nginx auth_request: headers in; 200 / 401 / 403 out
    GET  /v1/theme            the merged theme of the host named by X-Original-Host or Host
    GET  /v1/themes/{host}    the merged theme of that host
    GET  /healthz             the process works (its watch is alive)
    GET  /readyz              the VirtualHosts have been listed once
    GET  /metrics             Prometheus: answers by endpoint, verdict and reason; latency

Status codes: 400 for input we cannot read (with a message saying what), 503 until the first
list of VirtualHosts has loaded (until then every "unknown host" would be a lie). No Kubernetes
here: each answer is computed from the directory in memory and the pure ``gate``/``themes``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import pydantic
from aiohttp import web
from multidict import CIMultiDictProxy

from vhost_operator.resources.models import Theme
from vhost_operator.tenancy import themes
from vhost_operator.tenancy.directory import HostDirectory
from vhost_operator.tenancy.gate import Decision, LoginRequest, evaluate
from vhost_operator.tenancy.metrics import GateMetrics
from vhost_operator.tenancy.names import loggable, normalise_hostname

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
"""Largest JSON body accepted (413 above): room for thousands of administered domains."""

REASON_HEADER = "X-Tenancy-Reason"
"""Response header of ``/v1/auth`` carrying the reason code (nginx can log or forward it)."""

# Reason codes of the HTTP layer, beside the decision reasons of ``gate.Reason``.
NO_IDENTITY = "no-identity"
INVALID_REQUEST = "invalid-request"
NOT_READY = "not-ready"

# The endpoints' names in the metrics.
LOGIN_CHECK = "login-check"
AUTH = "auth"

_BOOLEAN_HEADER = {"true": True, "false": False}


class BadRequest(ValueError):
    """The request cannot be read; the message says why (answered with 400)."""


def describe(error: pydantic.ValidationError) -> str:
    """Pydantic's errors as one line per field, without inputs (they may be large or private)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _single_header(headers: CIMultiDictProxy[str], name: str) -> str:
    """The one value of a header, "" if absent. Repeated identity headers are refused: two
    values usually mean a client header got past the proxy that should have replaced it."""
    values = headers.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"header {name} is given {len(values)} times")
    return values[0].strip() if values else ""


def login_from_headers(headers: CIMultiDictProxy[str]) -> LoginRequest | None:
    """The login an ``auth_request`` subrequest describes, or ``None`` if it names no user."""
    hostname = _single_header(headers, "X-Original-Host") or _single_header(headers, "Host")
    if not hostname:
        raise BadRequest("neither X-Original-Host nor Host names the hostname")
    email = _single_header(headers, "X-User-Email")
    if not email:
        return None
    domains = _single_header(headers, "X-User-Domains")
    superuser = _single_header(headers, "X-User-Superuser").lower() or "false"
    if superuser not in _BOOLEAN_HEADER:
        raise BadRequest("header X-User-Superuser must be true or false")
    try:
        return LoginRequest(
            hostname=hostname,
            email=email,
            administered_domains=[d.strip() for d in domains.split(",") if d.strip()],
            superuser=_BOOLEAN_HEADER[superuser],
        )
    except pydantic.ValidationError as error:
        raise BadRequest(describe(error)) from None


def _answer(status: int, reason: str, message: str, *, allowed: bool = False) -> web.Response:
    body = {"allowed": allowed, "reason": reason, "message": message}
    return web.json_response(body, status=status)


class _Answered(NamedTuple):
    """A login check's response, with what the metrics count of it."""

    response: web.Response
    allowed: bool
    reason: str


def _refused(status: int, reason: str, message: str) -> _Answered:
    """A login check answered without a decision (not ready, unreadable input)."""
    return _Answered(_answer(status, reason, message), False, reason)


class GateApi:
    """The request handlers, over one directory and the gate's fixed settings."""

    def __init__(
        self,
        directory: HostDirectory,
        primary_hostnames: tuple[str, ...],
        global_theme: Theme,
        alive: Callable[[], bool],
    ) -> None:
        self.directory = directory
        self.primary_hostnames = primary_hostnames
        self.global_theme = global_theme
        self.alive = alive
        self.metrics = GateMetrics(directory)

    def decide(self, login: LoginRequest) -> Decision:
        decision = evaluate(login, self.directory.lookup(login.hostname), self.primary_hostnames)
        # Denials are what an operator looks for ("why can't X sign in?"); allows are routine.
        level = logging.DEBUG if decision.allowed else logging.INFO
        # The hostname is normalised ASCII; the email's local part is whatever was sent.
        email = loggable(login.email)
        logger.log(level, "login %s via %s: %s", email, login.hostname, decision.reason)
        return decision

    # -- login ------------------------------------------------------------------------------

    async def login_check(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        return self._count(LOGIN_CHECK, started, await self._login_check(request))

    async def auth(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        return self._count(AUTH, started, self._auth(request))

    def _count(self, endpoint: str, started: float, answered: _Answered) -> web.Response:
        seconds = time.perf_counter() - started
        self.metrics.answered(
            endpoint, allowed=answered.allowed, reason=answered.reason, seconds=seconds
        )
        return answered.response

    async def _login_check(self, request: web.Request) -> _Answered:
        if not self.directory.synced:
            return _refused(503, NOT_READY, "the gate has not loaded the virtual hosts yet")
        try:
            payload = await request.json()
        except ValueError:  # not JSON, or not UTF-8
            return _refused(400, INVALID_REQUEST, "the body is not a JSON document")
        try:
            login = LoginRequest.model_validate(payload)
        except pydantic.ValidationError as error:
            return _refused(400, INVALID_REQUEST, describe(error))
        decision = self.decide(login)
        response = web.json_response(decision.model_dump(mode="json"))
        return _Answered(response, decision.allowed, decision.reason)

    def _auth(self, request: web.Request) -> _Answered:
        if not self.directory.synced:
            return self._auth_refused(503, NOT_READY)
        try:
            login = login_from_headers(request.headers)
        except BadRequest as error:
            return self._auth_refused(400, INVALID_REQUEST, str(error))
        if login is None:
            return self._auth_refused(401, NO_IDENTITY, "no X-User-Email: nobody is signed in")
        decision = self.decide(login)
        response = self._auth_answer(200 if decision.allowed else 403, decision.reason)
        return _Answered(response, decision.allowed, decision.reason)

    @classmethod
    def _auth_refused(cls, status: int, reason: str, message: str = "") -> _Answered:
        return _Answered(cls._auth_answer(status, reason, message), False, reason)

    @staticmethod
    def _auth_answer(status: int, reason: str, message: str = "") -> web.Response:
        # nginx discards the body of an auth subrequest; the header is what it can use.
        return web.Response(status=status, text=message, headers={REASON_HEADER: reason})

    # -- themes -----------------------------------------------------------------------------

    async def theme_of_request(self, request: web.Request) -> web.Response:
        host = request.headers.get("X-Original-Host") or request.headers.get("Host") or ""
        return self._theme(request, host)

    async def theme_of_host(self, request: web.Request) -> web.Response:
        return self._theme(request, request.match_info["hostname"])

    def _theme(self, request: web.Request, host: str) -> web.Response:
        if not self.directory.synced:
            return _answer(503, NOT_READY, "the gate has not loaded the virtual hosts yet")
        try:
            hostname = normalise_hostname(host)
        except ValueError as error:
            return _answer(400, INVALID_REQUEST, str(error))
        entry = self.directory.lookup(hostname)
        merged = themes.merge(entry.theme if entry else None, self.global_theme)
        # An unknown host (the primary hostname, say) still gets the global theme to render with.
        body = {"hostname": hostname, "known": entry is not None, **themes.to_wire(merged)}
        return self._cacheable_json(request, body)

    @staticmethod
    def _cacheable_json(request: web.Request, body: dict[str, Any]) -> web.Response:
        # no-cache + ETag: clients revalidate every time (a theme edit shows at once) and get a
        # body-less 304 while it is unchanged.
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(text=text, content_type="application/json", headers=headers)

    # -- probes -----------------------------------------------------------------------------

    async def healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok") if self.alive() else web.Response(status=500, text="dead")

    async def readyz(self, _: web.Request) -> web.Response:
        if self.directory.synced:
            return web.Response(text=f"ok: {len(self.directory)} virtual hosts")
        return web.Response(status=503, text="virtual hosts not loaded yet")

    async def metrics_text(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(), content_type="text/plain", charset="utf-8"
        )


async def _no_sniff(_: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Content-Type-Options"] = "nosniff"


def create_app(api: GateApi) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.add_routes(
        [
            web.post("/v1/login-check", api.login_check),
            web.get("/v1/auth", api.auth),
            web.get("/v1/theme", api.theme_of_request),
            web.get("/v1/themes/{hostname}", api.theme_of_host),
            web.get("/healthz", api.healthz),
            web.get("/readyz", api.readyz),
            web.get("/metrics", api.metrics_text),
        ]
    )
    app.on_response_prepare.append(_no_sniff)
    return app
