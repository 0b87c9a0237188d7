"""The nginx renderer: what the configs say, that real nginx accepts them, and what is refused."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.harness.nginx import nginx_check, self_signed_certificate
from vhost_operator.nginx import (
    CERTIFICATE_NAME_VARIABLE,
    NO_SITE_NAME,
    PER_HANDSHAKE_VARIABLE,
    REDIRECT_VARIABLE,
    SHARED_HTTP_NAME,
    SHARED_HTTPS_NAME_PREFIX,
    FinalLayout,
    SiteConfig,
    config_hash,
    http_definitions,
    recognise,
    render_bootstrap,
    render_final,
    shared_http_names,
)
from vhost_operator.resources.mtasts import parse_policy

# Upstreams as IP addresses or "localhost": `nginx -t` resolves proxy_pass hosts, and cluster
# Service names do not resolve on a test machine.
CHALLENGE = "127.0.0.1:8089"
UPSTREAM = "http://127.0.0.1:8000"
LONGEST_HOSTNAME = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 56])  # 248 characters, the most
# `nginx -t` binds the listen ports, so checks that must pass without root use unprivileged ones.
PORTS: dict[str, Any] = {"http_port": 8080, "https_port": 8443}
POLICY = parse_policy("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n")


def definitions_of(certificate_dir: str = "/certs", https_port: int = 443, **fields: Any) -> str:
    """The agent's http-level definitions, with a shared plain HTTP server on port 80."""
    shared: dict[str, Any] = {
        "http_port": 80,
        "challenge_upstream": CHALLENGE,
        "names_file": "/root/http-names.conf",
        "https_map_file": "/root/https-map.conf",
    }
    return http_definitions(certificate_dir, https_port, **(shared | fields))


def site(**overrides: Any) -> SiteConfig:
    fields: dict[str, Any] = {
        "hostname": "mail.example.com",
        "challenge_upstream": CHALLENGE,
        "upstream": UPSTREAM,
    }
    fields.update(overrides)
    return SiteConfig(**fields)


def tls_site(tmp_path: Path, hostname: str = "mail.example.com", **overrides: Any) -> SiteConfig:
    """A site whose certificate and key paths point at where ``tls_files`` writes them."""
    return site(
        hostname=hostname,
        certificate_path=str(tmp_path.resolve() / "tls" / hostname / "fullchain.pem"),
        key_path=str(tmp_path.resolve() / "tls" / hostname / "privkey.pem"),
        **overrides,
    )


def tls_files(*hostnames: str) -> dict[str, bytes]:
    """``extra_files`` for ``nginx_check``: a matching certificate and key per hostname."""
    files: dict[str, bytes] = {}
    for hostname in hostnames:
        fullchain, key = self_signed_certificate([hostname])
        files[f"tls/{hostname}/fullchain.pem"] = fullchain
        files[f"tls/{hostname}/privkey.pem"] = key
    return files


def assert_nginx_accepts(
    blocks: list[str], tmp_path: Path, extra_files: dict[str, bytes] | None = None
) -> None:
    result = nginx_check(blocks, tmp_dir=tmp_path, extra_files=extra_files)
    assert result.returncode == 0, result.stderr


# --- real nginx -t ---------------------------------------------------------------------------


def test_bootstrap_passes_nginx(tmp_path: Path) -> None:
    config = render_bootstrap(site(challenge_upstream="localhost:8089", **PORTS))
    assert_nginx_accepts([config], tmp_path)


def test_final_with_certificate_passes_nginx(tmp_path: Path) -> None:
    config = render_final(tls_site(tmp_path, **PORTS))
    assert_nginx_accepts([config], tmp_path, tls_files("mail.example.com"))


def test_final_http_only_passes_nginx(tmp_path: Path) -> None:
    config = render_final(site(upstream="http://localhost:8000/webmail", **PORTS))
    assert_nginx_accepts([config], tmp_path)


