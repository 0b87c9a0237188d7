"""What a real nginx serves from each form of the configs: this release's and earlier releases'
(still in the ConfigMaps of hosts not provisioned since an upgrade), side by side in one nginx
with the agent's http-level definitions, as the agent lays them out: this release's TLS sites
listen on the HTTPS port only, and the agent's shared plain HTTP server lists their names.

The headers that reach the web app and the challenge responder are compared whole: this
release's sites set none of their own and inherit the definitions' (nginx drops every inherited
``proxy_set_header`` at a level that sets one), the earlier forms set theirs in each location.
No control plane: the files are written here and nginx reloaded the agent's way.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.nginx import (
    NginxServer,
    agent_definitions,
    http_request,
    http_status,
    https_exchange,
    nginx_binary,
    self_signed_certificate,
)
from tests.harness.processes import ManagedProcess, free_port
from tests.harness.standin import Handler, StandIn
from vhost_operator.agent.nginx import NginxControl
from vhost_operator.agent.plan import format_entries
from vhost_operator.nginx import (
    NO_SITE_NAME,
    SHARED_HTTP_NAME,
    FinalLayout,
    SharedHttpsServer,
    SiteConfig,
    render_bootstrap,
    render_final,
    render_shared_https_server,
    shared_http_names,
    shared_https_map,
)
from vhost_operator.resources.mtasts import parse_policy

EARLIER = (FinalLayout.SHARED_CONTEXT, FinalLayout.PER_HANDSHAKE, FinalLayout.AT_RELOAD)
TLS_HOSTS = {
    layout: f"{layout.name.lower().replace('_', '-')}.example.org" for layout in FinalLayout
}
"""One TLS site per form."""
BOOTSTRAP_HOSTS = {FinalLayout.TLS_ONLY: "boot.example.org", EARLIER[0]: "boot-0.example.org"}
LISTED_HOST = "listed.example.org"
"""A TLS site of this release without an MTA-STS policy: listed in a shared HTTPS server."""
PLAIN_HOSTS = {FinalLayout.TLS_ONLY: "plain.example.org", EARLIER[0]: "plain-0.example.org"}
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
        self.http_names: dict[str, str] = {}
        """The entries of the shared plain HTTP server's names, as the agent writes them."""
        self.test_output = ""
        """What ``nginx -t`` says of all the forms side by side."""

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

    def write(self, site: SiteConfig, config: str, *, listed: bool = False) -> None:
        """The site's config and, for a TLS site, its certificate, where the agent puts them;
        ``listed``: its names in the shared plain HTTP server too (this release's TLS sites)."""
        root = self.nginx.real(self.nginx.root)
        hostname = site.hostname
        (root / "sites-enabled" / f"{hostname}.conf").write_text(config)
        if listed:
            self.http_names[hostname] = shared_http_names(site)
            (root / "http-names.conf").write_text(format_entries(self.http_names))
        if site.has_certificate:
            chain, key = self_signed_certificate([hostname, *site.additional_names])
            (root / "certs" / hostname).mkdir(parents=True)
            (root / "certs" / hostname / "tls.crt").write_bytes(chain)
            (root / "certs" / hostname / "tls.key").write_bytes(key)
            self.chains[hostname] = chain

    def list_in_shared_server(self, site: SiteConfig) -> None:
        """``site`` listed in its shared HTTPS server, as the agent lists it, instead of a
        server of its own (its config stays in ``sites-available``, unlinked)."""
        root = self.nginx.real(self.nginx.root)
        hostname, server = site.hostname, SharedHttpsServer.of(site)
        self.write(site, render_final(site), listed=True)
        for name in site.additional_names:
            self.chains[name] = self.chains[hostname]
        (root / "sites-enabled" / f"{hostname}.conf").unlink()
        names = root / "https-names" / f"{server.key}.conf"
        names.parent.mkdir(exist_ok=True)
        names.write_text(format_entries({hostname: shared_http_names(site)}))
        (root / "https-map.conf").write_text(format_entries({hostname: shared_https_map(site)}))
        shared = render_shared_https_server(
            server, f"{self.nginx.root}/https-names/{server.key}.conf"
        )
        (root / "sites-enabled" / f"_vhost-shared-{server.key}.conf").write_text(shared)

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
        responder_address = f"127.0.0.1:{responder.port}"
        definitions = agent_definitions(
            nginx.root, nginx.https_port, nginx.http_port, responder_address
        )
        (root / "sites-enabled" / "_vhost-operator.conf").write_text(definitions)
        for included in ("http-names.conf", "https-map.conf"):
            (root / included).touch()  # the definitions include them by name
        for layout, hostname in TLS_HOSTS.items():
            names = ("www." + hostname,)
            site = served.site(hostname, tls=True, additional_names=names, mta_sts=POLICY)
            listed = layout is FinalLayout.TLS_ONLY
            served.write(site, render_final(site, layout=layout), listed=listed)
        names = ("www." + LISTED_HOST,)
        served.list_in_shared_server(served.site(LISTED_HOST, tls=True, additional_names=names))
        for layout, hostname in BOOTSTRAP_HOSTS.items():
            site = served.site(hostname, tls=False)
            served.write(site, render_bootstrap(site, layout=layout))
        for layout, hostname in PLAIN_HOSTS.items():
            site = served.site(hostname, tls=False)
            served.write(site, render_final(site, layout=layout))
        control = NginxControl(nginx.binary, nginx.conf, nginx.pid_file, reload_timeout=30)
        asyncio.run(control.test())
        asyncio.run(control.reload())
        served.test_output = subprocess.run(
            [nginx.binary, "-t", "-c", str(nginx.conf), "-e", "stderr"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stderr
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


@pytest.mark.parametrize("host", [LISTED_HOST, "www." + LISTED_HOST])
def test_a_site_listed_in_a_shared_https_server_is_the_same_site(served: Served, host: str) -> None:
    """The shared server proxies as the site's own server would, for each of its names; plain
    HTTP redirects each name to itself."""
    status, body, _ = served.https(host, "/inbox?folder=1")
    assert (status, body) == (200, "recorded\n")
    line, headers = served.app.last()
    assert line == "GET /inbox?folder=1 HTTP/1.1"
    assert headers == served.expected(host, "https")
    status, _, redirect = http_request(served.nginx.http_port, host, "/inbox")
    assert (status, redirect["Location"]) == (
        301,
        f"https://{host}:{served.nginx.https_port}/inbox",
    )


@pytest.mark.parametrize("layout", list(FinalLayout))
def test_plain_http_redirects_to_https(served: Served, layout: FinalLayout) -> None:
    """Earlier forms redirect every name to the hostname; this release's shared server redirects
    each name to itself (the certificate covers every name of the site, and the HTTPS server
    serves them all)."""
    hostname = TLS_HOSTS[layout]
    port = served.nginx.https_port
    for host in (hostname, "www." + hostname):  # an additional name
        target = host if layout is FinalLayout.TLS_ONLY else hostname
        for path in ("/inbox?folder=1", "/.well-known/mta-sts.txt", "/.well-known/acme"):
            status, _, headers = http_request(served.nginx.http_port, host, path)
            assert (status, headers["Location"]) == (301, f"https://{target}:{port}{path}")


def test_the_shared_http_server_names_only_configured_names(served: Served) -> None:
    """The redirect names what nginx matched among the listed names (lowercased, without port
    or trailing dot), never the client's own text: any other name reaches the port's default
    server (the harness's answers 404), including the shared server's own first name and an
    absolute request line, whose host is the one nginx selects the server by."""
    hostname = TLS_HOSTS[FinalLayout.TLS_ONLY]
    origin = f"https://www.{hostname}:{served.nginx.https_port}"
    for host in (f"WWW.{hostname.upper()}", f"www.{hostname}.", f"www.{hostname}:80"):
        status, _, headers = http_request(served.nginx.http_port, host, "/inbox")
        assert (status, headers["Location"]) == (301, f"{origin}/inbox"), host
    for host in ("unknown.example.org", f"x.{hostname}", SHARED_HTTP_NAME, NO_SITE_NAME, "_"):
        assert http_request(served.nginx.http_port, host, "/inbox")[0] == 404, host
    absolute = f"GET http://evil.example.net/inbox HTTP/1.1\r\nHost: {hostname}\r\n"
    assert raw_status(served.nginx.http_port, absolute + "Connection: close\r\n\r\n") == 404
    no_host = "GET /inbox HTTP/1.0\r\n\r\n"
    assert raw_status(served.nginx.http_port, no_host) == 404
    # Every name in exactly one server of the port: nginx would ignore one of two.
    assert "conflicting server name" not in served.test_output, served.test_output


def test_without_a_default_server_of_its_own_unknown_names_are_closed(tmp_path: Path) -> None:
    """An nginx whose main config has no server on the HTTP port (the chart's and the harness's
    have a default one): the definitions' first server there is its default, which closes the
    connection, never the shared server, which would redirect to whatever name it was sent."""
    http_port, https_port = free_port(), free_port()
    root = tmp_path / "agent-root"
    root.mkdir(parents=True)
    names = {"a.example.org": "server_name a.example.org;\n"}
    (root / "http-names.conf").write_text(format_entries(names))
    (root / "https-map.conf").touch()  # the definitions include it by name
    conf = tmp_path / "nginx.conf"
    definitions = agent_definitions(root, https_port, http_port)
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n    access_log off;\n    client_body_temp_path {tmp_path}/body;\n"
        f"    proxy_temp_path {tmp_path}/proxy;\n{definitions}}}\n"
    )
    argv = [nginx_binary(), "-c", str(conf), "-p", f"{tmp_path}/", "-e", f"{tmp_path}/error.log"]
    nginx = ManagedProcess("nginx", [*argv, "-g", "daemon off;"], tmp_path / "nginx.out")
    try:
        nginx.wait_until(
            lambda: http_status(http_port, "a.example.org") == 301, timeout=20, what="a redirect"
        )
        location = http_request(http_port, "a.example.org", "/inbox")[2]["Location"]
        assert location == f"https://a.example.org:{https_port}/inbox"
        for host in ("evil.example.net", "A.example.org.evil.example.net"):
            request = f"GET /inbox HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            assert raw_status(http_port, request) is None, host  # 444: closed, no answer
        assert raw_status(http_port, "GET /inbox HTTP/1.0\r\n\r\n") is None
    finally:
        nginx.stop()


@pytest.mark.parametrize("layout", list(FinalLayout))
def test_challenges_reach_the_responder_with_the_hostname(
    served: Served, layout: FinalLayout
) -> None:
    hostname = TLS_HOSTS[layout]
    path = "/.well-known/acme-challenge/token-1"
    for host in (hostname, "www." + hostname):  # each name is validated on its own
        assert http_request(served.nginx.http_port, host, path)[:2] == (200, "recorded\n")
        line, headers = served.responder.last()
        # HTTP/1.1 from every form: the earlier ones set no proxy_http_version in this location,
        # so it comes from the definitions now (it was 1.0, nginx's default).
        assert line == f"GET {path} HTTP/1.1"
        if layout in (FinalLayout.TLS_ONLY, FinalLayout.ONE_SERVER):
            # The shared server's challenge location, and the previous release's, inherit the
            # definitions' headers, like the others.
            assert headers == served.expected(host, "http", **HTTP_CLIENT)
        else:
            assert headers == {"host": host, "connection": "close", **HTTP_CLIENT}
    # Over HTTPS the path is the previous release's challenge location too (one server for both
    # ports); this release's and the earlier forms have it on port 80 only, and send it to the
    # web app on 443.
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


def raw_status(port: int, request: str) -> int | None:
    """The status nginx answers ``request`` (sent as it is) on ``port`` with, ``None`` if it
    closes the connection without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request.encode())
        head = connection.recv(65536).decode(errors="replace")
    return int(head.split(" ", 2)[1]) if head else None
