"""What one site ConfigMap (and its TLS Secret) asks nginx to serve. Pure: raw API dicts in, values
out; every ConfigMap from batch to batch is ``state``'s.

Each site ConfigMap becomes a :class:`SiteRequest`: either a complete :class:`Site` (config,
enabled flag, certificate) or the reason it cannot be applied now. Everything taken from an
object is checked here, because the hostname becomes a file name and the Secret's bytes become
files nginx loads: a bad object must turn into a message on that object, never into a path
outside the agent's directory or a broken nginx.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from vhost_operator.certs import (
    CERTIFICATE_KEY,
    PRIVATE_KEY_KEY,
    Certificate,
    KeyMaterialError,
    secret_certificate,
)
from vhost_operator.nginx import (
    RecognisedConfig,
    SharedHttpsServer,
    config_hash,
    recognise,
    shared_http_names,
    shared_https_map,
)
from vhost_operator.resources import labels
from vhost_operator.resources.hostnames import hostname_problem

Object = Mapping[str, Any]

_FILE_NAME_MAX = 255  # bytes in one path component on Linux file systems
_HOSTNAME_CHARS = re.compile(r"[a-z0-9.-]+")


def digest(content: bytes) -> str:
    """What the agent remembers of a file it writes: the SHA-256 of its contents (hex)."""
    return hashlib.sha256(content).hexdigest()


@dataclasses.dataclass(frozen=True)
class Site:
    """One host the way its ConfigMap (and Secret) want it on disk."""

    configmap: str
    hostname: str
    config: str
    enabled: bool
    certificate: Certificate | None
    http_names: str | None = None
    """What lists the host in the agent's shared plain HTTP server
    (``nginx.shared_http_names``): for a TLS config of this release, ``None`` for others.
    The same text lists it in its shared HTTPS server, if it has one."""
    https_server: SharedHttpsServer | None = None
    """The shared HTTPS server it can be listed in instead of being a server of its own (its
    config is that server but for its names), or ``None``."""
    https_map: str | None = None
    """What gives its names' certificate directory in a shared HTTPS server
    (``nginx.shared_https_map``), where it has one."""

    # The digests are computed once per version of a site (its request is kept from batch to
    # batch while its objects do not change), not once per batch.

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    @functools.cached_property
    def config_digest(self) -> str:
        """:func:`digest` of the config file."""
        return digest(self.config.encode())

    @functools.cached_property
    def http_names_digest(self) -> str | None:
        return digest(self.http_names.encode()) if self.http_names is not None else None

    @functools.cached_property
    def https_map_digest(self) -> str | None:
        return digest(self.https_map.encode()) if self.https_map is not None else None

    @functools.cached_property
    def chain_digest(self) -> str | None:
        return digest(self.certificate.chain_pem) if self.certificate else None

    @functools.cached_property
    def key_digest(self) -> str | None:
        return digest(self.certificate.key_pem) if self.certificate else None

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identifies everything that goes to disk for this host, to remember rejected versions."""
        combined = hashlib.sha256()
        for part in (
            self.config_digest,
            digest(b"enabled" if self.enabled else b"disabled"),
            self.chain_digest or digest(b""),
            self.key_digest or digest(b""),
        ):
            combined.update(bytes.fromhex(part))
        return combined.hexdigest()


@dataclasses.dataclass(frozen=True)
class SiteRequest:
    """What one site ConfigMap asks for, and why it cannot be applied if it cannot."""

    configmap: str
    hostname: str | None
    """The host this ConfigMap owns: a valid hostname no other ConfigMap claimed first."""
    config_hash: str | None
    """Hash of the config it holds (as the operator computes it), for ``apply-error``."""
    additional_names: tuple[str, ...] = ()
    """The config's other ``server_name`` names (additional names, MTA-STS policy hosts)."""
    site: Site | None = None
    problem: str | None = None
    waiting_for_secret: bool = False
    """The problem is a TLS Secret not (yet) seen: it may just be a moment behind the ConfigMap."""


