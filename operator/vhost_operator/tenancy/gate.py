"""The login decision: may this user sign in through this hostname? PURE: no I/O, no state.

The rules (the spec's "Access control"), checked in this order, first match wins:

1. a superuser is always allowed;
2. a login through one of the instance's primary hostnames is always allowed;
3. otherwise the hostname must belong to a VirtualHost, and that host must be enabled;
4. and the host must be linked to the user's mailbox domain or to a domain they administer.

Everything is compared after normalisation (``names``), so case, a trailing dot and a port in
the Host header change nothing. Reasons are short machine-readable codes; messages are for
people and never list another tenant's domains.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic.alias_generators import to_camel

from vhost_operator.resources.models import Theme
from vhost_operator.tenancy.names import (
    mailbox_domain,
    normalise_domain,
    normalise_email,
    normalise_hostname,
)

MAX_ADMINISTERED_DOMAINS = 10_000
"""Bound on one request's domain list: a large reseller fits, a request meant to exhaust the
gate's memory does not."""

Hostname = Annotated[str, AfterValidator(normalise_hostname)]
Domain = Annotated[str, AfterValidator(normalise_domain)]
Email = Annotated[str, AfterValidator(normalise_email)]


class Reason(enum.StrEnum):
    """Why a login was allowed or denied; the API's ``reason`` field."""

    SUPERUSER = "superuser"
    PRIMARY_HOST = "primary-host"
    MAILBOX_DOMAIN = "mailbox-domain"
    ADMINISTERED_DOMAIN = "administered-domain"
    UNKNOWN_HOST = "unknown-host"
    HOST_DISABLED = "host-disabled"
    NOT_A_TENANT = "not-a-tenant"


class LoginRequest(BaseModel):
    """Who signs in, and through which hostname. camelCase on the wire (``administeredDomains``).

    Unknown fields are refused rather than ignored: a misspelt ``administeredDomains`` would
    otherwise silently deny users, a bug better caught at the first request.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )

    hostname: Hostname
    email: Email
    administered_domains: list[Domain] = Field(
        default_factory=list, max_length=MAX_ADMINISTERED_DOMAINS
    )
    # Strict: "yes" or 1 is a client bug, not a superuser.
    superuser: StrictBool = False

    @property
    def mailbox_domain(self) -> str:
        return mailbox_domain(self.email)


class Decision(BaseModel):
    """The answer: ``allowed``, a ``reason`` code and a human ``message``."""

    model_config = ConfigDict(frozen=True)

    allowed: bool
    reason: Reason
    message: str


class HostEntry(BaseModel):
    """What the gate knows of one VirtualHost. Names are normalised on construction."""

    model_config = ConfigDict(frozen=True)

    hostname: Hostname
    additional_names: frozenset[Hostname] = frozenset()
    """Served by nginx like the hostname: logins through them are decided the same way."""
    enabled: bool = True
    domains: frozenset[str] = frozenset()
    theme: Theme = Field(default_factory=Theme)

    @field_validator("domains")
    @classmethod
    def _normalised_domains(cls, domains: frozenset[str]) -> frozenset[str]:
        return frozenset(normalise_domain(domain) for domain in domains)


def evaluate(
    request: LoginRequest, host: HostEntry | None, primary_hostnames: Iterable[str]
) -> Decision:
    """Decide one login. ``host`` is the VirtualHost of ``request.hostname``, or ``None``."""
    if request.superuser:
        return _allow(Reason.SUPERUSER, f"{request.email} is a superuser")
    if any(normalise_hostname(primary) == request.hostname for primary in primary_hostnames):
        return _allow(Reason.PRIMARY_HOST, f"{request.hostname} is a primary hostname")
    if host is None or request.hostname not in (host.hostname, *host.additional_names):
        return _deny(Reason.UNKNOWN_HOST, f"{request.hostname} is not a known virtual host")
    if not host.enabled:
        return _deny(Reason.HOST_DISABLED, f"virtual host {host.hostname} is disabled")
    return _by_domain(request, host)


def _by_domain(request: LoginRequest, host: HostEntry) -> Decision:
    if request.mailbox_domain in host.domains:
        return _allow(
            Reason.MAILBOX_DOMAIN,
            f"{host.hostname} serves {request.mailbox_domain}, the domain of {request.email}",
        )
    administered = sorted(host.domains.intersection(request.administered_domains))
    if administered:
        return _allow(
            Reason.ADMINISTERED_DOMAIN,
            f"{host.hostname} serves {administered[0]}, administered by {request.email}",
        )
    return _deny(
        Reason.NOT_A_TENANT,
        f"{request.email} may not sign in through {host.hostname}: the host serves neither "
        "their mailbox domain nor a domain they administer",
    )


def _allow(reason: Reason, message: str) -> Decision:
    return Decision(allowed=True, reason=reason, message=message)


def _deny(reason: Reason, message: str) -> Decision:
    return Decision(allowed=False, reason=reason, message=message)