def test_final_with_https_upstream_passes_nginx(tmp_path: Path) -> None:
    config = render_final(tls_site(tmp_path, upstream="https://127.0.0.1:9443/", **PORTS))
    assert_nginx_accepts([config], tmp_path, tls_files("mail.example.com"))


def test_many_hosts_in_every_stage_pass_nginx_together(tmp_path: Path) -> None:
    # Same ports, one shared TLS session cache, and a 248-character server_name (which needs the
    # bigger server_names_hash_bucket_size) must all coexist in one nginx.
    tls_hosts = ["mail.example.com", "webmail.example.org", LONGEST_HOSTNAME]
    blocks = [render_final(tls_site(tmp_path, hostname, **PORTS)) for hostname in tls_hosts]
    blocks.append(render_bootstrap(site(hostname="new.example.net", **PORTS)))
    blocks.append(render_final(site(hostname="plain.example.net", **PORTS)))
    assert_nginx_accepts(blocks, tmp_path, tls_files(*tls_hosts))


def test_harness_reports_what_nginx_refuses(tmp_path: Path) -> None:
    # Guards the harness itself: a check that always passed would prove nothing above.
    broken = render_bootstrap(site(**PORTS)).replace("server_name", "server_nam", 1)
    result = nginx_check([broken], tmp_dir=tmp_path)
    assert result.returncode != 0
    assert "server_nam" in result.stderr


def test_nginx_loads_certificates_per_handshake_not_when_it_reads_the_config(
    tmp_path: Path,
) -> None:
    """What keeps certificates out of the cost of a reload: ``nginx -t`` (and a reload)
    does not open the certificate files, so a missing one does not fail it; the layout of
    earlier releases, loaded at reload, does. (The agent checks each pair itself instead.)"""
    config = tls_site(tmp_path, **PORTS)
    for layout in (FinalLayout.ONE_SERVER, FinalLayout.SHARED_CONTEXT, FinalLayout.PER_HANDSHAKE):
        deferred = nginx_check([render_final(config, layout=layout)], tmp_dir=tmp_path / "now")
        assert deferred.returncode == 0, deferred.stderr
    static = nginx_check(
        [render_final(config, layout=FinalLayout.AT_RELOAD)], tmp_dir=tmp_path / "static"
    )
    assert static.returncode != 0
    assert "fullchain.pem" in static.stderr


def test_a_tls_site_names_no_certificate_and_gets_its_hosts_from_the_shared_context(
    tmp_path: Path,
) -> None:
    """No certificate in the site, so nginx builds no TLS context for it; the default server's
    context loads the files of the selected server's first name, the configured hostname
    (never the client's SNI text, which only selects the server)."""
    config = render_final(tls_site(tmp_path, additional_names=("webmail.example.com",)))
    assert "ssl_certificate" not in config and "ssl_session" not in config
    assert "server_name mail.example.com webmail.example.com;" in config
    definitions = definitions_of("/certs/", 8443)
    assert "listen 8443 ssl default_server;" in definitions
    assert "ssl_reject_handshake on;" in definitions
    assert f"ssl_certificate /certs/${CERTIFICATE_NAME_VARIABLE}/tls.crt;" in definitions
    assert f"ssl_certificate_key /certs/${CERTIFICATE_NAME_VARIABLE}/tls.key;" in definitions
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in definitions
    # The directory is the selected server's first name; only a shared HTTPS server's (a name
    # no site has) is looked up by the SNI, in the agent's map of configured names, else "".
    assert (
        f"map $server_name ${CERTIFICATE_NAME_VARIABLE} {{\n"
        f'    "~^{SHARED_HTTPS_NAME_PREFIX}" ${CERTIFICATE_NAME_VARIABLE}_shared;\n'
        "    default $server_name;\n}"
    ) in definitions
    assert (
        f"map $ssl_server_name ${CERTIFICATE_NAME_VARIABLE}_shared {{\n    hostnames;\n"
        '    default "";\n    include /root/https-map.conf;\n}'
    ) in definitions
    assert "$ssl_server_name" not in config
    # The configs of the previous release still use the always-empty variable.
    assert f'map "" ${PER_HANDSHAKE_VARIABLE} {{\n    default "";\n}}' in definitions