@dataclasses.dataclass(frozen=True)
class SharedHttp:
    """The agent's plain HTTP server for the TLS sites of this release
    (``nginx.http_definitions``): what their configs must expect of it."""

    http_port: int


def site_request(
    configmap: Object,
    secrets: Mapping[str, Object],
    *,
    certificate_dir: str,
    https_port: int | None = None,
    shared_http: SharedHttp | None = None,
) -> SiteRequest:
    """What one site ConfigMap asks for; checks run in the order a human would fix them.

    The config must be exactly what the operator renders for the ConfigMap's hostname
    (``nginx.recognise``): the text of a ConfigMap is never trusted as it is, since nginx
    would run any directive in it (a ``server_name`` of another host, an ``alias`` onto the
    certificate directory).
    """
    name = name_of(configmap)
    annotations: Mapping[str, str] = configmap.get("metadata", {}).get("annotations") or {}
    data: Mapping[str, str] = configmap.get("data") or {}
    hostname = annotations.get(labels.HOSTNAME)
    if hostname is None:
        return SiteRequest(name, None, None, problem=f"annotation {labels.HOSTNAME} is missing")
    problem = _hostname_problem(hostname)
    if problem:
        return SiteRequest(name, None, None, problem=problem)
    key = f"{hostname}.conf"
    config = data.get(key)
    if config is None:
        return SiteRequest(
            name, hostname, annotations.get(labels.CONFIG_HASH), problem=f"no data key {key}"
        )
    request = SiteRequest(name, hostname, config_hash(config))
    recognised = recognise(config, hostname, certificate_dir)
    if recognised is None:
        message = (
            f"the config is not one the operator renders for {hostname}: refused (server_name, "
            "certificate paths and directives must be exactly those of the operator's templates)"
        )
        return dataclasses.replace(request, problem=message)
    rendered = recognised.site
    request = dataclasses.replace(request, additional_names=rendered.additional_names)
    if rendered.has_certificate and https_port is not None and rendered.https_port != https_port:
        # nginx -t would refuse it ("no ssl_certificate is defined for the listen ... ssl"),
        # and with it every TLS site of the same settings: name the setting instead.
        message = (
            f"the config serves HTTPS on port {rendered.https_port}, but this agent's "
            f"VHOST_AGENT_HTTPS_PORT is {https_port} (nginx's default TLS server, the one TLS "
            "context every site shares, listens there): nginx would refuse it. The operator's "
            "VHOST_OPERATOR_NGINX_HTTPS_PORT and the agent's VHOST_AGENT_HTTPS_PORT must be "
            "the same port"
        )
        return dataclasses.replace(request, problem=message)
    problem = _shared_http_problem(recognised, shared_http)
    if problem:
        return dataclasses.replace(request, problem=problem)
    listing = _Listing(
        shared_http_names(rendered) if recognised.shared_http else None,
        recognised.shared_https,
        shared_https_map(rendered) if recognised.shared_https else None,
    )
    enabled = annotations.get(labels.ENABLED, "true")
    if enabled not in ("true", "false"):
        message = f"annotation {labels.ENABLED} must be 'true' or 'false', not {enabled!r}"
        return dataclasses.replace(request, problem=message)
    secret_name = annotations.get(labels.TLS_SECRET)
    if not secret_name and rendered.has_certificate:
        # nginx loads certificates per handshake: `nginx -t` would accept this config, and
        # every handshake for the host would fail.
        message = (
            f"the config serves HTTPS, but the ConfigMap names no TLS Secret "
            f"(annotation {labels.TLS_SECRET}): there is no certificate to serve"
        )
        return dataclasses.replace(request, problem=message)
    if not secret_name:
        site = Site(name, hostname, config, enabled == "true", None, *listing)
        return dataclasses.replace(request, site=site)
    return _with_certificate(request, config, enabled == "true", listing, secret_name, secrets)


class _Listing(NamedTuple):
    """What lists a site in the agent's shared servers: :class:`Site`'s last fields."""

    http_names: str | None
    https_server: SharedHttpsServer | None
    https_map: str | None


