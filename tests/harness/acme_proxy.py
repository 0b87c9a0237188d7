"""A fault-injecting HTTPS proxy in front of pebble's ACME API.

The operator talks to the proxy as if it were the CA. The proxy terminates TLS with a
certificate of its own throwaway CA (:attr:`AcmeFaultProxy.ca_bundle_path` holds that CA and
pebble's, for the operator's ``ACME_CA_BUNDLE``) and forwards every request to pebble with the
``Host`` header the client sent: pebble builds every URL it hands out (directory, orders,
authorizations, certificates) from that header and checks the JWS ``url`` against it, so the
client keeps talking to the proxy. Any address of pebble's own that still shows up in an answer
is rewritten to the proxy's all the same.

What it can do, for chosen requests (by kind, and optionally by hostname):

- answer instead of pebble: ``429 urn:ietf:params:acme:error:rateLimited`` or ``503`` with a
  ``Retry-After`` in seconds or as an HTTP-date (:class:`Fault`);
- run a callback before the request is forwarded, or after pebble answered it and before the
  answer is relayed (:class:`Trigger`), e.g. to SIGKILL the operator inside the certificate step.

It records every request with its arrival time, its kind and the hostname it concerns (learnt
from the orders and authorizations pebble hands out), and counts per hostname the orders pebble
created, the certificates it issued (successful finalizations) and the certificate downloads.

Usage::

    with Pebble(...) as pebble, AcmeFaultProxy(pebble, workdir) as proxy:
        proxy.add_fault(Fault("new-order", status=429, retry_after=5))
        settings = {"ACME_DIRECTORY_URL": proxy.directory_url,
                    "ACME_CA_BUNDLE": str(proxy.ca_bundle_path)}
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import dataclasses
import email.utils
import json
import math
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import ClientSession, TCPConnector, web

from tests.harness.pebble import LOCALHOST, Pebble
from tests.harness.pki import CertificateAuthority
from tests.harness.processes import free_port

RATE_LIMITED = "urn:ietf:params:acme:error:rateLimited"
SERVER_INTERNAL = "urn:ietf:params:acme:error:serverInternal"

# Pebble's endpoint paths (pebble 2.x wfe), by the first segment, and what they are for.
_KINDS = {
    "dir": "directory",
    "nonce-plz": "new-nonce",
    "sign-me-up": "new-account",
    "my-account": "account",
    "order-plz": "new-order",
    "my-order": "order",
    "authZ": "authz",
    "chalZ": "challenge",
    "finalize-order": "finalize",
    "certZ": "certificate",
    "draft-ietf-acme-ari-03": "renewal-info",
}

Kind = str
"""One of the values of ``_KINDS``, or ``other``."""

_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "content-encoding", "host"}


@dataclasses.dataclass(frozen=True)
class Recorded:
    """One request the proxy received, and what it answered."""

    at: float
    """Arrival, ``time.time()``."""
    method: str
    path: str
    kind: Kind
    hostname: str | None
    status: int
    """What the client got (0 if the connection was dropped before the answer)."""
    injected: bool = False
    until: float | None = None
    """For an injected answer: the time its ``Retry-After`` names, ``time.time()`` scale."""


@dataclasses.dataclass
class Fault:
    """Answer ``times`` requests of ``kind`` (for ``hostname``, if given) with ``status`` and a
    ``Retry-After`` of ``retry_after`` seconds (an HTTP-date if ``http_date``)."""

    kind: Kind
    status: Literal[429, 503]
    retry_after: float
    http_date: bool = False
    times: int = 1
    hostname: str | None = None


@dataclasses.dataclass
class Trigger:
    """Run ``action`` at the ``times`` next requests of ``kind`` (for ``hostname``, if given):
    ``before`` forwarding it, or ``after`` pebble answered and before the answer is relayed.
    The request waits for ``action``; ``drop`` then closes the connection without an answer."""

    kind: Kind
    when: Literal["before", "after"]
    action: Callable[[], None]
    hostname: str | None = None
    times: int = 1
    drop: bool = True


class AcmeFaultProxy:
    """See the module docstring. Runs its own event loop in a thread for a ``with`` block."""

    def __init__(self, pebble: Pebble, workdir: Path) -> None:
        self._pebble = pebble
        self._upstream = f"https://{LOCALHOST}:{pebble.acme_port}"
        self.port = free_port()
        self.origin = f"https://{LOCALHOST}:{self.port}"
        self._workdir = workdir
        self._workdir.mkdir(parents=True, exist_ok=True)
        self.ca_bundle_path = workdir / "proxy-ca-bundle.crt"
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._triggers: list[Trigger] = []
        self._records: list[Recorded] = []
        self._hostnames: dict[str, str] = {}
        """Path → the hostname it concerns (orders, authorizations, challenges, ...)."""
        self.orders_created: collections.Counter[str] = collections.Counter()
        self.certificates_issued: collections.Counter[str] = collections.Counter()
        self.downloads: collections.Counter[str] = collections.Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def directory_url(self) -> str:
        return f"{self.origin}/dir"

    # -- configuration and results (any thread) -----------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def add_trigger(self, trigger: Trigger) -> None:
        with self._lock:
            self._triggers.append(trigger)

    def clear(self) -> None:
        """Forget faults and triggers not used up yet (the records and counts stay)."""
        with self._lock:
            self._faults.clear()
            self._triggers.clear()

    def records(self) -> list[Recorded]:
        with self._lock:
            return list(self._records)

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> AcmeFaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        server_tls = self._server_tls()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="acme-proxy", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._serve(server_tls), loop).result(timeout=15)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=15)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=15)
        loop.close()

    def _server_tls(self) -> ssl.SSLContext:
        ca = CertificateAuthority("ACME fault proxy test TLS CA")
        pair = ca.issue("localhost", dns_names=("localhost",), ip_addresses=(LOCALHOST,))
        certificate, key = pair.write(self._workdir, "proxy-tls")
        bundle = self._pebble.ca_bundle_path.read_bytes() + ca.pair.certificate_pem
        self.ca_bundle_path.write_bytes(bundle)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificate, key)
        return context

    async def _serve(self, server_tls: ssl.SSLContext) -> None:
        upstream_tls = ssl.create_default_context(cafile=str(self._pebble.ca_bundle_path))
        self._session = ClientSession(connector=TCPConnector(ssl=upstream_tls))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOCALHOST, self.port, ssl_context=server_tls)
        await site.start()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- the proxy ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()
        body = await request.read()
        kind = _kind_of(request.path)
        hostname = self._hostname_of(request.path, kind, body)
        fault = self._take(self._faults, kind, hostname)
        if fault is not None:
            return self._inject(fault, request, kind, hostname, arrived)
        before = self._take_trigger(kind, hostname, "before")
        if before is not None:
            await asyncio.to_thread(before.action)
            if before.drop:
                return self._drop(request, kind, hostname, arrived)
        status, headers, answer = await self._forward(request, body)
        self._learn(kind, hostname, status, headers, answer)
        after = self._take_trigger(kind, hostname, "after")
        if after is not None:
            await asyncio.to_thread(after.action)
            if after.drop:
                return self._drop(request, kind, hostname, arrived)
        self._record(Recorded(arrived, request.method, request.path, kind, hostname, status))
        return web.Response(status=status, headers=headers, body=answer)

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Host"] = request.host  # pebble's URLs and its JWS url check follow it
        async with self._session.request(
            request.method, self._upstream + request.path_qs, headers=headers, data=body
        ) as response:
            answer = await response.read()
            relayed = {
                k: self._rewrite(v)
                for k, v in response.headers.items()
                if k.lower() not in _HOP_BY_HOP
            }
            return response.status, relayed, self._rewrite(answer)

    def _rewrite(self, value: Any) -> Any:
        upstream, origin = self._upstream, self.origin
        if isinstance(value, bytes):
            return value.replace(upstream.encode(), origin.encode())
        return str(value).replace(upstream, origin)

    def _inject(
        self, fault: Fault, request: web.Request, kind: Kind, hostname: str | None, at: float
    ) -> web.Response:
        if fault.http_date:
            until = float(math.ceil(time.time() + fault.retry_after))
            header = email.utils.formatdate(until, usegmt=True)
        else:
            until = at + fault.retry_after
            header = str(math.ceil(fault.retry_after))
        problem = {
            "type": RATE_LIMITED if fault.status == 429 else SERVER_INTERNAL,
            "detail": "too many new orders recently" if fault.status == 429 else "busy",
            "status": fault.status,
        }
        self._record(
            Recorded(at, request.method, request.path, kind, hostname, fault.status, True, until)
        )
        return web.Response(
            status=fault.status,
            headers={"Retry-After": header, "Content-Type": "application/problem+json"},
            body=json.dumps(problem).encode(),
        )

    def _drop(
        self, request: web.Request, kind: Kind, hostname: str | None, at: float
    ) -> web.StreamResponse:
        self._record(Recorded(at, request.method, request.path, kind, hostname, 0))
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=502)

    def _take(self, faults: list[Fault], kind: Kind, hostname: str | None) -> Fault | None:
        with self._lock:
            for fault in faults:
                if fault.kind == kind and fault.hostname in (None, hostname) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _take_trigger(self, kind: Kind, hostname: str | None, when: str) -> Trigger | None:
        with self._lock:
            for trigger in self._triggers:
                if (
                    trigger.kind == kind
                    and trigger.when == when
                    and trigger.hostname in (None, hostname)
                    and trigger.times > 0
                ):
                    trigger.times -= 1
                    return trigger
        return None

    def _record(self, record: Recorded) -> None:
        with self._lock:
            self._records.append(record)

    # -- which hostname a request concerns -----------------------------------------------------

    def _hostname_of(self, path: str, kind: Kind, body: bytes) -> str | None:
        if kind == "new-order":
            payload = _jws_payload(body)
            identifiers = (payload.get("identifiers") or [{}]) if payload else [{}]
            value = identifiers[0].get("value")
            return value if isinstance(value, str) else None
        with self._lock:
            return self._hostnames.get(path)

    def _learn(
        self,
        kind: Kind,
        hostname: str | None,
        status: int,
        headers: dict[str, str],
        answer: bytes,
    ) -> None:
        """Remember the paths pebble handed out for ``hostname``, and count what it did."""
        if hostname is None or status >= 300:
            return
        try:
            document = json.loads(answer) if answer[:1] == b"{" else {}
        except ValueError:
            document = {}
        urls = [headers.get("Location", "")]
        urls += document.get("authorizations", [])
        urls += [document.get("finalize", ""), document.get("certificate", "")]
        urls += [c.get("url", "") for c in document.get("challenges", [])]
        with self._lock:
            for url in urls:
                if url:
                    self._hostnames[urlsplit(url).path] = hostname
            if kind == "new-order":
                self.orders_created[hostname] += 1
            elif kind == "finalize":
                self.certificates_issued[hostname] += 1
            elif kind == "certificate":
                self.downloads[hostname] += 1


def _kind_of(path: str) -> Kind:
    return _KINDS.get(path.strip("/").split("/", 1)[0], "other")


def _jws_payload(body: bytes) -> dict[str, Any] | None:
    """The payload of a flattened JWS (the request body of every ACME POST), unverified."""
    try:
        encoded = json.loads(body)["payload"]
        padded = encoded + "=" * (-len(encoded) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded)) if encoded else None
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return payload if isinstance(payload, dict) else None


__all__ = ["RATE_LIMITED", "AcmeFaultProxy", "Fault", "Recorded", "Trigger"]