@pytest.mark.parametrize(
    ("certificate_dir", "https_port"), [("certs", 443), ("/certs/../etc", 443), ("/c;x", 443)]
)
def test_the_definitions_take_only_a_canonical_directory(
    certificate_dir: str, https_port: int
) -> None:
    with pytest.raises(ValueError, match="http-level definitions"):
        definitions_of(certificate_dir, https_port)


def test_the_previous_layouts_name_the_hosts_fixed_paths(tmp_path: Path) -> None:
    """Byte for byte what earlier releases rendered (still in ConfigMaps after an upgrade, and
    recognised by the agent only if re-rendering gives the same text)."""
    directory = f"{tmp_path.resolve()}/tls/mail.example.com"
    for layout, suffix in (
        (FinalLayout.PER_HANDSHAKE, "$vhost_operator_per_handshake"),
        (FinalLayout.AT_RELOAD, ""),
    ):
        config = render_final(tls_site(tmp_path), layout=layout)
        assert (
            "    server_name mail.example.com;\n\n"
            + (
                "    # Loaded per TLS handshake, not at every reload: the variable (empty, defined"
                " once at http\n"
                "    # level, see vhost_operator.nginx.HTTP_DEFINITIONS) makes nginx read these"
                " two files when\n"
                "    # a client connects: `nginx -t` and reloads do not parse any site's"
                " certificate and key.\n"
                if suffix
                else ""
            )
            + f"    ssl_certificate {directory}/fullchain.pem{suffix};\n"
            f"    ssl_certificate_key {directory}/privkey.pem{suffix};\n"
            '    # Mozilla "intermediate": TLS 1.2 and 1.3 only, with nginx\'s modern default'
            " ciphers.\n"
            "    ssl_protocols TLSv1.2 TLSv1.3;\n"
            "    ssl_prefer_server_ciphers off;\n"
            "    ssl_session_timeout 1d;\n"
            "    # One cache shared by every host's block; same name and size everywhere, so"
            " nginx reuses it.\n"
            "    ssl_session_cache shared:vhost_operator_tls:10m;\n"
            "    ssl_session_tickets off;\n\n"
            "    client_max_body_size 50m;\n"
        ) in config


# --- what the configs say --------------------------------------------------------------------


CHALLENGE_LOCATION = (
    f"location ^~ /.well-known/acme-challenge/ {{\n        proxy_pass http://{CHALLENGE};\n    }}\n"
)
EARLIER_CHALLENGE_LOCATION = (
    "location ^~ /.well-known/acme-challenge/ {\n"
    f"        proxy_pass http://{CHALLENGE};\n"
    "        proxy_set_header Host $host;\n"
    "    }\n"
)
EARLIER = (FinalLayout.SHARED_CONTEXT, FinalLayout.PER_HANDSHAKE, FinalLayout.AT_RELOAD)


def test_every_config_serves_the_challenge_path(tmp_path: Path) -> None:
    """Each config itself, but this release's TLS configs: the agent's shared plain HTTP server
    serves theirs."""
    for layout in FinalLayout:
        own_headers = layout not in (FinalLayout.TLS_ONLY, FinalLayout.ONE_SERVER)
        location = EARLIER_CHALLENGE_LOCATION if own_headers else CHALLENGE_LOCATION
        configs = [render_bootstrap(site(), layout=layout), render_final(site(), layout=layout)]
        tls = render_final(tls_site(tmp_path), layout=layout)
        if layout is FinalLayout.TLS_ONLY:
            assert "acme-challenge" not in tls
        else:
            configs.append(tls)
        for config in configs:
            assert location in config
    assert CHALLENGE_LOCATION in definitions_of()


