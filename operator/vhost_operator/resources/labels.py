"""Labels and annotations on the objects the operator writes for the nginx agent. Pure."""

from __future__ import annotations

from typing import NamedTuple

from vhost_operator.resources.models import GROUP

MANAGED_BY = {"app.kubernetes.io/managed-by": "vhost-operator"}

COMPONENT = f"{GROUP}/component"
SITE_COMPONENT = "nginx-site"
"""Value of ``COMPONENT`` on per-host ConfigMaps: the agent selects on it."""
TLS_COMPONENT = "tls"
NEXT_KEY_COMPONENT = "next-key"

VIRTUALHOST = f"{GROUP}/virtualhost"
"""Annotation naming the VirtualHost an object belongs to (names can outgrow a label value)."""

VIRTUALHOST_CREATED = f"{GROUP}/virtualhost-created"
"""Annotation on a site ConfigMap: its VirtualHost's creationTimestamp. With ``VIRTUALHOST`` it
is the host's claim on its hostname, so the nginx agent serves the same VirtualHost as the
operator provisions when two claim one hostname (``resources.claims``)."""

HOSTNAME = f"{GROUP}/hostname"
ENABLED = f"{GROUP}/enabled"
"""Annotation on a site ConfigMap: "true" or "false"; the agent includes only enabled sites."""
STAGE = f"{GROUP}/stage"
"""Annotation on a site ConfigMap: which config it holds, "bootstrap" or "final"."""
CONFIG_HASH = f"{GROUP}/config-hash"
"""Annotation on a site ConfigMap: the hash of the config it holds."""
TLS_SECRET = f"{GROUP}/tls-secret"
"""Annotation on a site ConfigMap: the Secret with the certificate its config refers to."""
ACME_DIRECTORY = f"{GROUP}/acme-directory"
"""Annotation on the ACME account Secret: the directory the account was registered with."""
ORDER_URL = f"{GROUP}/order-url"
"""Annotation on the next-key Secret: the ACME order placed with that key (resumed after a
restart instead of ordering twice)."""
CA_NOT_BEFORE = f"{GROUP}/ca-not-before"
"""Annotation on the next-key Secret: the time before which the CA asked not to be called
(``Retry-After``), so a restarted operator waits for it too."""
CA_WAIT_REASON = f"{GROUP}/ca-wait-reason"
"""Annotation on the next-key Secret, with ``CA_NOT_BEFORE``: what the CA said, for status."""
ORDER_BUCKET = f"{GROUP}/order-bucket-full-at"
"""Annotation on the ACME account Secret: when the account's budget of new orders is full again,
counting every order placed (``provisioning.budget``). Kept with the account, whose limit it is,
so that a restarted operator still counts the orders of the last window."""


def component_labels(component: str) -> dict[str, str]:
    return {**MANAGED_BY, COMPONENT: component}


# -- written by the nginx agent on each site ConfigMap (the operator reads them) -------------

APPLIED_CONFIG_HASH = f"{GROUP}/applied-config-hash"
"""Annotation the nginx agent sets on a site ConfigMap once nginx runs its config: the
``config_hash`` of the file nginx loaded. Equal to ``CONFIG_HASH`` means "applied"."""
APPLIED_CERTIFICATE_SERIAL = f"{GROUP}/applied-certificate-serial"
"""Annotation the nginx agent sets on a site ConfigMap once nginx serves its certificate: the
leaf's serial in lowercase hex without leading zeros (as ``certs.inspect_certificate``)."""
APPLY_ERROR = f"{GROUP}/apply-error"
"""Annotation the nginx agent sets on a site ConfigMap it could not apply, removed once it could:
``<config-hash>: <reason>``, so a reader can tell whether it is about the config it wrote."""

REPLICA_DOMAIN = f"replicas.{GROUP}"
"""With several nginx replicas, each replica's agent reports under keys of its own:
``<replica>.replicas.<group>/applied-config-hash`` and so on, ``<replica>`` being its pod's name.
An agent without a replica name (a single nginx) writes the keys above."""

_REPORT_NAMES = ("applied-config-hash", "applied-certificate-serial", "apply-error")


class ReportKeys(NamedTuple):
    """The three annotations one agent writes on a site ConfigMap."""

    config_hash: str
    serial: str
    error: str


def report_keys(replica: str = "") -> ReportKeys:
    """The annotation keys the agent of nginx replica ``replica`` writes ("": the only one)."""
    if not replica:
        return ReportKeys(APPLIED_CONFIG_HASH, APPLIED_CERTIFICATE_SERIAL, APPLY_ERROR)
    prefix = f"{replica}.{REPLICA_DOMAIN}"
    return ReportKeys(*(f"{prefix}/{name}" for name in _REPORT_NAMES))


SINGLE_AGENT_KEYS = report_keys()


def reporting_replica(key: str) -> tuple[str, int] | None:
    """``(replica, index into ReportKeys)`` if ``key`` is one of an agent's report keys
    (replica "" for the unnamed agent), else ``None``."""
    prefix, _, name = key.rpartition("/")
    if name not in _REPORT_NAMES:
        return None
    index = _REPORT_NAMES.index(name)
    if prefix == GROUP:
        return "", index
    replica = prefix.removesuffix(f".{REPLICA_DOMAIN}")
    return (replica, index) if replica and replica != prefix else None
