"""MailDomain events → ``provisioning.linking``.

Where a domain is listed and which MailDomain claims it come from the operator's catalogs
(``vhost_operator.catalog``), which may lag by a watch event; linking reads every hint again
from the API server before writing.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from vhost_operator.errors import VhostOperatorError
from vhost_operator.handlers.context import OperatorContext, context_of
from vhost_operator.kube.events import Involved
from vhost_operator.provisioning.chain import utc_now
from vhost_operator.provisioning.linking import (
    Announce,
    DomainClaimed,
    LinkOutcome,
    reconcile_maildomain,
    release_maildomain,
)
from vhost_operator.resources.maildomains import (
    LINKED,
    MailDomain,
    status_after,
    status_failed,
)
from vhost_operator.resources.models import GROUP, MAILDOMAINS, VERSION

logger = logging.getLogger(__name__)

LINK_RETRY_DELAY = 10.0
"""Seconds before kopf retries a link that failed (a conflict that outlasted our own retries,
the API server unreachable, the host still being deleted)."""

CLAIM_RETRY_DELAY = 60.0
"""Seconds between checks of a MailDomain whose domain an older MailDomain describes: once that
one is deleted, this one links."""


CATALOG_WAIT = 30.0
"""Seconds a MailDomain handler waits for the catalogs' first list after a start (linking
reads where a domain is listed, and which MailDomain claims it, from them)."""


async def _catalogs(context: OperatorContext) -> None:
    synced = await context.hosts.wait(CATALOG_WAIT) and await context.claims.wait(CATALOG_WAIT)
    if not synced:
        raise kopf.TemporaryError("VirtualHosts and MailDomains not listed yet", delay=10)


# -- handlers ----------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, MAILDOMAINS)
@kopf.on.create(GROUP, VERSION, MAILDOMAINS)
@kopf.on.update(GROUP, VERSION, MAILDOMAINS)
async def reconcile(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    context = context_of(memo)
    await _catalogs(context)
    domain = MailDomain.from_body(body)
    claims = context.claims.claims(domain.spec.name)
    try:
        outcome = await reconcile_maildomain(domain, context.hostdomains, context.hosts, claims)
    except DomainClaimed as claimed:
        await _failed(context, domain, reason="DomainClaimed", message=str(claimed))
        raise kopf.TemporaryError(str(claimed), delay=CLAIM_RETRY_DELAY) from None
    except VhostOperatorError as failure:
        await _failed(context, domain, reason="LinkFailed", message=str(failure))
        raise kopf.TemporaryError(str(failure), delay=LINK_RETRY_DELAY) from None
    status = status_after(domain, linked=outcome.linked, hostname=outcome.hostname, now=utc_now())
    await context.maildomains.write_status(domain.name, status)
    _announce(context, domain, outcome)


@kopf.on.delete(GROUP, VERSION, MAILDOMAINS)
async def delete(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The finalizer's work: take the domain off its host before the MailDomain goes."""
    context = context_of(memo)
    await _catalogs(context)
    domain = MailDomain.from_body(body)
    claims = context.claims.claims(domain.spec.name)
    try:
        outcome = await release_maildomain(domain, context.hostdomains, context.hosts, claims)
    except VhostOperatorError as failure:
        raise kopf.TemporaryError(str(failure), delay=LINK_RETRY_DELAY) from None
    _announce(context, domain, outcome)


async def _failed(
    context: OperatorContext, domain: MailDomain, *, reason: str, message: str
) -> None:
    status = status_failed(domain, reason=reason, message=message, now=utc_now())
    await context.maildomains.write_status(domain.name, status)
    # kopf retries until it works: one Warning per new problem, not one per retry.
    before = domain.status.condition(LINKED)
    if before is None or (before.reason, before.message) != (reason, message):
        maildomain_event(context, domain, reason=reason, message=message, warning=True)


# -- events ------------------------------------------------------------------------------------


def _announce(context: OperatorContext, domain: MailDomain, outcome: LinkOutcome) -> None:
    name = domain.spec.name
    for host in outcome.removed_from:
        maildomain_event(context, domain, reason="Unlinked", message=f"{name} unlinked from {host}")
    if outcome.created:
        maildomain_event(
            context,
            domain,
            reason="HostCreated",
            message=f"created VirtualHost {outcome.linked} for {outcome.hostname}",
        )
    if outcome.added:
        maildomain_event(
            context,
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


def unlinked_announcer(context: OperatorContext) -> Announce:
    """``linking.Announce`` for VirtualHost deletion."""

    def announce(domain: MailDomain, message: str) -> None:
        maildomain_event(context, domain, reason="Unlinked", message=message)

    return announce


def maildomain_event(
    context: OperatorContext,
    domain: MailDomain,
    *,
    reason: str,
    message: str,
    warning: bool = False,
) -> None:
    context.events.post(
        Involved(f"{GROUP}/{VERSION}", "MailDomain", domain.name, domain.uid),
        type="Warning" if warning else "Normal",
        reason=reason,
        message=message,
    )
