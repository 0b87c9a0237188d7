"""Typed settings, read once from environment variables prefixed ``VHOST_OPERATOR_``.

Every field documents its unit, its default and why. The README's configuration reference is
checked against this class by a test, so a new setting must be documented there too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The operator's configuration. Tests pass values as keyword arguments instead."""

    model_config = SettingsConfigDict(
        env_prefix="VHOST_OPERATOR_", frozen=True, use_attribute_docstrings=True
    )

    acme_enabled: bool = False
    """Order certificates over ACME (the ``certificate`` step). Off by default: with both ACME
    and nginx off a VirtualHost is Ready as soon as it is created, as in the original product."""

    nginx_enabled: bool = False
    """Write nginx configuration for each host (the ``bootstrap`` and ``final`` steps)."""

    nginx_namespace: str = "vhost-operator"
    """Namespace of the per-host nginx ConfigMaps and TLS Secrets, where nginx and its agent run."""

    operator_namespace: str = "vhost-operator"
    """Namespace the operator runs in; it keeps the ACME account key Secret there."""

    # -- high availability -------------------------------------------------------------------

    leader_election_enabled: bool = False
    """Run as one of several replicas: only the holder of the Lease ``lease_name`` (in
    ``operator_namespace``) provisions, renews and retries; every replica serves the webhook
    and the HTTP-01 challenges. A replica that loses the Lease exits (its Deployment restarts
    it as a follower). Off: this process provisions alone (one replica only)."""

    lease_name: str = Field(
        default="vhost-operator-leader", pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"
    )
    """Name of the ``coordination.k8s.io`` Lease the replicas compete for."""

    lease_duration: float = Field(default=10.0, ge=1)
    """Seconds a Lease stays valid after its last renewal: a lost leader is replaced within
    about this time plus ``lease_retry_period``."""

    lease_renew_deadline: float = Field(default=8.0, gt=0)
    """Seconds the leader goes on without a successful renewal before it stops (exits); shorter
    than ``lease_duration``, so it has stopped before another replica may take over."""

    lease_retry_period: float = Field(default=2.0, gt=0)
    """Seconds between two renewals by the leader, and two looks at the Lease by the others."""

    # -- ACME --------------------------------------------------------------------------------

    acme_directory_url: str = "https://acme-staging-v02.api.letsencrypt.org/directory"
    """The CA's ACME directory. The default is Let's Encrypt's *staging* CA, so a first install
    cannot burn production rate limits; production is
    ``https://acme-v02.api.letsencrypt.org/directory``."""

    acme_email: str | None = None
    """Contact address for the ACME account (expiry and policy mail from the CA)."""

    acme_eab_kid: str | None = None
    """External Account Binding key id, for CAs that require one (ZeroSSL, many private CAs)."""

    acme_eab_hmac_key: SecretStr | None = None
    """External Account Binding MAC key (base64url), set together with ``acme_eab_kid``."""

    acme_ca_bundle: Path | None = None
    """PEM bundle to trust for the CA's HTTPS API instead of the system store (private CAs)."""

    acme_account_secret: str = "vhost-operator-acme-account"
    """Secret (in ``operator_namespace``) holding the ACME account key, created once, reused."""

    acme_order_timeout: float = Field(default=120.0, gt=0)
    """Seconds to wait for the CA to validate and issue one order before the step fails."""

    acme_order_limit: int = Field(default=300, ge=0)
    """New ACME orders the account may place per ``acme_order_window`` (a token bucket, refilled
    evenly: the CA's own rule). Hosts beyond it stay Pending, their message naming when their
    order will be placed. The default is Let's Encrypt's production limit (300 per 3 hours,
    letsencrypt.org/docs/rate-limits); 0 turns the budget off (a private CA without limits)."""

    acme_order_window: float = Field(default=10800.0, gt=0)
    """Seconds in which ``acme_order_limit`` orders refill (default: 3 hours)."""

    acme_profile: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$"
    )
    """ACME profile new orders ask for (e.g. Let's Encrypt's ``classic``, ``tlsserver`` or
    ``shortlived``) unless a host names its own (``spec.acmeProfile``). It must be one the CA's
    directory lists, else the certificate step fails naming those. Unset: the CA's default."""

    challenge_listen_port: int = Field(default=8089, ge=1, le=65535)
    """Port of the operator's HTTP-01 challenge responder (nginx proxies challenges to it)."""

    challenge_upstream: str = "vhost-operator-challenges.vhost-operator.svc:8089"
    """``host:port`` nginx proxies ``/.well-known/acme-challenge/`` to: the responder's Service."""

    self_check_enabled: bool = True
    """Fetch our own challenge URL before asking the CA to validate, failing fast (DNS not
    pointing here, port 80 blocked) without spending the CA's rate limits. Switch off on networks
    where the cluster cannot reach its own public address (hairpin NAT)."""

    self_check_address: str | None = None
    """``http://host:port`` to connect to for the self-check instead of the hostname's DNS, with
    the hostname still sent as ``Host``: for clusters that reach their ingress internally."""

    self_check_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds the self-check waits for an answer before it fails the step as unreachable (a
    port whose packets are dropped never answers)."""

    retain_certificate_secret: bool = False
    """Keep a deleted host's TLS Secret (cert-manager's default) instead of deleting it with the
    host, e.g. to re-create the host later without ordering again."""

    renewal_fraction: float = Field(default=1 / 3, gt=0, lt=1)
    """Renew once this fraction of the certificate's actual lifetime remains (Let's Encrypt's
    advice; lifetimes are shrinking, so no fixed number of days)."""

    renewal_spread: float = Field(default=1 / 3, ge=0, le=1)
    """Renewal times are spread over this fraction of the ``renewal_fraction`` stretch before
    the latest renewal time, by an amount derived from each certificate's serial: hosts issued
    together (a migration) come up for renewal over days, not in one burst that would take the
    order budget from new hosts (90-day certificates: renewed between 40 and 30 days before
    expiry). 0: exactly when ``renewal_fraction`` remains."""

    renewal_interval: float = Field(default=86400.0, gt=0)
    """Seconds between two renewal scans (default: daily, as in the original product). A scan
    reads memory only; it writes nothing for hosts that are not due."""

    renewal_spacing: float = Field(default=2.0, ge=0)
    """Seconds between two renewal requests within a scan, so that thousands of hosts issued on
    one day are not all renewed in one burst (2 s: 10,000 hosts in under 6 hours)."""

    renewal_info_enabled: bool = True
    """Use the CA's ACME Renewal Information (RFC 9773) where its directory offers it: renew at
    a point in the window the CA suggests (renewals inside it are exempt from Let's Encrypt's
    rate limits, and in an incident the CA moves it to ask for early renewal), and name the
    replaced certificate in the renewal order. Off, or a CA without it: ``renewal_fraction``."""

    renewal_info_rate: float = Field(default=2.0, gt=0)
    """ACME Renewal Information requests per second at most, when the CA offers it: each
    certificate's suggested window is fetched again when the CA's ``Retry-After`` says, and a
    restarted operator fetches every one again, so 10,000 hosts are spread over about 80
    minutes instead of one burst."""

    renewal_info_max_age: float = Field(default=86400.0, gt=0)
    """Seconds a certificate's renewal window is trusted at most before it is fetched again,
    however long the CA's ``Retry-After`` is (RFC 9773 suggests clamping it to a day). A fetch
    is never sooner than a minute after the last one, nor sooner than this."""

    # -- automatic retry ---------------------------------------------------------------------

    retry_backoff_enabled: bool = False
    """Retry Failed hosts by themselves, with exponential backoff (off by default, as in the
    original product: a retry is then always a user's ``vhost-operator.io/retry`` annotation).
    A success resets the count of failures the backoff grows with (``status.failedAttempts``)."""

    retry_backoff_initial: float = Field(default=300.0, gt=0)
    """Seconds from a host's first failure to its automatic retry; each further failure in a
    row doubles it."""

    retry_backoff_max: float = Field(default=21600.0, gt=0)
    """The cap on the backoff, in seconds (6 hours: a host whose DNS is fixed overnight comes
    up by itself, without the CA's failed-validation limits being hit)."""

    retry_backoff_jitter: float = Field(default=0.2, ge=0, le=1)
    """Up to this fraction of each backoff is taken off it, differently per host, so that hosts
    failing together (a CA outage) are not retried in one burst."""

    # -- admission webhook -------------------------------------------------------------------

    webhook_enabled: bool = False
    """Serve the webhooks and keep their Validating- and MutatingWebhookConfiguration up to
    date (the chart turns it on). Without it the CRD schema still refuses malformed objects,
    and kopf adds its finalizer to a new VirtualHost or MailDomain in a patch of its own."""

    webhook_port: int = Field(default=9443, ge=1, le=65535)
    """Port the webhook's HTTPS server listens on."""

    webhook_host: str = "vhost-operator-webhook.vhost-operator.svc"
    """Name (or IP) in the webhook's certificate and, without a webhook Service, in the URL
    the API server calls."""

    webhook_service: str = Field(default="", pattern=r"^([a-z0-9.-]+/[a-z0-9.-]+)?$")
    """``namespace/name`` of the Service the API server calls the webhook through. The webhook
    configuration then names that Service, and the API server finds its address itself, without
    DNS (on most clusters it cannot resolve ``.svc`` names). Empty: the URL
    ``https://<webhook host>:<webhook port>/``."""

    webhook_cert_dir: Path | None = None
    """Directory with a mounted ``ca.crt``, ``tls.crt`` and ``tls.key`` for the webhook. Unset:
    a CA and serving certificate are made at start-up."""

    webhook_configuration_name: str = "vhost-operator.io"
    """Name of the Validating- and MutatingWebhookConfiguration the operator creates and keeps
    current."""

    # -- nginx -------------------------------------------------------------------------------

    upstream: str = "http://webmail.mail.svc:8000"
    """URL of the mail web app that each host's final nginx config proxies to."""

    nginx_http_port: int = Field(default=80, ge=1, le=65535)
    """Port nginx listens on for plain HTTP (challenges, redirects)."""

    nginx_https_port: int = Field(default=443, ge=1, le=65535)
    """Port nginx listens on for HTTPS."""

    nginx_wait_for_agent: bool = True
    """Finish the nginx steps only once the nginx agent reports that nginx loaded the config
    (and certificate). Off: publishing the ConfigMap is enough (nginx fed by other means)."""

    nginx_replica_selector: str = ""
    """Label selector of the nginx pods in ``nginx_namespace`` when nginx runs as several
    replicas, each agent reporting under its pod's name (the agent's ``VHOST_AGENT_REPLICA``).
    The operator then watches those pods and a config counts as applied once every ready pod
    serves it. Empty: one nginx, whose agent has no replica name."""

    nginx_apply_timeout: float = Field(default=60.0, gt=0)
    """Seconds a step waits for the agent's report before it fails."""

    nginx_probe_address: str | None = None
    """``host:port`` of nginx's HTTPS listener (e.g. its Service). When set, the final step ends
    with a TLS handshake for the hostname and requires the newly issued certificate."""

    nginx_certificate_dir: str = "/etc/nginx/vhost-operator/certs"
    """Where the nginx agent writes each host's certificate, as ``<dir>/<hostname>/tls.crt`` and
    ``tls.key`` (the agent's ``<root_dir>/certs``). The final configs of this release name no
    path (the agent's default TLS server loads from its own directory), so it only matters to
    the configs of earlier releases, which named their paths there."""

    primary_hostnames: tuple[str, ...] = ()
    """The instance's own hostnames (the tenancy gate's ``VHOST_GATE_PRIMARY_HOSTNAMES``: logins
    through them are never restricted). No VirtualHost may have one: the webhook refuses it, and
    without the webhook the host is Failed at its first step. Environment form: a JSON list,
    e.g. ``["mail.example.net"]``."""

    liveness_port: int = Field(default=8080, ge=1, le=65535)
    """Port of the ``/healthz`` liveness endpoint kopf serves."""

    metrics_port: int = Field(default=9090, ge=0, le=65535)
    """Port of the Prometheus ``/metrics`` endpoint; 0 turns it off."""

    log_format: Literal["text", "json"] = "text"
    """``json`` writes one JSON object per log line (with the object's name for object logs),
    for log pipelines; ``text`` is for people."""

    @model_validator(mode="after")
    def _lease_timing_in_order(self) -> Settings:
        if not self.lease_retry_period < self.lease_renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs lease_retry_period < lease_renew_deadline < lease_duration"
                " (the leader must have stopped before its Lease can expire)"
            )
        return self
