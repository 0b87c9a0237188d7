"""Pydantic model of the MailDomain resource, and the pure rules of linking one to a VirtualHost.

A MailDomain (``spec.name: example.com``, ``spec.virtualHost: mail.example.com``) links its domain
to the VirtualHost with that hostname. It mirrors ``crds/maildomains.yaml``; a test keeps the two
in step. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from vhost_operator.resources.claims import Claim, claimed_by_older
from vhost_operator.resources.conditions import set_condition
from vhost_operator.resources.models import Condition, ConditionStatus

LINKED = "Linked"
"""Condition type: the domain is listed in the VirtualHost that ``status.linkedVirtualHost``
names."""
VIRTUALHOST_DELETED = "VirtualHostDeleted"
"""Reason of Linked=False once the domain's VirtualHost was deleted (and the link cleared)."""

MAX_NAME = 253
"""A cluster-scoped object's name is a DNS subdomain: at most 253 characters."""

NAME_HASH_LENGTH = 8


class _WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are kept out."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


class MailDomainSpec(_WireModel):
    name: str
    virtual_host: str | None = None

    @field_validator("virtual_host")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        # The CRD allows "" (a form's cleared field) as well as an absent field: both mean
        # "not linked", and the code must not tell them apart.
        return value or None


class MailDomainStatus(_WireModel):
    linked_virtual_host: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None

    def to_merge_patch(self) -> dict[str, Any]:
        """As a JSON merge patch; unset fields are removed (``null``), so an unlinked domain
        does not keep showing the host it left."""
        wire = self.to_wire()
        for name, field in type(self).model_fields.items():
            wire.setdefault(field.alias or name, None)
        return wire

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class MailDomain(_WireModel):
    """The parts of a MailDomain object the operator reasons about."""

    name: str
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    creation_timestamp: str = ""
    spec: MailDomainSpec
    status: MailDomainStatus = Field(default_factory=MailDomainStatus)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> MailDomain:
        """Build from a raw Kubernetes object (a dict, or kopf's ``Body``)."""
        metadata = body.get("metadata", {})
        return cls(
            name=metadata["name"],
            uid=metadata.get("uid", ""),
            generation=metadata.get("generation", 0),
            resource_version=metadata.get("resourceVersion", ""),
            creation_timestamp=metadata.get("creationTimestamp", ""),
            spec=MailDomainSpec.model_validate(dict(body.get("spec") or {})),
            status=MailDomainStatus.model_validate(dict(body.get("status") or {})),
        )

    @property
    def claim(self) -> Claim:
        return Claim(self.creation_timestamp, self.name)


def claimed_by_other(domain: MailDomain, claims: Iterable[Claim]) -> str | None:
    """The name of an older MailDomain that claims the same domain, or ``None``."""
    return claimed_by_older(domain.claim, claims)


@dataclasses.dataclass(frozen=True)
class HostDomains:
    """What linking reads of a VirtualHost: its hostname and domains, and the version they were
    read at (every write of ``domains`` is conditional on it)."""

    name: str
    hostname: str
    domains: tuple[str, ...]
    resource_version: str
    deleting: bool = False

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> HostDomains:
        metadata = body.get("metadata", {})
        spec = body.get("spec") or {}
        return cls(
            name=metadata["name"],
            hostname=spec.get("hostname", ""),
            domains=tuple(spec.get("domains") or ()),
            resource_version=metadata.get("resourceVersion", ""),
            deleting=bool(metadata.get("deletionTimestamp")),
        )


def virtualhost_names(hostname: str) -> tuple[str, str]:
    """The names a VirtualHost created for ``hostname`` may get, in order of preference.

    ``mail.example.com`` → ``mail-example-com``, the name the examples use. Both
    ``mail.example-com.org`` and ``mail-example.com.org`` map there, so the second name carries
    a hash of the hostname. The names are deterministic: two MailDomains creating a host for one
    hostname at the same moment pick the same name, and the API server lets only one create it.
    """
    base = hostname.replace(".", "-")
    digest = hashlib.sha256(hostname.encode()).hexdigest()[:NAME_HASH_LENGTH]
    keep = MAX_NAME - NAME_HASH_LENGTH - 1
    return base, f"{base[:keep].rstrip('-')}-{digest}"


def status_after(
    domain: MailDomain,
    *,
    linked: str | None,
    hostname: str | None,
    now: datetime,
    reason: str | None = None,
    message: str | None = None,
) -> MailDomainStatus:
    """The status to write once the domain is linked to ``linked`` (or to nothing).

    ``reason``/``message`` override the Linked=False explanation (e.g. another MailDomain claims
    the domain). A domain unlinked because its VirtualHost was deleted keeps saying so until it
    is linked again: the reconcile that follows the cleared ``spec.virtualHost`` must not replace
    that answer by a vaguer "spec.virtualHost is empty".
    """
    if linked is not None:
        state = ConditionStatus.TRUE
        reason = "Linked"
        message = f"domain {domain.spec.name} is linked to VirtualHost {linked} ({hostname})"
    else:
        state = ConditionStatus.FALSE
        previous = domain.status.condition(LINKED)
        if reason is None and previous is not None and previous.reason == VIRTUALHOST_DELETED:
            reason, message = previous.reason, previous.message
        if reason is None:
            reason, message = "NoVirtualHost", "spec.virtualHost is empty"
    conditions = set_condition(
        domain.status.conditions,
        type=LINKED,
        status=state,
        reason=reason,
        message=message or "",
        now=now,
        observed_generation=domain.generation,
    )
    return MailDomainStatus(
        linked_virtual_host=linked, conditions=conditions, observed_generation=domain.generation
    )


def status_failed(
    domain: MailDomain, *, reason: str, message: str, now: datetime
) -> MailDomainStatus:
    """Linking failed (it is retried): say why, and keep the link last made, which the retry
    needs to know where the domain may still be listed."""
    conditions = set_condition(
        domain.status.conditions,
        type=LINKED,
        status=ConditionStatus.FALSE,
        reason=reason,
        message=message,
        now=now,
        observed_generation=domain.generation,
    )
    return domain.status.model_copy(
        update={"conditions": conditions, "observed_generation": domain.generation}
    )