def test_a_tls_site_is_one_server_on_the_https_port_with_one_location(tmp_path: Path) -> None:
    """What makes a reload cheap at 10,000 sites: one server block and one location per site
    (nginx allocates and merges every module's configuration for each), none with a header table
    of its own (they inherit the definitions'), and none on the plain HTTP port (the agent's
    shared server is theirs). The previous release's form had both ports and three location
    contexts (with the redirect's ``if``); earlier ones two servers and headers in each
    proxied location."""
    config = render_final(tls_site(tmp_path, **PORTS))
    assert config.count("server {") == 1
    assert re.findall(r"^ +listen .*$", config, re.MULTILINE) == ["    listen 8443 ssl http2;"]
    assert re.findall(r"^ +location .*$", config, re.MULTILINE) == ["    location / {"]
    assert "return" not in config and " if " not in config
    assert "proxy_set_header" not in config and "proxy_http_version" not in config
    with_policy = render_final(tls_site(tmp_path, mta_sts=POLICY, **PORTS))
    assert len(re.findall(r"^ +location ", with_policy, re.MULTILINE)) == 2
    previous = render_final(tls_site(tmp_path, **PORTS), layout=FinalLayout.ONE_SERVER)
    assert previous.count("server {") == 1
    assert "    listen 8080;\n    # " in previous and "    listen 8443 ssl http2;\n" in previous
    assert len(re.findall(r"^ +location ", previous, re.MULTILINE)) == 2
    assert "proxy_set_header" not in previous and "proxy_http_version" not in previous
    for quiet in (render_bootstrap(site()), render_final(site())):
        assert "proxy_set_header" not in quiet
    for layout in EARLIER:
        assert render_final(tls_site(tmp_path), layout=layout).count("server {") == 2


def test_the_shared_http_server_redirects_only_its_listed_names() -> None:
    """Plain HTTP of this release's TLS sites: one server, its names the files the agent writes
    (``server_name`` of each site), the redirect to the name nginx selected it by."""
    text = definitions_of(https_port=8443, http_port=8080, names_file="/root/http-names.conf")
    guard = f"server {{\n    listen 8080;\n    server_name {NO_SITE_NAME};\n    return 444;\n}}\n"
    assert guard in text, "the port's default server, should nginx's main config have none"
    shared = text[text.index("server {\n    listen 8080;\n    #") :]
    shared = shared[: shared.index("\n}\n") + 3]
    assert text.index(guard) < text.index(shared)
    assert f"    server_name {SHARED_HTTP_NAME};\n    include /root/http-names.conf;\n" in shared
    assert "return 301 https://$host:8443$request_uri;" in shared
    assert re.findall(r"^ +location .*$", shared, re.MULTILINE) == [
        "    location ^~ /.well-known/acme-challenge/ {",
        "    location / {",
    ]
    assert "return 301 https://$host$request_uri;" in definitions_of(https_port=443)
    names = shared_http_names(site(additional_names=("webmail.example.com",)))
    assert names == "server_name mail.example.com webmail.example.com;\n"
    with pytest.raises(ValueError, match="challenge_upstream"):
        definitions_of(challenge_upstream="x;y:80")
    with pytest.raises(ValueError, match="canonical"):
        definitions_of(names_file="/root/../etc")


def test_bootstrap_holds_everything_else_without_redirect() -> None:
    config = render_bootstrap(site())
    assert "listen 80;" in config
    assert "server_name mail.example.com;" in config
    assert re.search(r"return 503 \"[^\"\n]+\";", config)
    assert "301" not in config
    assert "https://" not in config
    assert "ssl" not in config


