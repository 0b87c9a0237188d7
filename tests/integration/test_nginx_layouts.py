"""What a real nginx serves from each form of the configs: this release's and earlier releases'
(still in the ConfigMaps of hosts not provisioned since an upgrade), side by side in one nginx
with the agent's http-level definitions, as the agent lays them out.

The headers that reach the web app and the challenge responder are compared whole: this
release's sites set none of their own and inherit the definitions' (nginx drops every inherited
``proxy_set_header`` at a level that sets one), the earlier forms set theirs in each location.
No control plane: the files are written here and nginx reloaded the agent's way.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator

import pytest

from tests.harness.nginx import (
    NginxServer,
    http_request,
    https_exchange,
    self_signed_certificate,
)
from tests.harness.processes import free_port
from tests.harness.standin import Handler, StandIn
from vhost_operator.agent.nginx import NginxControl
from vhost_operator.nginx import (
    FinalLayout,
    SiteConfig,
    http_definitions,
    render_bootstrap,
    render_final,
)
from vhost_operator.resources.mtasts import parse_policy

EARLIER = (FinalLayout.SHARED_CONTEXT, FinalLayout.PER_HANDSHAKE, FinalLayout.AT_RELOAD)
TLS_HOSTS = {
    layout: f"{layout.name.lower().replace('_', '-')}.example.org" for layout in FinalLayout
}
"""One TLS site per form."""
BOOTSTRAP_HOSTS = {FinalLayout.ONE_SERVER: "boot.example.org", EARLIER[0]: "boot-0.example.org"}
PLAIN_HOSTS = {FinalLayout.ONE_SERVER: "plain.example.org", EARLIER[0]: "plain-0.example.org"}
"""Bootstrap and HTTP-only configs: earlier releases all had the same form of these."""
POLICY = parse_policy("version: STSv1\nmode: enforce\nmx: mx.example.org\nmax_age: 86400\n")
BODY_LIMIT_MIB = 1
HTTP_CLIENT = {"accept-encoding": "identity"}
"""What the harness's plain HTTP client (``http.client``) sends besides Host."""


class Recorder:
    """An HTTP server standing in for the web app or the challenge responder: it answers 200
    and keeps each request's line and headers (names lowercased), in order."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        recorded = self.requests

        class Recording(Handler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                recorded.append((self.requestline, {k.lower(): v for k, v in self.headers.items()}))
                self.reply(b"recorded\n")

        self.server = StandIn(Recording)
        self.port = self.server.port

    def last(self) -> tuple[str, dict[str, str]]:
        assert self.requests, "no request reached this server"
        return self.requests[-1]

    def stop(self) -> None:
        self.server.close()


class Served:
    def __init__(self, nginx: NginxServer, app: Recorder, responder: Recorder) -> None:
        self.nginx, self.app, self.responder = nginx, app, responder
        self.chains: dict[str, bytes] = {}

    def site(self, hostname: str, *, tls: bool, **fields: object) -> SiteConfig:
        directory = self.nginx.root / "certs" / hostname
        paths = {"certificate_path": f"{directory}/tls.crt", "key_path": f"{directory}/tls.key"}
        return SiteConfig.model_validate(
            {
                "hostname": hostname,
                "challenge_upstream": f"127.0.0.1:{self.responder.port}",
                "upstream": f"http://127.0.0.1:{self.app.port}",
                "http_port": self.nginx.http_port,
                "https_port": self.nginx.https_port,
                "max_body_size_mib": BODY_LIMIT_MIB,
                **(paths if tls else {}),
                **fields,
            }
        )

    def write(self, site: SiteConfig, config: str) -> None:
        """The site's config and, for a TLS site, its certificate, where the agent puts them."""
        root = self.nginx.real(self.nginx.root)
        hostname = site.hostname
        (root / "sites-enabled" / f"{hostname}.conf").write_text(config)
        if site.has_certificate:
            chain, key = self_signed_certificate([hostname, *site.additional_names])
            (root / "certs" / hostname).mkdir(parents=True)
            (root / "certs" / hostname / "tls.crt").write_bytes(chain)
            (root / "certs" / hostname / "tls.key").write_bytes(key)
            self.chains[hostname] = chain

    def https(self, hostname: str, path: str) -> tuple[int, str, dict[str, str]]:
        return https_exchange(self.nginx.https_port, hostname, self.chains[hostname], path)

    def expected(self, hostname: str, scheme: str, **client: str) -> dict[str, str]:
        """Every header the upstream gets from a client sending Host, Connection and
        ``client`` (passed on as they are)."""
        port = self.nginx.https_port if scheme == "https" else self.nginx.http_port
        return {
            "host": hostname,
            "x-real-ip": "127.0.0.1",
            "x-forwarded-for": "127.0.0.1",
            "x-forwarded-proto": scheme,
            "x-forwarded-host": hostname,
            "x-forwarded-port": str(port),
            "connection": "close",
            **client,
        }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    app, responder = Recorder(), Recorder()
    nginx = NginxServer(tmp_path_factory.mktemp("nginx"), free_port(), free_port())
    try:
        nginx.start()
        served = Served(nginx, app, responder)
        root = nginx.real(nginx.root)
        definitions = http_definitions(str(nginx.root / "certs"), nginx.https_port)
        (root / "sites-enabled" / "_vhost-operator.conf").write_text(definitions)
        for layout, hostname in TLS_HOSTS.items():
            names = ("www." + hostname,)
            site = served.site(hostname, tls=True, additional_names=names, mta_sts=POLICY)
            served.write(site, render_final(site, layout=layout))
        for layout, hostname in BOOTSTRAP_HOSTS.items():
            site = served.site(hostname, tls=False)
            served.write(site, render_bootstrap(site, layout=layout))
        for layout, hostname in PLAIN_HOSTS.items():
            site = served.site(hostname, tls=False)
            served.write(site, render_final(site, layout=layout))
        control = NginxControl(nginx.binary, nginx.conf, nginx.pid_file, reload_timeout=30)
        asyncio.run(control.test())
        asyncio.run(control.reload())
        yield served
    finally:
        nginx.stop()
        app.stop()
        responder.stop()


