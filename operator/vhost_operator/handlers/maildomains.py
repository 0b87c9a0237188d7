"""MailDomain events → ``provisioning.linking``; and the indexes linking looks things up in.

The indexes are registered whatever the settings (the admission webhook uses them too). kopf
fills them before any handler runs and keeps them current from its watches; linking reads every
hint again from the API server before writing. They are coroutines although they never wait:
kopf runs a plain function in a thread, for every watch event, and the hop costs more than the
function itself.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping
from typing import Any, cast

import kopf

from vhost_operator.errors import VhostOperatorError
from vhost_operator.handlers.context import OperatorContext, context_of
from vhost_operator.provisioning.chain import utc_now
from vhost_operator.provisioning.linking import (
    DomainClaimed,
    LinkOutcome,
    reconcile_maildomain,
    release_maildomain,
)
from vhost_operator.resources.maildomains import (
    LINKED,
    Claim,
    MailDomain,
    status_after,
    status_failed,
)
from vhost_operator.resources.models import GROUP, MAILDOMAINS, VERSION, VIRTUALHOSTS

logger = logging.getLogger(__name__)

LINK_RETRY_DELAY = 10.0
"""Seconds before kopf retries a link that failed (a conflict that outlasted our own retries,
the API server unreachable, the host still being deleted)."""

CLAIM_RETRY_DELAY = 60.0
"""Seconds between checks of a MailDomain whose domain an older MailDomain describes: once that
one is deleted, this one links."""


# -- indexes -----------------------------------------------------------------------------------


@kopf.index(GROUP, VERSION, VIRTUALHOSTS)
async def hosts_by_hostname(spec: kopf.Spec, name: str, **_: Any) -> dict[str, str]:
    return {spec.get("hostname", ""): name}


@kopf.index(GROUP, VERSION, VIRTUALHOSTS)
async def hosts_by_domain(spec: kopf.Spec, name: str, **_: Any) -> dict[str, str]:
    return dict.fromkeys(spec.get("domains") or (), name)


@kopf.index(GROUP, VERSION, MAILDOMAINS)
async def maildomain_claims(
    spec: kopf.Spec, name: str, meta: kopf.Meta, **_: Any
) -> dict[str, Claim]:
    return {spec.get("name", ""): Claim(meta.get("creationTimestamp", ""), name)}


@dataclasses.dataclass(frozen=True)
class IndexHints:
    """``linking.HostHints`` over kopf's indexes (key → collection of VirtualHost names)."""

    by_hostname: Mapping[str, Collection[str]]
    by_domain: Mapping[str, Collection[str]]

    def named_for(self, hostname: str) -> Collection[str]:
        return list(self.by_hostname.get(hostname, ()))

    def listing(self, domain: str) -> Collection[str]:
        return list(self.by_domain.get(domain, ()))


def _claims_on(domain: str, index: kopf.Index[str, Claim] | None) -> list[Claim]:
    return list(index.get(domain, ())) if index is not None else []


# -- handlers ----------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, MAILDOMAINS)
@kopf.on.create(GROUP, VERSION, MAILDOMAINS)
@kopf.on.update(GROUP, VERSION, MAILDOMAINS)
async def reconcile(
    *,
    body: kopf.Body,
    memo: kopf.Memo,
    hosts_by_hostname: kopf.Index[str, str] | None = None,
    hosts_by_domain: kopf.Index[str, str] | None = None,
    maildomain_claims: kopf.Index[str, Claim] | None = None,
    **_: Any,
) -> None:
    context = context_of(memo)
    domain = MailDomain.from_body(body)
    hints = IndexHints(hosts_by_hostname or {}, hosts_by_domain or {})
    claims = _claims_on(domain.spec.name, maildomain_claims)
    try:
        outcome = await reconcile_maildomain(domain, context.hostdomains, hints, claims)
    except DomainClaimed as claimed:
        await _failed(context, domain, reason="DomainClaimed", message=str(claimed))
        raise kopf.TemporaryError(str(claimed), delay=CLAIM_RETRY_DELAY) from None
    except VhostOperatorError as failure:
        await _failed(context, domain, reason="LinkFailed", message=str(failure))
        raise kopf.TemporaryError(str(failure), delay=LINK_RETRY_DELAY) from None
    status = status_after(domain, linked=outcome.linked, hostname=outcome.hostname, now=utc_now())
    await context.maildomains.write_status(domain.name, status)
    _announce(domain, outcome)


@kopf.on.delete(GROUP, VERSION, MAILDOMAINS)
async def delete(
    *,
    body: kopf.Body,
    memo: kopf.Memo,
    hosts_by_hostname: kopf.Index[str, str] | None = None,
    hosts_by_domain: kopf.Index[str, str] | None = None,
    maildomain_claims: kopf.Index[str, Claim] | None = None,
    **_: Any,
) -> None:
    """The finalizer's work: take the domain off its host before the MailDomain goes."""
    context = context_of(memo)
    domain = MailDomain.from_body(body)
    hints = IndexHints(hosts_by_hostname or {}, hosts_by_domain or {})
    claims = _claims_on(domain.spec.name, maildomain_claims)
    try:
        outcome = await release_maildomain(domain, context.hostdomains, hints, claims)
    except VhostOperatorError as failure:
        raise kopf.TemporaryError(str(failure), delay=LINK_RETRY_DELAY) from None
    _announce(domain, outcome)


async def _failed(
    context: OperatorContext, domain: MailDomain, *, reason: str, message: str
) -> None:
    status = status_failed(domain, reason=reason, message=message, now=utc_now())
    await context.maildomains.write_status(domain.name, status)
    # kopf retries until it works: one Warning per new problem, not one per retry.
    before = domain.status.condition(LINKED)
    if before is None or (before.reason, before.message) != (reason, message):
        maildomain_event(domain, reason=reason, message=message, warning=True)


# -- events ------------------------------------------------------------------------------------


def _announce(domain: MailDomain, outcome: LinkOutcome) -> None:
    name = domain.spec.name
    for host in outcome.removed_from:
        maildomain_event(domain, reason="Unlinked", message=f"{name} unlinked from {host}")
    if outcome.created:
        maildomain_event(
            domain,
            reason="HostCreated",
            message=f"created VirtualHost {outcome.linked} for {outcome.hostname}",
        )
    if outcome.added:
        maildomain_event(
            domain,
            reason="Linked",
            message=f"{name} linked to VirtualHost {outcome.linked} ({outcome.hostname})",
        )
    if outcome.created or outcome.added or outcome.removed_from:
        logger.info(
            "MailDomain %s: linked to %s, removed from %s",
            domain.name,
            outcome.linked,
            list(outcome.removed_from),
        )


def announce_unlinked(domain: MailDomain, message: str) -> None:
    """``linking.Announce`` for VirtualHost deletion."""
    maildomain_event(domain, reason="Unlinked", message=message)


def maildomain_event(
    domain: MailDomain, *, reason: str, message: str, warning: bool = False
) -> None:
    # kopf only reads the identifying fields of the object it posts an Event about.
    reference = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MailDomain",
        "metadata": {"name": domain.name, "uid": domain.uid},
    }
    kopf.event(
        cast(kopf.Body, reference),
        type="Warning" if warning else "Normal",
        reason=reason,
        message=message,
    )