def test_final_redirects_plain_http_to_https(tmp_path: Path) -> None:
    previous = render_final(tls_site(tmp_path), layout=FinalLayout.ONE_SERVER)
    assert (
        f"    if (${REDIRECT_VARIABLE}) {{\n"
        "        return 301 https://mail.example.com$request_uri;\n"
        "    }\n"
    ) in previous
    assert "listen 443 ssl http2;" in previous
    for layout in EARLIER:
        earlier = render_final(tls_site(tmp_path), layout=layout)
        assert "return 301 https://mail.example.com$request_uri;" in earlier
        assert REDIRECT_VARIABLE not in earlier
    # This release's: the agent's shared server redirects (test_the_shared_http_server_...).
    assert REDIRECT_VARIABLE not in render_final(tls_site(tmp_path))


def test_the_redirect_spares_only_plain_http_challenges() -> None:
    definitions = definitions_of()
    assert (
        f"map $scheme ${REDIRECT_VARIABLE} {{\n"
        f"    http ${REDIRECT_VARIABLE}_path;\n"
        '    default "";\n'
        "}\n"
        f"map $uri ${REDIRECT_VARIABLE}_path {{\n"
        '    ~^/\\.well-known/acme-challenge/ "";\n'
        "    default 1;\n"
        "}\n"
    ) in definitions


def test_redirect_names_a_non_default_https_port(tmp_path: Path) -> None:
    for layout in (FinalLayout.ONE_SERVER, *EARLIER):
        config = render_final(tls_site(tmp_path, http_port=8080, https_port=8443), layout=layout)
        assert "listen 8080;" in config
        assert "listen 8443 ssl http2;" in config
        assert "return 301 https://mail.example.com:8443$request_uri;" in config


FORWARDED_HEADERS = (
    "proxy_http_version 1.1;\n"
    "proxy_set_header Host $host;\n"
    "proxy_set_header X-Real-IP $remote_addr;\n"
    "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
    "proxy_set_header X-Forwarded-Proto $scheme;\n"
    "proxy_set_header X-Forwarded-Host $host;\n"
    "proxy_set_header X-Forwarded-Port $server_port;\n"
)


def test_the_definitions_set_the_forwarded_headers_for_every_site(tmp_path: Path) -> None:
    assert FORWARDED_HEADERS in definitions_of()
    for config in (render_final(site()), render_final(tls_site(tmp_path))):
        assert f"    location / {{\n        proxy_pass {UPSTREAM};\n    }}\n" in config
        assert "client_max_body_size 50m;" in config


def test_earlier_layouts_set_their_own_forwarded_headers(tmp_path: Path) -> None:
    """A location with one proxy_set_header inherits none: the earlier forms set them all."""
    for layout in EARLIER:
        for config in (
            render_final(site(), layout=layout),
            render_final(tls_site(tmp_path), layout=layout),
        ):
            assert textwrap.indent(FORWARDED_HEADERS, " " * 8) in config


def test_http_only_final_has_no_tls_and_no_redirect() -> None:
    config = render_final(site())
    assert "ssl" not in config
    assert "301" not in config


@pytest.mark.parametrize(
    ("upstream", "proxy_pass"),
    [
        ("http://webmail.mail.svc:8000", "http://webmail.mail.svc:8000"),
        # A bare "/" would make nginx pass the decoded URI instead of the original one.
        ("http://webmail.mail.svc:8000/", "http://webmail.mail.svc:8000"),
        # Without the trailing slash nginx would turn /inbox into /appinbox.
        ("http://webmail:8000/app", "http://webmail:8000/app/"),
        ("https://10.0.0.7/app/", "https://10.0.0.7/app/"),
    ],
)
def test_proxy_pass_target(upstream: str, proxy_pass: str) -> None:
    assert f"proxy_pass {proxy_pass};\n" in render_final(site(upstream=upstream))


