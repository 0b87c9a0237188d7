"""Pydantic models of the VirtualHost resource: the spec we read and the status we write.

They mirror ``crds/virtualhosts.yaml``; a test keeps the two in step. Field names follow the
Kubernetes API conventions (camelCase on the wire, via aliases).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from vhost_operator.resources.claims import Claim
from vhost_operator.resources.hostnames import (
    MAX_NAME_LENGTH,
    Hostname,
    additional_names_problem,
    hostname_problem,
)
from vhost_operator.resources.mtasts import MAX_CERTIFICATE_NAMES, MtaStsPolicy, mta_sts_names

GROUP = "vhost-operator.io"
VERSION = "v1alpha1"
VIRTUALHOSTS = "virtualhosts"
MAILDOMAINS = "maildomains"
FINALIZER = f"{GROUP}/finalizer"
"""kopf's finalizer on VirtualHosts and MailDomains (its ``settings.persistence.finalizer``);
the mutating webhook adds it to a new VirtualHost (``admission.finalizer``)."""
RETRY_ANNOTATION = f"{GROUP}/retry"
RENEW_ANNOTATION = f"{GROUP}/renew"
WAKE_ANNOTATION = f"{GROUP}/wake"
"""Set by the operator on a host whose chain waits for a time (the CA's ``Retry-After``): the
change makes the host's handler run the chain again at that time."""
"""Set by the renewal scanner (any new value asks for a renewal); users may set it too."""
ACME_CHALLENGE = "acmeChallenge"
"""``status.acmeChallenge``: ``{token, keyAuthorization}`` of the HTTP-01 challenge in flight,
written by the leader before the CA is asked to validate, so that every replica's challenge
responder can answer it. Outside :class:`VirtualHostStatus`: every status write of the chain
removes it (:meth:`VirtualHostStatus.to_merge_patch`), so it never outlives its step."""


def published_challenge(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(token, key authorization)`` of a raw VirtualHost's :data:`ACME_CHALLENGE`, if any."""
    challenge = (body.get("status") or {}).get(ACME_CHALLENGE) or {}
    token, answer = challenge.get("token"), challenge.get("keyAuthorization")
    return (str(token), str(answer)) if token and answer else None


def challenge_status(token: str, key_authorization: str) -> dict[str, Any]:
    """The status merge patch that publishes a challenge (:data:`ACME_CHALLENGE`)."""
    return {ACME_CHALLENGE: {"token": token, "keyAuthorization": key_authorization}}


class _WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are kept out."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


class ThemeColors(_WireModel):
    primary: str | None = None
    primary_light: str | None = None
    primary_dark: str | None = None
    secondary: str | None = None
    label: str | None = None


class ThemeLogos(_WireModel):
    login: str | None = None
    menu: str | None = None
    creation_form: str | None = None


class Theme(_WireModel):
    colors: ThemeColors = Field(default_factory=ThemeColors)
    logos: ThemeLogos = Field(default_factory=ThemeLogos)


class VirtualHostSpec(_WireModel):
    hostname: Hostname
    additional_names: list[Hostname] = Field(default_factory=list)
    """More names in the host's one certificate and nginx site (``imap.``, ``autoconfig.``):
    validated like the hostname, see :func:`~vhost_operator.resources.hostnames
    .additional_names_problem`."""
    domains: list[str] = Field(default_factory=list)
    enabled: bool = True
    acme_profile: str | None = None
    theme: Theme = Field(default_factory=Theme)
    mta_sts: MtaStsPolicy | None = None
    """MTA-STS for the linked domains: ``mta-sts.<domain>`` joins the certificate and nginx
    serves the policy (``resources.mtasts``)."""

    @model_validator(mode="after")
    def _names_distinct(self) -> VirtualHostSpec:
        problem = additional_names_problem(self.hostname, self.additional_names)
        problem = problem or mta_sts_names_problem(self.names)
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the host serves and its certificate covers: the hostname first, then the
        additional names, then the MTA-STS policy hosts of the linked domains."""
        return (self.hostname, *self.other_names)

    @property
    def other_names(self) -> tuple[str, ...]:
        """:attr:`names` but the hostname: the ``server_name`` and subjectAltName entries after
        it."""
        policy_hosts = mta_sts_names(self.domains) if self.mta_sts is not None else ()
        return _distinct(self.hostname, [*self.additional_names, *policy_hosts])


def served_names(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """:attr:`VirtualHostSpec.names` of a raw spec, unvalidated: for the catalogs and the
    webhook, which must not trust or parse every object fully."""
    hostname = str(spec.get("hostname", ""))
    extra = [str(name) for name in spec.get("additionalNames") or ()]
    if spec.get("mtaSts"):
        extra += mta_sts_names(str(domain) for domain in spec.get("domains") or ())
    return (hostname, *_distinct(hostname, extra))


def _distinct(hostname: str, names: Iterable[str]) -> tuple[str, ...]:
    """``names`` without repeats and without ``hostname``: a policy host may also be listed as
    an additional name (or be the hostname); it is one name in the certificate all the same."""
    return tuple(name for name in dict.fromkeys(names) if name != hostname)


def mta_sts_names_problem(names: Sequence[str]) -> str | None:
    """Why a host's ``names`` (hostname first) with the ones MTA-STS adds (``mta-sts.<domain>``)
    cannot be served, or ``None``."""
    if len(names) > MAX_CERTIFICATE_NAMES:
        return (
            f"with mtaSts the host needs {len(names)} names in its certificate (the hostname, "
            f"the additional names and mta-sts.<domain> per linked domain); at most "
            f"{MAX_CERTIFICATE_NAMES} fit one certificate"
        )
    for name in names[1:]:
        problem = hostname_problem(name, max_length=MAX_NAME_LENGTH)
        if problem is not None:
            return f"mtaSts: {problem}"
    return None


class Phase(enum.StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    FAILED = "Failed"


class StepState(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class ChainEntry(_WireModel):
    step: str
    state: StepState = StepState.PENDING
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None


class StepError(_WireModel):
    step: str
    message: str
    at: datetime


class RenewalWindowStatus(_WireModel):
    start: datetime
    end: datetime
    source: str
    """``ari`` (the CA's suggested window) or ``lifetime`` (the fraction-of-lifetime rule)."""


class CertificateStatus(_WireModel):
    secret_name: str
    not_before: datetime
    not_after: datetime
    serial: str
    renewal_time: datetime
    renewal_window: RenewalWindowStatus | None = None
    certificate_id: str | None = None
    """ACME Renewal Information identifier: names it in renewalInfo and a renewal's
    ``replaces``."""
    profile: str | None = None
    names: list[str] | None = None
    """The DNS names the certificate covers (its subjectAltName), so that a changed
    ``spec.additionalNames`` shows as drift until the new certificate is issued. ``None`` on
    certificates recorded before the field existed: those cover the hostname alone."""


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_WireModel):
    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


class VirtualHostStatus(_WireModel):
    phase: Phase | None = None
    error: StepError | None = None
    certificate: CertificateStatus | None = None
    failed_attempts: int = 0
    last_failure_time: datetime | None = None
    chain: list[ChainEntry] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    observed_retry: str | None = None
    """The retry annotation value last acted on (or refused), so each value is handled once."""
    observed_renewal: str | None = None
    """The renew annotation value last acted on."""

    def to_merge_patch(self) -> dict[str, Any]:
        """The status as a JSON merge patch: fields that are unset now are removed explicitly
        (``null``), so a stale ``error`` or ``certificate`` never outlives the state it described;
        so is a published challenge (:data:`ACME_CHALLENGE`).
        """
        wire = self.to_wire()
        for name, field in type(self).model_fields.items():
            key = field.alias or name
            wire.setdefault(key, None)
        wire[ACME_CHALLENGE] = None
        return wire


class VirtualHost(_WireModel):
    """The parts of a VirtualHost object the operator reasons about."""

    name: str
    uid: str
    generation: int
    creation_timestamp: str = ""
    annotations: dict[str, str] = Field(default_factory=dict)
    spec: VirtualHostSpec
    status: VirtualHostStatus = Field(default_factory=VirtualHostStatus)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> VirtualHost:
        """Build from a raw Kubernetes object (a dict, or kopf's ``Body``)."""
        metadata = body.get("metadata", {})
        return cls(
            name=metadata["name"],
            uid=metadata.get("uid", ""),
            generation=metadata.get("generation", 0),
            creation_timestamp=metadata.get("creationTimestamp", ""),
            annotations=dict(metadata.get("annotations") or {}),
            spec=VirtualHostSpec.model_validate(dict(body.get("spec") or {})),
            status=VirtualHostStatus.model_validate(dict(body.get("status") or {})),
        )

    def owner_reference(self) -> dict[str, Any]:
        """Marks the objects made for this host as its own (for garbage collection and
        ``kubectl get ... -o wide``); cleanup itself does not rely on it, a finalizer does it."""
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualHost",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": False,
        }

    @property
    def claim(self) -> Claim:
        """Its claim on its hostname (``resources.claims``: the oldest keeps a hostname)."""
        return Claim(self.creation_timestamp, self.name)

    @property
    def retry_request(self) -> str | None:
        return self.annotations.get(RETRY_ANNOTATION)

    @property
    def renewal_request(self) -> str | None:
        return self.annotations.get(RENEW_ANNOTATION)
