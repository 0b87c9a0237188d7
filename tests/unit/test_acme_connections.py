"""The connections to the CA outlive the issuances that use them (``SharedConnections``), and
the issuances of one client share its nonces (``Network``)."""

from __future__ import annotations

import contextlib
import http.server
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, cast

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC
from requests.adapters import HTTPAdapter

from tests.harness.standin import StandIn
from vhost_operator.acme.connections import SharedConnections, TrustingAdapter
from vhost_operator.acme.transport import Network


class _Counting(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a CA answers
    connections: ClassVar[list[int]]

    def setup(self) -> None:
        super().setup()
        self.connections.append(1)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on a free loopback port (its base URL), stopped afterwards."""
    with contextlib.closing(StandIn(handler)) as stand_in:
        yield stand_in.url


@pytest.fixture
def server() -> Iterator[tuple[str, list[int]]]:
    """A local HTTP server that counts the connections opened to it."""
    connections: list[int] = []
    with _serving(type("Handler", (_Counting,), {"connections": connections})) as url:
        yield f"{url}/", connections


def test_issuances_one_after_another_reuse_one_connection(server: tuple[str, list[int]]) -> None:
    url, connections = server
    shared = SharedConnections(None, connections=2)
    for _ in range(3):
        net = _network(set(), shared)
        assert net.head(url).status_code == 200
        net.session.close()  # what every issuance does at its end
    assert len(connections) == 1
    shared.close_all()
    assert _network(set(), shared).head(url).status_code == 200
    assert len(connections) == 2  # closed for real: the next request connects again
    shared.close_all()


class _Ca(http.server.BaseHTTPRequestHandler):
    """Answers as a CA does for nonces: a fresh ``Replay-Nonce`` on every answer; a ``POST`` to
    ``/bad`` is rejected once with ``badNonce``."""

    protocol_version = "HTTP/1.1"
    requests: ClassVar[list[str]]

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Replay-Nonce", secrets.token_urlsafe(16))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.requests.append(f"HEAD {self.path}")
        self.send_response(200)
        self.send_header("Replay-Nonce", secrets.token_urlsafe(16))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.requests.append(f"POST {self.path}")
        if self.path == "/bad" and self.requests.count("POST /bad") == 1:
            problem = b'{"type": "urn:ietf:params:acme:error:badNonce", "detail": "stale"}'
            self._answer(400, problem, "application/problem+json")
        else:
            self._answer(200, b"{}", "application/json")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def ca() -> Iterator[tuple[str, list[str]]]:
    """A local server answering nonces as a CA does, and the requests it got."""
    requests_seen: list[str] = []
    with _serving(type("Handler", (_Ca,), {"requests": requests_seen})) as url:
        yield url, requests_seen


def _network(nonces: set[str], connections: SharedConnections | None = None) -> Network:
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    shared = connections or SharedConnections(None, connections=1)
    return Network(key, alg=ES256, user_agent="test", connections=shared, nonces=nonces)


def test_sessions_share_their_nonces(ca: tuple[str, list[str]]) -> None:
    url, seen = ca
    pool: set[str] = set()
    for _ in range(3):  # three issuances, one after another
        _network(pool).post(f"{url}/order", None, new_nonce_url=f"{url}/nonce")
    assert seen == ["HEAD /nonce", "POST /order", "POST /order", "POST /order"]
    assert len(pool) == 1  # the last answer's nonce, for the next issuance


def test_a_rejected_nonce_empties_the_pool(ca: tuple[str, list[str]]) -> None:
    url, seen = ca
    stale = {b"stale-1", b"stale-2"}  # decoded nonces are bytes (the library says str)
    pool = cast(set[str], set(stale))
    _network(pool).post(f"{url}/bad", None, new_nonce_url=f"{url}/nonce")
    assert not stale & cast(set[bytes], pool)
    assert seen == ["POST /bad", "HEAD /nonce", "POST /bad"]


def _bundles(tmp_path: Path) -> dict[str, bool | str]:
    """What ``verify`` can be: a bundle file, a directory of certificates, requests' default,
    or no verification."""
    (tmp_path / "ca.pem").write_text("")
    (tmp_path / "certs").mkdir()
    return {
        "file": str(tmp_path / "ca.pem"),
        "directory": str(tmp_path / "certs"),
        "default": True,
        "off": False,
    }


def _request(url: str) -> requests.PreparedRequest:
    return requests.Request("POST", url).prepare()


@pytest.mark.parametrize("kind", ["file", "directory", "default", "off"])
def test_the_trust_of_a_request_is_requests_own(tmp_path: Path, kind: str) -> None:
    verify = _bundles(tmp_path)[kind]
    ours, theirs = TrustingAdapter(None), HTTPAdapter()
    request = _request("https://ca.example/acme/new-order")
    for _ in range(2):  # the second time from what the first looked up
        assert ours.build_connection_pool_key_attributes(
            request, verify
        ) == theirs.build_connection_pool_key_attributes(request, verify)
        connections = SimpleNamespace(), SimpleNamespace()
        ours.cert_verify(connections[0], request.url or "", verify, None)
        theirs.cert_verify(connections[1], request.url or "", verify, None)
        assert vars(connections[0]) == vars(connections[1])


def _counted(look: Any, looks: list[str]) -> Any:
    def looked(path: str) -> Any:
        looks.append(path)
        return look(path)

    return looked


def test_a_bundle_is_looked_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each look is a filesystem call, and an issuance makes 8 requests."""
    bundle = _bundles(tmp_path)["file"]
    adapter, request = TrustingAdapter(None), _request("https://ca.example/acme/new-order")
    adapter.build_connection_pool_key_attributes(request, bundle)
    adapter.cert_verify(SimpleNamespace(), request.url or "", bundle, None)
    looks: list[str] = []
    for name in ("exists", "isdir"):
        look = getattr(os.path, name)
        monkeypatch.setattr(os.path, name, _counted(look, looks))
    for _ in range(3):
        adapter.build_connection_pool_key_attributes(request, bundle)
        adapter.cert_verify(SimpleNamespace(), request.url or "", bundle, None)
    assert looks == []


def test_a_missing_bundle_fails_as_requests_fails(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.pem")
    with pytest.raises(OSError, match="invalid path"):
        TrustingAdapter(None).cert_verify(SimpleNamespace(), "https://ca.example/", missing, None)
    with pytest.raises(OSError, match="invalid path"):
        HTTPAdapter().cert_verify(SimpleNamespace(), "https://ca.example/", missing, None)