def test_https_upstream_gets_sni() -> None:
    # At http level: it does nothing for a plain HTTP upstream.
    assert "\nproxy_ssl_server_name on;\n" in definitions_of()
    assert "proxy_ssl_server_name" not in render_final(site(upstream="https://webmail.svc"))
    earlier = FinalLayout.SHARED_CONTEXT
    assert "proxy_ssl_server_name on;" in render_final(
        site(upstream="https://webmail.svc"), layout=earlier
    )
    assert "proxy_ssl_server_name" not in render_final(
        site(upstream="http://webmail.svc"), layout=earlier
    )


def test_each_config_says_it_is_generated_for_its_host(tmp_path: Path) -> None:
    for config in (
        render_bootstrap(site()),
        render_final(site()),
        render_final(tls_site(tmp_path)),
    ):
        assert config.startswith("# Generated by vhost-operator for mail.example.com: ")
        assert config.endswith("}\n")
        assert "\n\n\n" not in config


# --- validation ------------------------------------------------------------------------------

HOSTILE_STRINGS = [
    "mail.example.com\n",  # hostname_problem alone lets a trailing newline through
    "mail.example.com;",
    "mail.example.com { }",
    'mail.example.com"',
    "mail.example.com'",
    "mail .example.com",
    "$host.example.com",
]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        *[(hostile, "hostname") for hostile in HOSTILE_STRINGS],
        ("Mail.Example.com", "must be lowercase"),
        ("mail.example.com.", "must not end with a dot"),
        ("localhost", "fully qualified"),
        ("", "must not be empty"),
        ("-mail.example.com", "not a valid hostname"),
        ("mail.example.com\nserver_name evil.com", "hostname"),
    ],
)
def test_hostile_hostname_is_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        site(hostname=value)


@pytest.mark.parametrize(
    "value",
    [
        "127.0.0.1:8089\n",
        "127.0.0.1:8089;",
        "127.0.0.1:8089 ",
        "127.0.0.1:8089}",
        "127.0.0.1:8089/path",
        "$host:8089",
        "Responder.svc:8089",
        "responder.svc.:8089",
        "responder.svc",
        "responder.svc:0",
        "responder.svc:65536",
        "responder.svc:080",
        "responder.svc:-1",
        "http://responder.svc:8089",
        "999.0.0.1:8089",
        "[::1]:8089",
        "responder.svc:8089:1",
    ],
)
def test_hostile_challenge_upstream_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="challenge_upstream"):
        site(challenge_upstream=value)


@pytest.mark.parametrize(
    "value",
    [
        "http://webmail.svc:8000\n",
        "http://webmail.svc:8000;",
        "http://webmail.svc:8000/ x",
        "http://webmail.svc:8000/$uri",
        "http://webmail.svc:8000/a;b",
        "http://webmail.svc:8000/{a}",
        "http://webmail.svc:8000/a'b",
        'http://webmail.svc:8000/a"b',
        "http://webmail.svc:8000/?q=1",
        "http://webmail.svc:8000/#top",
        "http://user@webmail.svc:8000",
        "http://Webmail.svc",
        "http://webmail.svc.",
        "http://webmail.svc:",
        "http://webmail.svc:99999",
        "ftp://webmail.svc",
        "unix:/run/webmail.sock",
        "webmail.svc:8000",
        "http://",
    ],
)
def test_hostile_upstream_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="upstream"):
        site(upstream=value)


@pytest.mark.parametrize(
    "value",
    [
        "relative/fullchain.pem",
        "/etc/ssl/full chain.pem",
        "/etc/ssl/fullchain.pem;",
        "/etc/ssl/fullchain.pem\n",
        "/etc/ssl/$host.pem",
        "/etc/ssl/{a}.pem",
        "/etc/ssl/'a'.pem",
        "/etc/ssl/../../root/key.pem",
        "/etc//ssl/fullchain.pem",
        "/etc/ssl/",
        "",
    ],
)
@pytest.mark.parametrize("field", ["certificate_path", "key_path"])
def test_hostile_certificate_paths_are_refused(field: str, value: str) -> None:
    paths = {"certificate_path": "/tls/fullchain.pem", "key_path": "/tls/privkey.pem"}
    paths[field] = value
    with pytest.raises(ValueError, match="path"):
        site(**paths)


