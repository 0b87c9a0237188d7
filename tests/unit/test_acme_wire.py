"""``Network`` sends its requests over the shared connections without a ``requests.Session``,
and the CA sees exactly what the acme library's own session sends, while the library gets the
answers and the errors it got from its session.

Each test sends the same request both ways to a local stand-in of the CA and compares: what
arrived (method, target, headers in order, body) and what came back. RS256 signatures are
deterministic, so with the same key and nonce even the JWS bodies are byte for byte the same.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
import requests
from acme import errors as acme_errors
from acme import messages
from acme.client import ClientNetwork
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy.jwa import RS256
from josepy.jwk import JWKRSA

from tests.harness.processes import free_port
from tests.harness.standin import Handler, StandIn
from vhost_operator.acme.connections import SharedConnections
from vhost_operator.acme.transport import Network

KEY = JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
NONCE = "bm9uY2Utb25l"  # base64url, as a CA sends it
POOLED = cast(str, b"nonce-one")  # as the library pools it: decoded (its type says str)
PROBLEM = "application/problem+json"
ORDER = messages.NewOrder(
    identifiers=(messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="mail.example.com"),)
)

Seen = tuple[str, str, list[tuple[str, str]], bytes]
"""What one request brought: method, request target, headers in order, body."""


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


# path → status, headers, body: what the stand-in CA answers a request for that path.
ANSWERS: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/directory": (200, {"Content-Type": "application/json"}, _json({"newNonce": "/nonce"})),
    "/order": (
        201,
        {
            "Content-Type": "application/json",
            "Location": "/order/1",
            "Link": '</directory>;rel="index", </authz/1>;rel="up"',
        },
        _json({"status": "pending", "identifiers": []}),
    ),
    "/cert": (200, {"Content-Type": "application/pem-certificate-chain"}, b"-----BEGIN \xc3\xa9"),
    "/account": (200, {"Content-Type": "application/json", "Location": "/acct/7"}, b"{}"),
    "/conflict": (409, {"Location": "/acct/7"}, b""),
    "/refused": (
        403,
        {"Content-Type": PROBLEM},
        _json({"type": "urn:ietf:params:acme:error:unauthorized", "detail": "no"}),
    ),
    "/limited": (
        429,
        {"Content-Type": PROBLEM, "Retry-After": "120"},
        _json({"type": "urn:ietf:params:acme:error:rateLimited", "detail": "slow down"}),
    ),
    "/busy": (503, {"Content-Type": "text/html", "Retry-After": "30"}, b"<html>busy</html>"),
    "/odd": (400, {"Content-Type": PROBLEM}, _json({"type": 7})),
    "/zipped": (
        200,
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        gzip.compress(b'{"zipped": true}'),
    ),
    "/moved": (302, {"Location": "/directory"}, b""),
}


class _Ca(Handler):
    """Answers every path from :data:`ANSWERS` with a fresh nonce, recording each request."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[Seen]]

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path, list(self.headers.items()), body))
        status, headers, content = ANSWERS.get(self.path, ANSWERS["/directory"])
        self.send_response(status)
        self.send_header("Replay-Nonce", NONCE)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    do_GET = do_HEAD = do_POST = _answer


@pytest.fixture(scope="module")
def stand_in() -> Iterator[tuple[str, list[Seen]]]:
    seen: list[Seen] = []
    handler = type("Handler", (_Ca,), {"seen": seen})
    with contextlib.closing(StandIn(handler)) as stand_in:
        yield stand_in.url, seen


@pytest.fixture
def ca(stand_in: tuple[str, list[Seen]]) -> tuple[str, list[Seen]]:
    """The stand-in CA's base URL, and what it was sent during the test."""
    stand_in[1].clear()
    return stand_in


def _library(account: bool = True) -> ClientNetwork:
    """The acme library's own transport: a requests.Session per instance."""
    net = ClientNetwork(KEY, alg=RS256, user_agent="vhost-operator-test", timeout=5)
    net.account = messages.RegistrationResource(uri="https://ca.test/acct/7") if account else None
    net._nonces = {POOLED}  # the same nonce both ways: the same JWS
    return net