def _shared_http_problem(
    recognised: RecognisedConfig, shared_http: SharedHttp | None
) -> str | None:
    """Why the agent's shared plain HTTP server cannot serve this config's host as the config
    expects, or ``None``: nginx would serve its challenges and redirects on another port than
    the operator checks. (The challenges go to the agent's ``challenge_upstream``: the config
    does not name the responder.)"""
    if not recognised.shared_http or shared_http is None:
        return None
    site = recognised.site
    if site.http_port != shared_http.http_port:
        return (
            f"the config expects plain HTTP on port {site.http_port}, but this agent's "
            f"VHOST_AGENT_HTTP_PORT is {shared_http.http_port} (its shared plain HTTP server, "
            "which answers the TLS sites' challenges and redirects, listens there). The "
            "operator's VHOST_OPERATOR_NGINX_HTTP_PORT and the agent's VHOST_AGENT_HTTP_PORT "
            "must be the same port"
        )
    return None


def _with_certificate(
    request: SiteRequest,
    config: str,
    enabled: bool,
    listing: _Listing,
    secret_name: str,
    secrets: Mapping[str, Object],
) -> SiteRequest:
    assert request.hostname is not None
    secret = secrets.get(secret_name)
    if secret is None:
        message = (
            f"TLS Secret {secret_name} not found (it must carry the label "
            f"{labels.COMPONENT}={labels.TLS_COMPONENT})"
        )
        return dataclasses.replace(request, problem=message, waiting_for_secret=True)
    try:
        certificate = secret_certificate(secret)
    except KeyMaterialError as error:
        return dataclasses.replace(request, problem=f"TLS Secret {secret_name}: {error}")
    site = Site(request.configmap, request.hostname, config, enabled, certificate, *listing)
    return dataclasses.replace(request, site=site)


def slim_configmap(configmap: Object) -> dict[str, Any]:
    """What the agent reads of a site ConfigMap: its name, annotations and data. The rest (the
    managed fields above all) was most of what it held per site."""
    metadata = configmap.get("metadata") or {}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "annotations": metadata.get("annotations") or {},
        },
        "data": configmap.get("data") or {},
    }


def slim_secret(secret: Object) -> dict[str, Any]:
    """What the agent reads of a TLS Secret: its name and certificate and key."""
    data = secret.get("data") or {}
    return {
        "metadata": {"name": (secret.get("metadata") or {}).get("name")},
        "data": {key: data[key] for key in (CERTIFICATE_KEY, PRIVATE_KEY_KEY) if key in data},
    }


def relevant_configmap(configmap: Object | None) -> object:
    """What of a site ConfigMap can change the files; annotations the agent writes itself (and
    any other metadata) are left out, so its own patches do not trigger work."""
    if configmap is None:
        return None
    annotations: Mapping[str, str] = configmap.get("metadata", {}).get("annotations") or {}
    watched = (
        labels.HOSTNAME,
        labels.ENABLED,
        labels.TLS_SECRET,
        labels.CONFIG_HASH,
        labels.VIRTUALHOST,
        labels.VIRTUALHOST_CREATED,
    )
    return (
        tuple(annotations.get(key) for key in watched),
        tuple(sorted((configmap.get("data") or {}).items())),
    )


def relevant_secret(secret: Object | None) -> object:
    if secret is None:
        return None
    return tuple(sorted((secret.get("data") or {}).items()))


def _hostname_problem(hostname: str) -> str | None:
    problem = hostname_problem(hostname)
    if problem:
        return problem
    # The hostname becomes a file and directory name: an allow-list keeps "/" and the like out.
    if not _HOSTNAME_CHARS.fullmatch(hostname):
        return f"hostname {hostname!r} may contain only a-z, 0-9, '.' and '-'"
    if len(f"{hostname}.conf".encode()) > _FILE_NAME_MAX:
        return f"hostname {hostname[:40]}... is too long for a file name"
    return None


def name_of(obj: Object) -> str:
    """An object's name."""
    name: str = obj["metadata"]["name"]
    return name