@pytest.mark.parametrize("field", ["http_port", "https_port"])
@pytest.mark.parametrize("value", [0, -1, 65536, "80", True, 80.0])
def test_bad_ports_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        site(**{field: value})


def test_certificate_and_key_come_together() -> None:
    with pytest.raises(ValueError, match="together"):
        site(certificate_path="/tls/fullchain.pem")
    with pytest.raises(ValueError, match="together"):
        site(key_path="/tls/privkey.pem")


def test_http_and_https_ports_differ() -> None:
    with pytest.raises(ValueError, match="must differ"):
        site(http_port=8443, https_port=8443)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="server_name"):
        site(server_name="evil.example.com")


def test_site_config_is_frozen() -> None:
    config = site()
    with pytest.raises(ValueError, match="frozen"):
        config.hostname = "evil.example.com"  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(
            {"challenge_upstream": "vhost-operator-challenges.vhost-operator.svc:8089"},
            id="challenge-upstream-service-name",
        ),
        pytest.param({"challenge_upstream": "localhost:65535"}, id="challenge-upstream-top-port"),
        pytest.param({"challenge_upstream": "10.96.0.10:1"}, id="challenge-upstream-ip"),
        pytest.param({"upstream": "https://webmail"}, id="upstream-https-single-label"),
        pytest.param(
            {"upstream": "http://10.0.0.7:8000/mail/app_v2.1~x-y/"}, id="upstream-ip-and-path"
        ),
        pytest.param({"hostname": LONGEST_HOSTNAME}, id="hostname-253-characters"),
        pytest.param({"hostname": "xn--bcher-kva.example"}, id="hostname-punycode"),
        pytest.param(
            {"certificate_path": "/etc/nginx/tls/a.b_c-d.pem", "key_path": "/etc/nginx/tls/k.pem"},
            id="certificate-paths",
        ),
    ],
)
def test_reasonable_values_are_accepted(overrides: dict[str, Any]) -> None:
    site(**overrides)


# --- config_hash -----------------------------------------------------------------------------


def test_config_hash_is_stable_and_short(tmp_path: Path) -> None:
    config = render_final(tls_site(tmp_path))
    assert config_hash(config) == config_hash(render_final(tls_site(tmp_path)))
    assert re.fullmatch(r"[0-9a-f]{16}", config_hash(config))


def test_config_hash_tells_configs_apart(tmp_path: Path) -> None:
    configs = {
        render_bootstrap(site()),
        render_final(site()),
        render_final(tls_site(tmp_path)),
        render_final(site(hostname="other.example.com")),
        render_final(site(upstream="http://127.0.0.1:8001")),
    }
    assert len({config_hash(config) for config in configs}) == len(configs)


# -- recognising what the operator rendered (the nginx agent's check) ---------------------------

CERTS = "/etc/nginx/vhost-operator/certs"


def certified(hostname: str = "mail.example.com", **overrides: Any) -> SiteConfig:
    directory = f"{CERTS}/{hostname}"
    return site(
        hostname=hostname,
        certificate_path=f"{directory}/tls.crt",
        key_path=f"{directory}/tls.key",
        **overrides,
    )


@pytest.mark.parametrize(
    "config",
    [
        site(),
        certified(),
        certified(https_port=443, http_port=80, max_body_size_mib=7),
        certified(upstream="https://webmail.mail.svc:8443/app/"),
        site(upstream="https://app.example.com", challenge_upstream="10.0.0.1:1"),
        certified(hostname=LONGEST_HOSTNAME),
    ],
)
def test_every_rendered_config_is_recognised(config: SiteConfig) -> None:
    # Also the layouts of earlier releases, still in ConfigMaps after an upgrade.
    earlier = [render_final(config, layout=layout) for layout in FinalLayout]
    for text in (render_bootstrap(config), *earlier):
        recognised = recognise(text, config.hostname, CERTS)
        assert recognised is not None
        assert render_final(recognised.site) == render_final(config) or text == render_bootstrap(
            recognised.site
        )


