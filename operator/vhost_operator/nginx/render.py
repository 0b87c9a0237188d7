"""Render nginx ``server`` blocks for one host: the bootstrap config and the final config.

Templates are Jinja2 with autoescaping off, because nginx syntax is not HTML. Safety comes from
the other side instead: every value that reaches a template has passed an allow-list in
:class:`SiteConfig`, so no value can carry ``;``, braces, quotes, whitespace, newlines or ``$``
(which would start an nginx variable) into the config. Validators use ``re.fullmatch``, never
``^...$``: ``$`` also matches before a trailing newline, which is exactly the injection to stop.

Loading the packaged templates is the only I/O here.
"""

from __future__ import annotations

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
        match = _HOST_PORT.fullmatch(value)
        if not match:
            raise ValueError(f"challenge_upstream {value!r} must look like host:port")
        problem = _host_problem(match["host"]) or _port_problem(match["port"])
        if problem:
            raise ValueError(f"challenge_upstream {value!r}: {problem}")
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


def render_bootstrap(site: SiteConfig) -> str:
    """The config before a certificate exists: challenges are answered, all else gets a 503.

    No redirect to HTTPS here: there is no certificate yet, so the redirect would lead nowhere.
    """
    return _render("bootstrap.conf.j2", site, kind="bootstrap")


def render_final(site: SiteConfig) -> str:
    """The config once provisioning is done: HTTPS with the certificate, or HTTP only without.

    Both variants keep serving the challenge path over HTTP, so renewals work.
    """
    if site.has_certificate:
        return _render("final.conf.j2", site, kind="final")
    return _render("final-http.conf.j2", site, kind="final HTTP-only")


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
_TEMPLATES: Final = (
    # (template, kind, TLS, upstream over HTTPS, MTA-STS policy)
    ("bootstrap.conf.j2", "bootstrap", False, False, False),
    ("final.conf.j2", "final", True, False, False),
    ("final.conf.j2", "final", True, True, False),
    ("final.conf.j2", "final", True, False, True),
    ("final.conf.j2", "final", True, True, True),
    ("final-http.conf.j2", "final HTTP-only", False, False, False),
    ("final-http.conf.j2", "final HTTP-only", False, True, False),
)
_RECOGNISED_CONFIGS = 16384
"""Verdicts kept: more than the hosts one nginx serves (each is asked again every batch)."""


def rendered_site(config: str, hostname: str, certificate_dir: str) -> SiteConfig | None:
    """The :class:`SiteConfig` the operator rendered ``config`` from for ``hostname``, or
    ``None`` if ``config`` is not exactly what the renderer makes for that host.

    What an nginx agent applies: a config naming another ``server_name``, with a certificate
    outside ``<certificate_dir>/<hostname>/``, or with any directive the templates do not write
    (``alias``, ``root``, ``include``...) is refused, whoever wrote it into the ConfigMap. The
    free parameters (ports, upstreams, body size) are read out of the text, checked by
    :class:`SiteConfig` like the operator's settings, and the config rendered from them must
    be the text itself, byte for byte.
    """
    return _rendered_site(config, hostname, certificate_dir)


@functools.lru_cache(maxsize=_RECOGNISED_CONFIGS)
def _rendered_site(config: str, hostname: str, certificate_dir: str) -> SiteConfig | None:
    for pattern, render, tls in _config_patterns():
        match = pattern.fullmatch(config)
        if match is None or match["hostname"] != hostname:
            continue
        found = match.groupdict()
        directory = f"{certificate_dir.rstrip('/')}/{hostname}"
        try:
            site = SiteConfig(
                hostname=hostname,
                additional_names=tuple(found["more_server_names"].split()),
                challenge_upstream=found["challenge_upstream"],
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
            return site
    return None


@functools.cache
def _config_patterns() -> tuple[tuple[re.Pattern[str], Callable[[SiteConfig], str], bool], ...]:
    """Each template rendered with a marker for every variable, made into a regex whose groups
    capture the variables (a repeated variable must repeat its first value); with the function
    that renders it and whether it has a certificate."""
    patterns = []
    for template, kind, tls, upstream_is_https, mta_sts in _TEMPLATES:
        context: dict[str, object] = {name: f"\x00{name}\x00" for name in _FIELDS}
        context.update(kind=kind, upstream_is_https=upstream_is_https)
        if not mta_sts:
            context["mta_sts_policy"] = None
        text = re.escape(_environment().get_template(template).render(context))
        seen: set[str] = set()

        def group(match: re.Match[str], seen: set[str] = seen) -> str:
            name = match[1]
            if name in seen:
                return f"(?P={name})"
            seen.add(name)
            return f"(?P<{name}>{_FIELDS[name]})"

        regex = re.sub(re.escape("\x00") + r"(\w+)" + re.escape("\x00"), group, text)
        render = render_bootstrap if template == "bootstrap.conf.j2" else render_final
        patterns.append((re.compile(regex), render, tls))
    return tuple(patterns)


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


def _render(template_name: str, site: SiteConfig, *, kind: str) -> str:
    return _environment().get_template(template_name).render(_context(site, kind=kind))


@functools.cache
def _environment() -> jinja2.Environment:
    # PackageLoader reads the templates shipped inside this package, wherever it is installed.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("vhost_operator.nginx", "templates"),
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
        "more_server_names": "".join(f" {name}" for name in site.additional_names),
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