@pytest.mark.parametrize("layout", list(FinalLayout))
def test_the_web_app_gets_exactly_the_forwarded_headers_over_https(
    served: Served, layout: FinalLayout
) -> None:
    hostname = TLS_HOSTS[layout]
    status, body, _ = served.https(hostname, "/inbox?folder=1")
    assert (status, body) == (200, "recorded\n")
    line, headers = served.app.last()
    assert line == "GET /inbox?folder=1 HTTP/1.1"
    assert headers == served.expected(hostname, "https")


@pytest.mark.parametrize("layout", list(FinalLayout))
def test_plain_http_redirects_to_the_hostname_over_https(
    served: Served, layout: FinalLayout
) -> None:
    hostname = TLS_HOSTS[layout]
    origin = f"https://{hostname}:{served.nginx.https_port}"
    for host in (hostname, "www." + hostname):  # an additional name: to the hostname
        for path in ("/inbox?folder=1", "/.well-known/mta-sts.txt", "/.well-known/acme"):
            status, _, headers = http_request(served.nginx.http_port, host, path)
            assert (status, headers["Location"]) == (301, origin + path)


@pytest.mark.parametrize("layout", list(FinalLayout))
def test_challenges_reach_the_responder_with_the_hostname(
    served: Served, layout: FinalLayout
) -> None:
    hostname = TLS_HOSTS[layout]
    path = "/.well-known/acme-challenge/token-1"
    assert http_request(served.nginx.http_port, hostname, path)[:2] == (200, "recorded\n")
    line, headers = served.responder.last()
    # HTTP/1.1 from every form: the earlier ones set no proxy_http_version in this location, so
    # it comes from the definitions now (it was 1.0, nginx's default).
    assert line == f"GET {path} HTTP/1.1"
    if layout is FinalLayout.ONE_SERVER:
        # This release's challenge location inherits the definitions' headers, like the others.
        assert headers == served.expected(hostname, "http", **HTTP_CLIENT)
    else:
        assert headers == {"host": hostname, "connection": "close", **HTTP_CLIENT}
    # Over HTTPS the path is this release's challenge location too (one server for both
    # ports); the earlier forms had it on port 80 only, and sent it to the web app on 443.
    before = len(served.responder.requests), len(served.app.requests)
    assert served.https(hostname, path)[0] == 200
    on_responder = layout is FinalLayout.ONE_SERVER
    after = len(served.responder.requests), len(served.app.requests)
    assert after == (before[0] + on_responder, before[1] + (not on_responder))


@pytest.mark.parametrize("layout", list(FinalLayout))
def test_mta_sts_and_the_body_limit_over_https(served: Served, layout: FinalLayout) -> None:
    hostname = TLS_HOSTS[layout]
    status, body, _ = served.https(hostname, "/.well-known/mta-sts.txt")
    assert POLICY is not None
    assert (status, body) == (200, POLICY.text())
    assert post_status(served, hostname, BODY_LIMIT_MIB * 2**20 + 1) == 413
    assert post_status(served, hostname, 10) != 413


@pytest.mark.parametrize("layout", list(BOOTSTRAP_HOSTS))
def test_bootstrap_holds_the_site_and_answers_challenges(
    served: Served, layout: FinalLayout
) -> None:
    hostname = BOOTSTRAP_HOSTS[layout]
    status, body, headers = http_request(served.nginx.http_port, hostname, "/inbox")
    assert (status, headers["Retry-After"]) == (503, "120")
    assert hostname in body
    path = "/.well-known/acme-challenge/token-2"
    assert http_request(served.nginx.http_port, hostname, path)[0] == 200
    assert served.responder.last()[1]["host"] == hostname


@pytest.mark.parametrize("layout", list(PLAIN_HOSTS))
def test_an_http_only_site_forwards_the_same_headers(served: Served, layout: FinalLayout) -> None:
    hostname = PLAIN_HOSTS[layout]
    assert http_request(served.nginx.http_port, hostname, "/inbox")[:2] == (200, "recorded\n")
    line, headers = served.app.last()
    assert line == "GET /inbox HTTP/1.1"
    assert headers == served.expected(hostname, "http", **HTTP_CLIENT)


def post_status(served: Served, hostname: str, length: int) -> int:
    """The status of a POST of ``length`` bytes of body; a body over the limit is not sent:
    nginx judges the announced length before reading any."""
    context = ssl.create_default_context(cadata=served.chains[hostname].decode())
    with (
        socket.create_connection(("127.0.0.1", served.nginx.https_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        request = (
            f"POST /upload HTTP/1.1\r\nHost: {hostname}\r\nContent-Length: {length}\r\n"
            "Connection: close\r\n\r\n"
        )
        tls.sendall(request.encode() + (b"x" * length if length < 2**20 else b""))
        head = tls.recv(65536).decode(errors="replace")
    return int(head.split(" ", 2)[1])