def test_a_config_for_another_hostname_is_not_recognised() -> None:
    assert recognise(render_final(certified("victim.example.com")), "me.example.com", CERTS) is None


def _edited(old: str, new: str, layout: FinalLayout = FinalLayout.SHARED_CONTEXT) -> str:
    text = render_final(certified(), layout=layout)
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    "config",
    [
        # The hijack of issue 13: another host's name, and the certificate directory served.
        pytest.param(
            _edited("server_name mail.example.com;", "server_name victim.example.com;"),
            id="another-hosts-name",
        ),
        pytest.param(
            _edited(
                "    client_max_body_size 50m;\n",
                f"    client_max_body_size 50m;\n    location /k/ {{ alias {CERTS}/; }}\n",
            ),
            id="certificates-served",
        ),
        pytest.param(
            _edited(
                "    ssl_session_tickets off;\n",
                f"    ssl_session_tickets off;\n    location /k/ {{ alias {CERTS}/; }}\n",
                FinalLayout.PER_HANDSHAKE,
            ),
            id="certificates-served-by-a-previous-layout",
        ),
        pytest.param(
            _edited(
                f"{CERTS}/mail.example.com/tls.key",
                f"{CERTS}/victim.example.com/tls.key",
                FinalLayout.PER_HANDSHAKE,
            ),
            id="another-hosts-key",
        ),
        pytest.param(
            _edited(
                "    client_max_body_size 50m;\n",
                f"    ssl_certificate {CERTS}/victim.example.com/tls.crt;\n"
                f"    ssl_certificate_key {CERTS}/victim.example.com/tls.key;\n"
                "    client_max_body_size 50m;\n",
            ),
            id="a-certificate-of-its-own",
        ),
        pytest.param(
            _edited("proxy_http_version 1.1;", "proxy_http_version 1.1; include /etc/passwd;"),
            id="include",
        ),
        pytest.param(_edited("listen 443 ssl http2;", "listen 443 ssl http2; root /;"), id="root"),
        pytest.param(_edited("# Do not edit", "# Do edit"), id="header-edited"),
        pytest.param(render_final(certified()) + "server { listen 81; }\n", id="extra-server"),
        pytest.param(render_final(certified()).replace("\n", "\r\n"), id="crlf"),
    ],
)
def test_anything_else_in_a_config_is_not_recognised(config: str) -> None:
    assert recognise(config, "mail.example.com", CERTS) is None


def test_certificates_outside_the_agents_directory_are_not_recognised() -> None:
    # Only the layouts of earlier releases name paths; this release's configs name none.
    for layout in (FinalLayout.PER_HANDSHAKE, FinalLayout.AT_RELOAD):
        config = render_final(certified(), layout=layout)
        assert recognise(config, "mail.example.com", "/tmp/certs") is None
    assert recognise(render_final(certified()), "mail.example.com", CERTS) is not None


def test_templates_are_read_once_not_looked_at_per_render(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering is CPU on the operator's event loop: after the first render of each template,
    no further look at its file (Jinja's default checks its time at every use)."""
    render_bootstrap(site())
    render_final(site())
    looks: list[object] = []

    def counted(look: Any) -> Any:
        def looked(path: Any) -> Any:
            looks.append(path)
            return look(path)

        return looked

    monkeypatch.setattr(os.path, "getmtime", counted(os.path.getmtime))
    monkeypatch.setattr(os.path, "isfile", counted(os.path.isfile))
    assert render_bootstrap(site()) and render_final(site())
    assert looks == []