def _ours(shared: SharedConnections | None = None) -> Network:
    net = Network(
        KEY,
        alg=RS256,
        user_agent="vhost-operator-test",
        timeout=5,
        connections=shared or SharedConnections(None, connections=2),
        nonces={POOLED},
    )
    net.account = messages.RegistrationResource(uri="https://ca.test/acct/7")
    return net


def _outcome(call: Callable[[ClientNetwork], requests.Response], net: ClientNetwork) -> object:
    """What the library makes of an answer: the response as it reads it, or the error."""
    try:
        response = call(net)
    except messages.Error as problem:
        return problem
    except requests.RequestException as error:  # its text names objects and their addresses
        return type(error)
    except acme_errors.Error as error:
        return type(error), str(error)
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    return (
        response.status_code,
        response.ok,
        {name: value for name, value in response.headers.lower_items() if name != "date"},
        response.content,
        response.text,
        response.encoding,
        parsed,
        response.links,
        response.url,
    )


CALLS: dict[str, Callable[[str], Callable[[ClientNetwork], requests.Response]]] = {
    "post": lambda url: lambda net: net.post(url, ORDER),
    "post-as-get": lambda url: lambda net: net.post(url, None),
    "get": lambda url: lambda net: net.get(url),
    "get-ari": lambda url: lambda net: net.get(url, content_type="application/json"),
    "get-accept": lambda url: lambda net: net.get(url, headers={"Accept": "application/x"}),
    "head": lambda url: lambda net: net.head(url),
}


@pytest.mark.parametrize(
    ("call", "path"),
    [
        (call, path)
        for call in sorted(CALLS)
        for path in sorted(ANSWERS)
        # A POST is not redirected: test_a_post_is_not_redirected.
        if not (path == "/moved" and call.startswith("post"))
    ],
)
def test_the_same_request_arrives_and_the_same_answer_comes_back(
    ca: tuple[str, list[Seen]], call: str, path: str
) -> None:
    base, seen = ca
    send = CALLS[call](f"{base}{path}")
    theirs = _outcome(send, _library())
    arrived = list(seen)
    seen.clear()
    ours = _outcome(send, _ours())
    assert seen == arrived
    assert ours == theirs


def test_a_post_carries_the_jws_as_the_library_signs_it(ca: tuple[str, list[Seen]]) -> None:
    base, seen = ca
    _ours().post(f"{base}/order", ORDER)
    [(method, target, headers, body)] = seen
    assert (method, target) == ("POST", "/order")
    assert ("Content-Type", "application/jose+json") in headers
    assert ("Content-Length", str(len(body))) in headers
    jws = json.loads(body)
    assert set(jws) == {"protected", "payload", "signature"}
    # The same bytes as the library's own transport: test_the_same_request_arrives...


def test_a_new_account_is_signed_with_the_key_itself(ca: tuple[str, list[Seen]]) -> None:
    base, seen = ca
    net = _ours()
    net.account = None
    _outcome(lambda n: n.post(f"{base}/account", None), net)
    ours = list(seen)
    seen.clear()
    _outcome(lambda n: n.post(f"{base}/account", None), _library(account=False))
    assert ours == seen


