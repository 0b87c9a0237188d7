"""The nginx agent's settings, read once from environment variables prefixed ``VHOST_AGENT_``.

Separate from the operator's settings: the agent runs in another container (next to nginx), with
other permissions, and needs none of the operator's ACME or upstream settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    """The agent's configuration. Tests pass values as keyword arguments instead."""

    model_config = SettingsConfigDict(
        env_prefix="VHOST_AGENT_", frozen=True, use_attribute_docstrings=True
    )

    namespace: str = "vhost-operator"
    """Namespace of the site ConfigMaps and TLS Secrets (the operator's ``nginx_namespace``).
    The agent watches this one namespace only."""

    replica: str = Field(default="", max_length=200, pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$")
    """Name of the nginx replica this agent serves (its pod's name, from the downward API) when
    nginx runs several replicas: the agent then reports under keys of its own
    (``<replica>.replicas.vhost-operator.io/...``) and the operator waits for every ready
    replica. Empty: the only nginx, reporting under the plain keys."""

    root_dir: Path = Path("/etc/nginx/vhost-operator")
    """Directory the agent owns and writes ``sites-available/``, ``sites-enabled/``, ``certs/``,
    ``https-names/``, ``http-names.conf`` and ``https-map.conf`` into. nginx loads every host's
    certificate from ``<root_dir>/certs``; it must be the operator's ``nginx_certificate_dir``
    (the default pair matches), because the configs of earlier releases name certificate paths
    there."""

    https_port: int = Field(default=443, ge=1, le=65535)
    """Port nginx serves HTTPS on: the operator's ``nginx_https_port``. The agent writes nginx's
    default server for it, the one TLS context every site there shares (it loads each host's
    certificate from ``<root_dir>/certs/`` per handshake): nginx's main config must not have a
    default server of its own on this port. A TLS site config for another port is refused for
    its host (nginx would refuse it, and every other such site, for want of a certificate), its
    ``apply-error`` naming both settings."""

    http_port: int = Field(default=80, ge=1, le=65535)
    """Port nginx serves plain HTTP on: the operator's ``nginx_http_port``. The agent writes one
    server there for every TLS site of this release (their configs listen on ``https_port``
    only): ACME challenges to ``challenge_upstream``, everything else redirected to HTTPS. Its
    names are those sites' names (an entry per site in ``<root_dir>/http-names.conf``); other
    names fall to the port's default server, which nginx's main config provides. A TLS site
    config that expects another port is refused for its host, its ``apply-error`` naming both
    settings."""

    challenge_upstream: str = Field(
        default="vhost-operator-challenges.vhost-operator.svc:8089", pattern=r"^[^:]+:[0-9]+$"
    )
    """``host:port`` of the operator's ACME challenge responder: the operator's
    ``challenge_upstream`` (the chart sets both). The agent's plain HTTP server sends the TLS
    sites' ``/.well-known/acme-challenge/`` there (their renewals); their configs do not name
    it. nginx resolves the host when it loads the config."""

    nginx_binary: str = "nginx"
    """nginx executable used for ``nginx -t`` (looked up on PATH unless absolute)."""

    nginx_conf: Path = Path("/etc/nginx/nginx.conf")
    """The main nginx config, provided by whoever deploys nginx. Its ``http {}`` block must
    include ``<root_dir>/sites-enabled/*.conf`` and set ``server_names_hash_bucket_size 512`` and
    ``server_names_hash_max_size 16384``, and no server of it may be the default server of
    ``https_port`` (the agent defines that one)."""

    nginx_pid_file: Path = Path("/run/nginx.pid")
    """nginx's pid file (its ``pid`` directive): the master process the agent sends SIGHUP.
    Debian's and the official image's default."""

    key_group: str = Field(default="", pattern=r"^([a-z_][a-z0-9_-]*|[0-9]+)?$")
    """Group (name or GID) of nginx's worker processes, when they run as another user than the
    agent. nginx loads certificates and keys per TLS handshake, in its workers: private keys are
    then written with this group and mode 0640, readable by the workers and nobody else. Empty:
    keys are 0600, for an nginx whose workers run as the agent's user (the chart runs nginx,
    its workers and the agent as one UID). A root nginx master whose workers drop to another
    user (nginx's ``user`` directive: Debian's ``www-data``, else ``nobody``) needs that
    user's group here, and an agent allowed to give files that group (root, or a member)."""

    quiet_window: float = Field(default=0.5, gt=0)
    """Seconds without further changes after which a burst is applied (one ``nginx -t``, one
    reload for all of it)."""

    max_delay: float = Field(default=3.0, gt=0)
    """Seconds after the first change of a burst by which it is applied even if changes keep
    coming: a steady trickle still gets served within this delay."""

    reload_pacing: float = Field(default=1.0, ge=0)
    """After a batch that kept nginx busy for t seconds (``nginx -t`` and the reload), the next
    batch waits at least ``reload_pacing * t``. Loading a config costs more the more sites there
    are (every site's server block and locations: about 0.09 s of CPU per 1,000 TLS sites per
    reload, and as much per test of the whole config; the TLS sites share one OpenSSL context,
    certificates are loaded per handshake),
    so under a steady stream of changes the batches grow instead of nginx spending all its time
    reloading. Time spent waiting for a reload nginx never confirmed is not counted: nginx
    refused that config as soon as it had parsed it. 0 turns it off."""

    test_batch_sites_only: bool = True
    """Before a reload, ``nginx -t`` tests a copy of ``nginx_conf`` that includes only the
    batch's sites (and the agent's http-level definitions), when nginx runs everything else on
    disk already: a test then costs what changed, not every site (at 10,000 sites, a batch of
    100: 0.11 s instead of 0.75). The reload still loads every site, and nginx confirms or
    refuses it as always. It needs ``nginx_conf`` itself to include
    ``<root_dir>/sites-enabled/*.conf`` exactly once; otherwise, or if the copy fails a test the
    whole config passes, the agent tests the whole config (and says so in its log). After a
    failure, and at start-up, it tests the whole config until nginx has loaded it."""

    reload_timeout: float = Field(default=30.0, gt=0)
    """Seconds to wait for nginx to start new workers after the reload signal before the reload
    counts as failed (nginx then still runs the old configuration). nginx parses everything
    again first, which takes seconds with thousands of sites."""

    missing_secret_grace: float = Field(default=10.0, ge=0)
    """Seconds a site ConfigMap may name a TLS Secret the agent has not seen before that is
    reported as its ``apply-error``. The Secret is written first, but the two watches are
    separate streams, so it can arrive a moment after the ConfigMap; meanwhile the host keeps
    its previous files."""

    health_port: int = Field(default=8081, ge=0, le=65535)
    """Port of ``/healthz`` (liveness), ``/readyz`` (everything applied, reloaded and reported
    once, and the latest batch not failed by nginx or the disk) and ``/metrics`` (Prometheus).
    0 switches the endpoint off."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.max_delay < self.quiet_window:
            raise ValueError("max_delay must not be shorter than quiet_window")
        if self.http_port == self.https_port:
            raise ValueError(f"http_port and https_port must differ (both are {self.http_port})")
        return self
