"""Who keeps a name several objects claim: the one rule the operator, the nginx agent and the
tenancy gate share. Pure.

The admission webhook refuses a second VirtualHost for a hostname (and a second MailDomain for a
domain), but its failurePolicy is Ignore: while it is down, duplicates get in. Then the oldest
claim wins (creationTimestamp, then name), as with ingress-nginx's conflicting hosts. Every
component decides with :func:`senior` from the same two fields, so the operator provisions,
nginx serves and the gate admits for the same object, whatever order each saw them in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True, order=True)
class Claim:
    """One object's claim on a name. Ordered oldest first, then by name."""

    created: str
    """``metadata.creationTimestamp``: RFC 3339 in UTC with second precision, so it sorts as a
    string. Empty (unknown) sorts first: objects written before this field was recorded predate
    any rival made since."""
    name: str


def senior(claims: Iterable[Claim]) -> Claim:
    """The claim that keeps the name."""
    return min(claims)


def claimed_by_older(claim: Claim, rivals: Iterable[Claim]) -> str | None:
    """The name of the object that keeps the name instead of ``claim``'s, or ``None``."""
    first = senior([*rivals, claim])
    return None if first.name == claim.name else first.name


def hostname_taken_message(hostname: str, owner: str) -> str:
    """Why a VirtualHost that lost its hostname to ``owner`` is not provisioned. Stable text."""
    return (
        f"hostname {hostname} is already used by VirtualHost {owner}, which is older and keeps "
        "it; delete this VirtualHost, or delete that one and retry this one"
    )


def additional_name_taken_message(name: str, owner: str) -> str:
    """Why a VirtualHost one of whose additional names an older host serves is not
    provisioned. Stable text."""
    return (
        f"additional name {name} is already served by VirtualHost {owner}, which is older and "
        "keeps it; remove it from spec.additionalNames here or there, then retry this one"
    )