def test_no_session_sends_a_request(
    ca: tuple[str, list[Seen]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's machinery was the larger part of the CPU an ACME request cost."""

    def refuse(*_: Any, **__: Any) -> requests.Response:
        raise AssertionError("a requests.Session sent an ACME request")

    monkeypatch.setattr(requests.Session, "send", refuse)
    base, seen = ca
    net = _ours()
    net._nonces.clear()
    assert net.post(f"{base}/order", None, new_nonce_url=f"{base}/nonce").status_code == 201
    assert net.get(f"{base}/directory").json() == {"newNonce": "/nonce"}
    assert [(method, target) for method, target, _, _ in seen] == [
        ("HEAD", "/nonce"),
        ("POST", "/order"),
        ("GET", "/directory"),
    ]


def test_a_get_follows_a_redirect_as_the_session_did(ca: tuple[str, list[Seen]]) -> None:
    base, seen = ca
    assert _ours().get(f"{base}/moved").url == f"{base}/directory"
    assert [target for _, target, _, _ in seen] == ["/moved", "/directory"]


def test_a_post_is_not_redirected(ca: tuple[str, list[Seen]]) -> None:
    """Its JWS names the URL it was signed for: no other URL may take it (RFC 8555 6.4)."""
    base, seen = ca
    assert _ours().post(f"{base}/moved", None).status_code == 302
    assert [target for _, target, _, _ in seen] == ["/moved"]


@pytest.mark.parametrize(
    ("path", "until"), [("/limited", True), ("/busy", True), ("/order", False)]
)
def test_retry_after_of_a_429_or_503_is_kept(
    ca: tuple[str, list[Seen]], path: str, until: bool
) -> None:
    base, _ = ca
    net = _ours()
    with contextlib.suppress(acme_errors.Error, messages.Error):
        net.post(f"{base}{path}", None)
    assert (net.retry_after is not None) == until


def test_rejected_nonces_are_retried_over_the_shared_connections(
    ca: tuple[str, list[Seen]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, seen = ca
    bad = 400, {"Content-Type": PROBLEM}, _json({"type": "urn:ietf:params:acme:error:badNonce"})
    monkeypatch.setitem(ANSWERS, "/stale", bad)
    with pytest.raises(messages.Error, match="badNonce"):
        _ours().post(f"{base}/stale", None, new_nonce_url=f"{base}/nonce")
    posts = [target for method, target, _, _ in seen if method == "POST"]
    assert posts == ["/stale"] * 10  # BAD_NONCE_ATTEMPTS


def _refused_port() -> str:
    return f"http://127.0.0.1:{free_port()}/directory"


@contextlib.contextmanager
def _silent() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/directory"


def test_network_failures_raise_the_sessions_errors() -> None:
    refused = _refused_port()
    ours = _outcome(lambda net: net.get(refused), _ours())
    theirs = _outcome(lambda net: net.get(refused), _library())
    assert ours is theirs is requests.ConnectionError
    with _silent() as url:
        shared = SharedConnections(None, connections=1)
        net = Network(KEY, alg=RS256, timeout=1, connections=shared)
        library = ClientNetwork(KEY, alg=RS256, timeout=1)
        ours = _outcome(lambda n: n.get(url), net)
        assert ours is _outcome(lambda n: n.get(url), library) is requests.ReadTimeout


class _Proxy(Handler):
    """An HTTP proxy that answers itself, recording the request line's target."""

    targets: ClassVar[list[str]]

    def do_GET(self) -> None:
        self.targets.append(self.path)
        self.reply(b"{}")


def test_a_proxy_from_the_environment_is_used_as_the_session_used_it() -> None:
    targets: list[str] = []
    handler = type("Handler", (_Proxy,), {"targets": targets})
    with contextlib.closing(StandIn(handler)) as proxy:
        url = "http://ca.invalid/directory#top"
        shared = SharedConnections(None, connections=1, proxies={"http": proxy.url})
        assert _ours(shared).get(url).json() == {}
        library = _library()
        library.session.proxies = {"http": proxy.url}
        assert library.get(url).json() == {}
    assert targets == ["http://ca.invalid/directory"] * 2


def test_a_missing_ca_bundle_fails_as_the_session_failed(tmp_path: Path) -> None:
    """requests raises a bare OSError before connecting; not a network failure."""
    missing = str(tmp_path / "none.pem")
    shared = SharedConnections(missing, connections=1)
    with pytest.raises(OSError, match="invalid path") as ours:
        _ours(shared).get("https://127.0.0.1:9/directory")
    library = _library()
    library.session.verify = missing
    library.verify_ssl = missing  # type: ignore[assignment]  # what the library passes on
    with pytest.raises(OSError, match="invalid path") as theirs:
        library.get("https://127.0.0.1:9/directory")
    assert type(ours.value) is type(theirs.value) is OSError
