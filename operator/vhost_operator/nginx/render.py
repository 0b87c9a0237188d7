"""Render nginx ``server`` blocks for one host: the bootstrap config and the final config.

Templates are Jinja2 with autoescaping off, because nginx syntax is not HTML. Safety comes from
the other side instead: every value that reaches a template has passed an allow-list in
:class:`SiteConfig`, so no value can carry ``;``, braces, quotes, whitespace, newlines or ``$``
(which would start an nginx variable) into the config. Validators use ``re.fullmatch``, never
``^...$``: ``$`` also matches before a trailing newline, which is exactly the injection to stop.

Loading the packaged templates is the only I/O here.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import ipaddress
import re
from collections.abc import Callable
from typing import Final, Self

import jinja2
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vhost_operator.resources.hostnames import DNS_LABEL, Hostname, additional_names_problem
from vhost_operator.resources.mtasts import MtaStsPolicy, parse_policy

SERVER_NAMES_HASH_BUCKET_SIZE: Final = 512
"""What the ``http {}`` context that includes these server blocks must set as
``server_names_hash_bucket_size``. nginx's default (the CPU cache line, 64) refuses to start with
a hostname longer than about 50 characters; a 253-character hostname, the RFC 1123 maximum, needs
512 (256 is not enough once nginx adds its per-entry overhead)."""

SERVER_NAMES_HASH_MAX_SIZE: Final = 16384
"""What that ``http {}`` context must set as ``server_names_hash_max_size``. nginx's default (512)
cannot hold thousands of names in buckets of 512 bytes: it warns "could not build optimal
server_names_hash" and ignores the bucket size. With more names than 163, a maximum above 10,000
makes nginx try a table of ``max - 1000`` buckets first (one try instead of hundreds), a few
hundred KiB, which holds tens of thousands of names."""

PER_HANDSHAKE_VARIABLE: Final = "vhost_operator_per_handshake"
"""Always empty; the final configs of the previous release append it to their certificate and
key paths (:attr:`FinalLayout.PER_HANDSHAKE`): a variable in ``ssl_certificate`` makes nginx
(>= 1.15.9) load the files per TLS handshake instead of at every reload. Still defined by
:func:`http_definitions`, so those configs keep working until their hosts are provisioned again."""


REDIRECT_VARIABLE: Final = "vhost_operator_to_https"
"""Defined by :func:`http_definitions`: ``1`` for a plain HTTP request outside the ACME challenge
path, else empty. The previous release's final TLS config (one server for both ports,
:attr:`FinalLayout.ONE_SERVER`) redirects when it is set."""


class FinalLayout(enum.Enum):
    """The form of a release's configs. Earlier forms are still recognised and served as they
    are, so the hosts not provisioned since an upgrade keep working."""

    TLS_ONLY = "tls only"
    """This release: a TLS site is one ``server`` on the HTTPS port only, with ``location /``
    (and the MTA-STS policy's ``location =`` when it has one) and nothing else. Plain HTTP for
    every such site is one server the nginx agent writes (:func:`http_definitions`): the
    challenge path to the responder, everything else redirected to HTTPS; its names are the
    sites' names, an entry per site (:func:`shared_http_names`) the agent writes and removes
    with the site; where a site differs from the others only in its names, its HTTPS is a
    shared server too (:class:`SharedHttpsServer`). The site's config still says which HTTP
    port it expects (a comment), so the agent can refuse a config that disagrees with its
    setting; it does not name the challenge responder (the agent's setting). A site is then
    one server block and one location context for nginx to allocate and merge
    (:attr:`ONE_SERVER` had three: the redirect's ``if``, the challenge path, ``/``), and the
    port-80 server list nginx checks each ``listen`` against does not grow with the sites.
    TLS contexts as in :attr:`SHARED_CONTEXT`, headers as in :attr:`ONE_SERVER`."""

    ONE_SERVER = "one server"
    """The previous release: a TLS site is one ``server`` for both ports, which redirects plain
    HTTP (but the challenge path) to HTTPS with an ``if`` on :data:`REDIRECT_VARIABLE`; no
    location sets a ``proxy_set_header`` of its own: they all inherit the ones
    :func:`http_definitions` sets at http level. nginx's cost of loading a config is mostly per
    server block and per location (every HTTP module's configuration allocated and merged for
    each), and a location with headers of its own also builds its own header table: measured
    at 10,000 TLS sites, ``nginx -t`` took 1.54 CPU-s and 540 MiB with :attr:`SHARED_CONTEXT`,
    0.92 CPU-s and 351 MiB with this one. Its bootstrap and HTTP-only configs, which have no
    headers of their own either, are also this release's. TLS contexts as in
    :attr:`SHARED_CONTEXT`."""

    SHARED_CONTEXT = "shared context"
    """An earlier release: a TLS site is two servers (one per port), with ``proxy_set_header``
    in each proxied location. The site names no certificate, so nginx (>= 1.19.4) builds no
    OpenSSL context for it; the port's default server, :func:`http_definitions`, holds the one
    context every site shares and loads ``<certificate_dir>/$server_name/tls.{crt,key}`` per
    handshake. ``$server_name`` is the first ``server_name`` of the server the client's SNI
    selected: the configured hostname, never the client's text. A reload then builds one context
    whatever the number of TLS sites (a context per site cost about 0.2 ms of nginx's CPU per
    site and load, and about 130 KiB of its memory per site, measured at 10,000 sites)."""

    PER_HANDSHAKE = "per handshake"
    """An earlier release: as :attr:`SHARED_CONTEXT`, but each site its own context, its fixed
    paths with :data:`PER_HANDSHAKE_VARIABLE` appended (loaded per handshake)."""

    AT_RELOAD = "at reload"
    """Earlier releases: as :attr:`PER_HANDSHAKE`, certificates loaded at every reload."""


SHARED_HTTP_NAME: Final = "_vhost-operator:shared-http"
"""The first ``server_name`` of the shared plain HTTP server (:func:`http_definitions`): a name
no request can carry (nginx cuts the Host at ``:`` before it looks for a server), so that server
never takes a request without a Host (nginx gives a server without names the empty name) while
no TLS site is listed in it."""


NO_SITE_NAME: Final = "_vhost-operator:no-site"
"""The ``server_name`` of the server :func:`http_definitions` puts before the shared plain HTTP
server, another name no request carries: it is the HTTP port's default server only when nginx's
main config has none of its own there."""


SHARED_HTTPS_NAME_PREFIX: Final = "_vhost-operator:shared-https:"
"""The first ``server_name`` of a shared HTTPS server (:func:`render_shared_https_server`),
followed by its :attr:`SharedHttpsServer.key`: a name no request carries, one per server."""

CERTIFICATE_NAME_VARIABLE: Final = "vhost_operator_certificate_name"
"""Defined by :func:`http_definitions`: the directory name of the certificate of the site a
handshake's SNI selected."""


def http_definitions(
    certificate_dir: str,
    https_port: int,
    *,
    http_port: int,
    challenge_upstream: str,
    names_file: str,
    https_map_file: str,
) -> str:
    """Text that must be in the ``http {}`` context including the site configs; the nginx agent
    writes it into ``sites-enabled/`` next to the sites. It holds:

    - the proxy headers every site's locations inherit (a site's configs set none, so nginx
      builds one header table for all of them). They apply to every server of that ``http {}``
      block that sets no ``proxy_set_header`` of its own (a level that sets one inherits none);
    - the map behind :data:`REDIRECT_VARIABLE`, which the TLS sites redirect plain HTTP by
      (without it nginx refuses them: "unknown variable");
    - the HTTPS port's default server (nginx's main config must have none of its own there):
      unknown names and handshakes without SNI are refused, and for every site it is the one TLS
      context, whose certificate callback reads ``<certificate_dir>/<the selected server's first
      name>/tls.{crt,key}``. Without it nginx refuses the TLS sites ("no ssl_certificate is
      defined for the listen ... ssl");
    - plain HTTP on ``http_port`` for every TLS site of :attr:`FinalLayout.TLS_ONLY`: one
      server whose names are those sites' names, from ``names_file`` (the agent's entries of
      :func:`shared_http_names`, one per site). The challenge path goes to ``challenge_upstream``,
      everything else is redirected to ``https://$host[:https_port]``: ``$host`` is the name
      nginx selected this server by, so one of those files' names (lowercased, without port or
      trailing dot), never a name the client made up. Unknown names go to the port's default
      server, which nginx's main config provides; should it have none, the one before the
      shared server is (it closes the connection: 444), never the shared server;
    - the maps that give the certificate directory of a site listed in a shared HTTPS server
      (:func:`render_shared_https_server`), whose first ``server_name`` is that server's: the
      one of the name the client's SNI selected it by, from ``https_map_file`` (the agent's
      entries of :func:`shared_https_map`, one per site)."""
    directory = certificate_dir.rstrip("/")
    # The same allow-lists as the sites' values: this text is pasted into nginx's config too.
    problem = (
        _file_path_problem(f"{directory}/tls.crt")
        or _file_path_problem(names_file)
        or _file_path_problem(https_map_file)
        or _port_problem(str(https_port))
        or _port_problem(str(http_port))
        or _challenge_upstream_problem(challenge_upstream)
    )
    if problem:
        raise ValueError(f"cannot write nginx's http-level definitions: {problem}")
    https_suffix = "" if https_port == 443 else f":{https_port}"
    return f"""\
# Generated by vhost-operator: what its site configs need at http level. Do not edit.

# What every site's proxied locations send: they set no proxy_set_header of their own, so they
# inherit these (a location with headers of its own would make nginx build a header table for
# it at every load). The web app needs the public hostname (tenancy) and the client's address
# and scheme; the challenge responder the hostname. (Configs of earlier releases set their own.)
proxy_http_version 1.1;
proxy_set_header Host $host;
proxy_set_header X-Real-IP $remote_addr;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Forwarded-Proto $scheme;
proxy_set_header X-Forwarded-Host $host;
proxy_set_header X-Forwarded-Port $server_port;
# Send SNI to an HTTPS upstream; without it many TLS servers pick the wrong certificate. (Has no
# effect on a plain HTTP upstream.)
proxy_ssl_server_name on;

# A TLS site of the previous release is one server for both ports: it redirects a plain HTTP
# request to HTTPS when this is set, for every path but the ACME challenges' (location
# "^~ /.well-known/acme-challenge/"). Kept until they are all replaced.
map $scheme ${REDIRECT_VARIABLE} {{
    http ${REDIRECT_VARIABLE}_path;
    default "";
}}
map $uri ${REDIRECT_VARIABLE}_path {{
    ~^/\\.well-known/acme-challenge/ "";
    default 1;
}}

# The directory of the certificate of the site the client's SNI selected: for a server of its
# own, its first server_name, its hostname (never the client's text). A shared HTTPS server's first
# name is its own: there, the hostname of the site whose name the SNI is (nginx looks it up in
# lowercase, without a trailing dot), from the agent's entries, one per listed site.
map $server_name ${CERTIFICATE_NAME_VARIABLE} {{
    "~^{SHARED_HTTPS_NAME_PREFIX}" ${CERTIFICATE_NAME_VARIABLE}_shared;
    default $server_name;
}}
map $ssl_server_name ${CERTIFICATE_NAME_VARIABLE}_shared {{
    hostnames;
    default "";
    include {https_map_file};
}}

# The default server of the HTTPS port, and the one TLS context of every site there (the sites
# name no certificate, so nginx builds none for them: a reload builds this one, whether there
# are 10 or 10,000 sites). nginx asks this context for a certificate once the client's SNI has
# selected a site, and the files are read per handshake from the directory the agent writes.
server {{
    listen {https_port} ssl default_server;
    server_name _;
    # A name nginx serves no site for, or no name at all: refuse the handshake.
    ssl_reject_handshake on;
    ssl_certificate {directory}/${CERTIFICATE_NAME_VARIABLE}/tls.crt;
    ssl_certificate_key {directory}/${CERTIFICATE_NAME_VARIABLE}/tls.key;
    # Mozilla "intermediate": TLS 1.2 and 1.3 only, with nginx's modern default ciphers.
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers off;
    ssl_session_timeout 1d;
    ssl_session_cache shared:vhost_operator_tls:10m;
    ssl_session_tickets off;
    # A request whose Host names no site this connection could have been made for.
    return 421;
}}

# Should nginx's main config have no default server on the plain HTTP port, this one is its
# default (the first server on the port), not the shared server below: a name no site serves is
# then closed without an answer, never redirected.
server {{
    listen {http_port};
    server_name {NO_SITE_NAME};
    return 444;
}}

# Plain HTTP for every TLS site of this release (their own configs listen on the HTTPS port only):
# one server, whatever the number of sites. Its names are theirs, an entry per site: $host is
# then always the configured name nginx selected this server by (lowercased, without port), so
# the redirect never names a host the client made up. Unknown names go to the port's default
# server. (TLS sites of earlier releases, bootstrap and HTTP-only configs have servers of their
# own on this port; a host is listed here only while its config is of this release's form.)
server {{
    listen {http_port};
    # A name no request carries (nginx cuts the Host at ":"): with no site listed, a server
    # without names would take the requests that have no Host.
    server_name {SHARED_HTTP_NAME};
    include {names_file};

    # ACME HTTP-01 challenges (renewals) go to the operator's responder, which holds the tokens.
    location ^~ /.well-known/acme-challenge/ {{
        proxy_pass http://{challenge_upstream};
    }}

    location / {{
        return 301 https://$host{https_suffix}$request_uri;
    }}
}}

# Always empty. The final configs of an earlier release name it in ssl_certificate, which
# makes nginx load their certificates per handshake; kept until they are all replaced.
map "" ${PER_HANDSHAKE_VARIABLE} {{
    default "";
}}
"""


CONFIG_HASH_LENGTH: Final = 16
"""Hex digits kept from the sha256 of a config: 64 bits, plenty to tell configs apart in status."""

# Upstream hosts may be single-label (``localhost``, a Service name in the same namespace), unlike
# the public hostname, which must be fully qualified.
_DNS_NAME = re.compile(rf"{DNS_LABEL}(?:\.{DNS_LABEL})*")
_LOOKS_NUMERIC = re.compile(r"[0-9.]+")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_HOST_PORT = re.compile(r"(?P<host>[^:]+):(?P<port>[^:]+)")
_URL = re.compile(r"(?P<scheme>https?)://(?P<host>[^:/]+)(?::(?P<port>[^/]*))?(?P<path>/.*)?")
_URL_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")
_FILE_PATH = re.compile(r"/[A-Za-z0-9._/-]+")
_MAX_DNS_NAME = 253


def _host_problem(host: str) -> str | None:
    """Why ``host`` is no acceptable upstream host (DNS name or dotted IPv4), or ``None``."""
    if _LOOKS_NUMERIC.fullmatch(host):
        # All digits and dots: it must then be a real IPv4 address, not "999.1.1.1" or "1.2.3"
        # (which a resolver might still accept in surprising ways).
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not a valid IPv4 address"
        return None
    if len(host) > _MAX_DNS_NAME or not _DNS_NAME.fullmatch(host):
        return f"{host!r} is not a lowercase DNS name or IPv4 address"
    return None


def _port_problem(port: str) -> str | None:
    """Why ``port`` is no port number in 1-65535 written without sign or leading zero."""
    if not _PORT.fullmatch(port) or int(port) > 65535:
        return f"port {port!r} must be a number from 1 to 65535"
    return None


def _challenge_upstream_problem(value: str) -> str | None:
    match = _HOST_PORT.fullmatch(value)
    if not match:
        return f"challenge_upstream {value!r} must look like host:port"
    problem = _host_problem(match["host"]) or _port_problem(match["port"])
    return f"challenge_upstream {value!r}: {problem}" if problem else None


def _file_path_problem(path: str) -> str | None:
    if not _FILE_PATH.fullmatch(path):
        return f"{path!r} must be an absolute path of letters, digits and . _ / - only"
    segments = path.split("/")[1:]
    if any(segment in ("", ".", "..") for segment in segments):
        # Canonical paths only: no "//", "/./" or "/../", and no trailing slash (it names a file).
        return f"{path!r} must be a canonical file path (no empty, '.' or '..' segments)"
    return None


class SiteConfig(BaseModel):
    """Everything the templates need for one host, validated so it is safe to paste into nginx."""

    # strict: no silent coercion ("80" is not a port, True is not 1); extra="forbid": a typo in a
    # field name fails loudly instead of rendering a default.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    hostname: Hostname
    """The public hostname (first ``server_name``): lowercase, fully qualified, RFC 1123."""
    additional_names: tuple[Hostname, ...] = ()
    """More ``server_name`` names: every name of the host's certificate (HTTP-01 needs port 80
    for each, and each is served like the hostname). Redirects still name the hostname."""
    challenge_upstream: str
    """``host:port`` of the operator's HTTP-01 challenge responder."""
    upstream: str
    """URL of the mail web app: ``http(s)://host[:port][/path]``."""
    http_port: int = Field(default=80, ge=1, le=65535)
    https_port: int = Field(default=443, ge=1, le=65535)
    certificate_path: str | None = None
    """Absolute path of the full-chain PEM as nginx sees it; ``None`` renders HTTP only."""
    key_path: str | None = None
    """Absolute path of the private key PEM; set exactly when ``certificate_path`` is."""
    mta_sts: MtaStsPolicy | None = None
    """The MTA-STS policy served at ``/.well-known/mta-sts.txt`` over HTTPS (RFC 8461), or
    ``None``. Its values are allow-listed (``resources.mtasts``), so the text is safe to quote."""
    max_body_size_mib: int = Field(default=50, ge=1, le=10_240)
    """``client_max_body_size`` towards the web app. nginx's default of 1 MiB would refuse most
    mail attachments with a bare 413."""

    @field_validator("challenge_upstream")
    @classmethod
    def _valid_challenge_upstream(cls, value: str) -> str:
        problem = _challenge_upstream_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("upstream")
    @classmethod
    def _valid_upstream(cls, value: str) -> str:
        match = _URL.fullmatch(value)
        if not match:
            raise ValueError(f"upstream {value!r} must look like http(s)://host[:port][/path]")
        problem = _host_problem(match["host"])
        if not problem and match["port"] is not None:
            problem = _port_problem(match["port"])
        if not problem and match["path"] is not None and not _URL_PATH.fullmatch(match["path"]):
            problem = "the path may contain only letters, digits and . _ ~ / -"
        if problem:
            raise ValueError(f"upstream {value!r}: {problem}")
        return value

    @field_validator("certificate_path", "key_path")
    @classmethod
    def _valid_file_path(cls, value: str | None) -> str | None:
        if value is not None:
            problem = _file_path_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names_problem = additional_names_problem(self.hostname, self.additional_names)
        if names_problem is not None:
            raise ValueError(names_problem)
        if self.mta_sts is not None and self.certificate_path is None:
            raise ValueError("an MTA-STS policy is served over HTTPS only: it needs a certificate")
        if (self.certificate_path is None) != (self.key_path is None):
            raise ValueError("certificate_path and key_path must be given together or not at all")
        if self.http_port == self.https_port:
            # One port cannot be both plain HTTP and TLS: nginx applies "ssl" to every server
            # block listening on that port.
            raise ValueError(f"http_port and https_port must differ (both are {self.http_port})")
        return self

    @property
    def has_certificate(self) -> bool:
        return self.certificate_path is not None


def render_bootstrap(site: SiteConfig, *, layout: FinalLayout = FinalLayout.TLS_ONLY) -> str:
    """The config before a certificate exists: challenges are answered, all else gets a 503.

    No redirect to HTTPS here: there is no certificate yet, so the redirect would lead nowhere.
    ``layout``: which release's form (they differ in whether the challenge location sets its
    own ``Host`` header).
    """
    return _render("bootstrap.conf.j2", site, kind="bootstrap", layout=layout)


def render_final(site: SiteConfig, *, layout: FinalLayout = FinalLayout.TLS_ONLY) -> str:
    """The config once provisioning is done: HTTPS with the certificate, or HTTP only without.

    Both variants keep serving the challenge path over HTTP, so renewals work: the TLS site
    through the agent's shared plain HTTP server (:func:`http_definitions`), which lists it by
    :func:`shared_http_names`. The TLS site shares the one TLS context of
    :func:`http_definitions`, which loads the certificate at ``<certificate_dir>/<hostname>/``
    per handshake; the other ``layout`` values are those of earlier releases (still applied by
    the agent, and measured against by the bench).
    """
    if site.has_certificate:
        return _render(_FINAL_TEMPLATES[layout], site, kind="final", layout=layout)
    return _render("final-http.conf.j2", site, kind="final HTTP-only", layout=layout)


def shared_http_names(site: SiteConfig) -> str:
    """The file that lists ``site`` in the shared plain HTTP server of :func:`http_definitions`
    (for a TLS site of :attr:`FinalLayout.TLS_ONLY`): its ``server_name`` directive."""
    return f"server_name {site.hostname}{_more_server_names(site)};\n"


@dataclasses.dataclass(frozen=True)
class SharedHttpsServer:
    """What a TLS site of :attr:`FinalLayout.TLS_ONLY` without an MTA-STS policy is but for its
    names: such sites with the same values can share one HTTPS server, which lists their names
    (:func:`render_shared_https_server`). nginx's cost of loading a config grows with every
    server block and location, not with every name: measured at 10,000 sites, ``nginx -t``
    took 0.01-0.02 CPU-s and 14 MB with them listed in one server, 0.40-1.48 CPU-s and 195 MB
    with a block each."""

    https_port: int
    upstream: str
    max_body_size_mib: int

    @classmethod
    def of(cls, site: SiteConfig) -> Self:
        return cls(site.https_port, site.upstream, site.max_body_size_mib)

    @functools.cached_property
    def key(self) -> str:
        """Names this server's files: the same values, the same key, in every release."""
        values = f"{self.https_port} {self.upstream} {self.max_body_size_mib}"
        return hashlib.sha256(values.encode()).hexdigest()[:CONFIG_HASH_LENGTH]


def render_shared_https_server(server: SharedHttpsServer, names_file: str) -> str:
    """The HTTPS server of the sites whose ``server_name`` lines (:func:`shared_http_names`)
    are in ``names_file``. Its certificate is the site's whose name the SNI is
    (:func:`http_definitions`)."""
    problem = _file_path_problem(names_file)
    if problem:
        raise ValueError(f"cannot write a shared HTTPS server: {problem}")
    context = _layout_context(FinalLayout.TLS_ONLY)
    context.update(
        name=f"{SHARED_HTTPS_NAME_PREFIX}{server.key}",
        names_file=names_file,
        https_port=server.https_port,
        max_body_size_mib=server.max_body_size_mib,
        proxy_pass=_proxy_pass_target(server.upstream),
        upstream_is_https=server.upstream.startswith("https://"),
    )
    return _environment().get_template("shared-tls.conf.j2").render(context)


def shared_https_map(site: SiteConfig) -> str:
    """The lines that give the certificate directory of each of ``site``'s names, for the map
    of :func:`http_definitions` (a site listed in a shared HTTPS server)."""
    return "".join(f"{name} {site.hostname};\n" for name in (site.hostname, *site.additional_names))


_FINAL_TEMPLATES: Final = {
    FinalLayout.TLS_ONLY: "final-tls.conf.j2",
    FinalLayout.ONE_SERVER: "final.conf.j2",
    # Earlier releases: one server per port.
    FinalLayout.SHARED_CONTEXT: "final-two-servers.conf.j2",
    FinalLayout.PER_HANDSHAKE: "final-two-servers.conf.j2",
    FinalLayout.AT_RELOAD: "final-two-servers.conf.j2",
}


# -- recognising a rendered config --------------------------------------------------------------

_FIELDS: Final = {
    # Template variable -> what its value may look like in a config; SiteConfig checks it after.
    "hostname": r"[a-z0-9.-]+",
    "more_server_names": r"(?: [a-z0-9.-]+)*",
    "http_port": r"[0-9]{1,5}",
    "https_port": r"[0-9]{1,5}",
    "challenge_upstream": r"[A-Za-z0-9.:-]+",
    "proxy_pass": r"https?://[A-Za-z0-9._~/:-]+",
    "https_origin": r"https://[A-Za-z0-9.:-]+",
    "certificate_path": r"/[A-Za-z0-9._/-]+",
    "key_path": r"/[A-Za-z0-9._/-]+",
    "max_body_size_mib": r"[0-9]{1,5}",
    # The policy as nginx quotes it: lines of "key: value" joined by the escape "\n".
    "mta_sts_policy": r"version: STSv1(?:\\n[a-z_]+: [*a-z0-9.-]+)+\\n",
}
_TLS_ONLY, _ONE, _SHARED, _PER_HANDSHAKE, _AT_RELOAD = FinalLayout
_BOOTSTRAP, _FINAL, _FINAL_HTTP = "bootstrap", "final", "final HTTP-only"
_TEMPLATES: Final = (
    # (kind, TLS, upstream over HTTPS, MTA-STS policy, layout), this release's forms first.
    # Its bootstrap and HTTP-only configs are those of the previous release (ONE_SERVER).
    (_BOOTSTRAP, False, False, False, _ONE),
    (_FINAL, True, False, False, _TLS_ONLY),
    (_FINAL, True, False, True, _TLS_ONLY),
    (_FINAL_HTTP, False, False, False, _ONE),
    # The previous release's TLS configs: one server for both ports.
    (_FINAL, True, False, False, _ONE),
    (_FINAL, True, False, True, _ONE),
    # What earlier releases published, still in the ConfigMaps of hosts not provisioned since an
    # upgrade: two servers per TLS site, headers set in each location, and (before the shared
    # context) each TLS site its own context, its certificates loaded per handshake or at
    # reload. Recognised, so they keep being served: they name their fixed paths. (Their
    # bootstrap and HTTP-only configs are the same in all three.)
    (_BOOTSTRAP, False, False, False, _SHARED),
    *(
        (_FINAL, True, https, mta_sts, layout)
        for layout in (_SHARED, _PER_HANDSHAKE, _AT_RELOAD)
        for mta_sts in (False, True)
        for https in (False, True)
    ),
    (_FINAL_HTTP, False, False, False, _SHARED),
    (_FINAL_HTTP, False, True, False, _SHARED),
)


@dataclasses.dataclass(frozen=True)
class RecognisedConfig:
    """What :func:`recognise` found a config to be."""

    site: SiteConfig
    """The :class:`SiteConfig` the operator rendered it from."""
    layout: FinalLayout
    """The form it has (bootstrap and HTTP-only configs: the first release of their form)."""

    @property
    def shared_http(self) -> bool:
        """Its plain HTTP is the shared server of :func:`http_definitions`: it needs its
        :func:`shared_http_names` listed there."""
        return self.site.has_certificate and self.layout is FinalLayout.TLS_ONLY

    @property
    def shared_https(self) -> SharedHttpsServer | None:
        """The shared HTTPS server it can be listed in instead of being a server of its own,
        if it is one of those sites (:class:`SharedHttpsServer`)."""
        if self.shared_http and self.site.mta_sts is None:
            return SharedHttpsServer.of(self.site)
        return None


def recognise(config: str, hostname: str, certificate_dir: str) -> RecognisedConfig | None:
    """The :class:`SiteConfig` the operator rendered ``config`` from for ``hostname`` and the
    form it has, or ``None`` if ``config`` is not exactly what the renderer makes for that host.

    What an nginx agent applies: a config naming another ``server_name``, with a certificate
    outside ``<certificate_dir>/<hostname>/``, or with any directive the templates do not write
    (``alias``, ``root``, ``include``...) is refused, whoever wrote it into the ConfigMap. The
    free parameters (ports, upstreams, body size) are read out of the text, checked by
    :class:`SiteConfig` like the operator's settings, and the config rendered from them must
    be the text itself, byte for byte.

    Not cached here: the agent keeps each ConfigMap's verdict while the ConfigMap stays the same
    (``agent.desired``), and a cache of texts here would hold every host's config a second time.
    """
    for pattern, render, tls, layout in _config_patterns():
        match = pattern.fullmatch(config)
        if match is None or match["hostname"] != hostname:
            continue
        found = match.groupdict()
        directory = f"{certificate_dir.rstrip('/')}/{hostname}"
        try:
            site = SiteConfig(
                hostname=hostname,
                additional_names=tuple(found["more_server_names"].split()),
                # This release's TLS config has none in it (the agent's shared plain HTTP
                # server sends the challenges): any valid value renders it the same.
                challenge_upstream=found.get("challenge_upstream") or "localhost:80",
                # The bootstrap config has no upstream, body size or HTTPS port in it: any
                # valid value renders it the same.
                upstream=found.get("proxy_pass") or "http://localhost",
                http_port=int(found["http_port"]),
                https_port=int(found.get("https_port") or 443),
                certificate_path=f"{directory}/tls.crt" if tls else None,
                key_path=f"{directory}/tls.key" if tls else None,
                max_body_size_mib=int(found.get("max_body_size_mib") or 50),
                mta_sts=_policy_in(found.get("mta_sts_policy")),
            )
        except ValueError:
            continue
        if render(site) == config:
            return RecognisedConfig(site, layout)
    return None


_Pattern = tuple[re.Pattern[str], Callable[[SiteConfig], str], bool, FinalLayout]


@functools.cache
def _config_patterns() -> tuple[_Pattern, ...]:
    """Each template rendered with a marker for every variable, made into a regex whose groups
    capture the variables (a repeated variable must repeat its first value); with the function
    that renders it, whether it has a certificate and its layout."""
    patterns = []
    for kind, tls, upstream_is_https, mta_sts, layout in _TEMPLATES:
        context: dict[str, object] = {name: f"\x00{name}\x00" for name in _FIELDS}
        context.update(_layout_context(layout), kind=kind, upstream_is_https=upstream_is_https)
        if not mta_sts:
            context["mta_sts_policy"] = None
        template = _template_of(kind, layout)
        text = re.escape(_environment().get_template(template).render(context))
        seen: set[str] = set()

        def group(match: re.Match[str], seen: set[str] = seen) -> str:
            name = match[1]
            if name in seen:
                return f"(?P={name})"
            seen.add(name)
            return f"(?P<{name}>{_FIELDS[name]})"

        regex = re.sub(re.escape("\x00") + r"(\w+)" + re.escape("\x00"), group, text)
        renderer = render_bootstrap if kind == _BOOTSTRAP else render_final
        render = functools.partial(renderer, layout=layout)
        patterns.append((re.compile(regex), render, tls, layout))
    return tuple(patterns)


def _template_of(kind: str, layout: FinalLayout) -> str:
    if kind == _BOOTSTRAP:
        return "bootstrap.conf.j2"
    if kind == _FINAL_HTTP:
        return "final-http.conf.j2"
    return _FINAL_TEMPLATES[layout]


def _policy_in(quoted: str | None) -> MtaStsPolicy | None:
    """The policy of a config's quoted ``mta_sts_policy``; a text that is not exactly one the
    renderer writes is refused (``ValueError``: the config is not recognised)."""
    if quoted is None:
        return None
    policy = parse_policy(quoted.replace("\\n", "\n"))
    if policy is None:
        raise ValueError("not an MTA-STS policy the operator renders")
    return policy


def config_hash(config: str) -> str:
    """A short, stable fingerprint of a rendered config, to report which config nginx applied."""
    return hashlib.sha256(config.encode("utf-8")).hexdigest()[:CONFIG_HASH_LENGTH]


def _render(template_name: str, site: SiteConfig, *, kind: str, layout: FinalLayout) -> str:
    context = _context(site, kind=kind)
    context.update(_layout_context(layout))
    return _environment().get_template(template_name).render(context)


def _layout_context(layout: FinalLayout) -> dict[str, object]:
    """The template variables that tell the releases' forms apart."""
    return {
        # What follows a TLS config's certificate paths; None: it names none.
        "certificate_suffix": {
            FinalLayout.TLS_ONLY: None,
            FinalLayout.ONE_SERVER: None,
            FinalLayout.SHARED_CONTEXT: None,
            FinalLayout.PER_HANDSHAKE: f"${PER_HANDSHAKE_VARIABLE}",
            FinalLayout.AT_RELOAD: "",
        }[layout],
        # Earlier releases set the proxy headers in each location.
        "own_headers": layout not in (FinalLayout.TLS_ONLY, FinalLayout.ONE_SERVER),
        "redirect_variable": REDIRECT_VARIABLE,
    }


@functools.cache
def _environment() -> jinja2.Environment:
    # PackageLoader reads the templates shipped inside this package, wherever it is installed.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("vhost_operator.nginx", "templates"),
        # Read once: they change only with the package. Jinja's default checks each template's
        # file (a stat and its time) at every use, the macros' as well: most of a render's CPU.
        auto_reload=False,
        autoescape=False,  # nginx syntax, not HTML: values are made safe by SiteConfig instead
        undefined=jinja2.StrictUndefined,  # a misspelt variable fails instead of rendering ""
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _context(site: SiteConfig, *, kind: str) -> dict[str, object]:
    """Template variables: the validated fields plus values derived here rather than in Jinja."""
    return {
        "kind": kind,
        "hostname": site.hostname,
        "more_server_names": _more_server_names(site),
        "http_port": site.http_port,
        "https_port": site.https_port,
        "challenge_upstream": site.challenge_upstream,
        "proxy_pass": _proxy_pass_target(site.upstream),
        "upstream_is_https": site.upstream.startswith("https://"),
        "https_origin": _https_origin(site),
        "certificate_path": site.certificate_path,
        "key_path": site.key_path,
        "max_body_size_mib": site.max_body_size_mib,
        # nginx's quoted strings take "\n" as a newline; the values cannot hold quotes,
        # backslashes or "$" (allow-listed).
        "mta_sts_policy": site.mta_sts.text().replace("\n", "\\n") if site.mta_sts else None,
    }


def _more_server_names(site: SiteConfig) -> str:
    return "".join(f" {name}" for name in site.additional_names)


def _proxy_pass_target(upstream: str) -> str:
    """The ``proxy_pass`` argument for ``location /``.

    Without a path nginx forwards the request URI untouched, so "/" is dropped. With a path nginx
    replaces the matched "/" by it, so the path must end in "/" or "/inbox" would become
    "/appinbox" instead of "/app/inbox".
    """
    match = _URL.fullmatch(upstream)
    assert match is not None, "upstream was validated by SiteConfig"
    path = match["path"] or ""
    origin = upstream[: len(upstream) - len(path)]
    if path in ("", "/"):
        return origin
    return origin + path.rstrip("/") + "/"


def _https_origin(site: SiteConfig) -> str:
    # The redirect names the validated hostname rather than $host: if this block ends up as the
    # port's default server, $host is whatever the client sent, and we would redirect to it.
    if site.https_port == 443:
        return f"https://{site.hostname}"
    return f"https://{site.hostname}:{site.https_port}"
