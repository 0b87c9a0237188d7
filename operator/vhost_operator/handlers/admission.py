"""Webhook handlers: kopf's admission requests → ``admission.rules`` (validating) and
``admission.finalizer`` (mutating: kopf's finalizer on a new VirtualHost or MailDomain).

The handlers are coroutines although they never wait: kopf runs a plain function in a thread
pool, and the hop there and back costs more than the checks themselves (milliseconds of latency
for the API server's call). They read the operator's catalogs (``vhost_operator.catalog``).

failurePolicy is Ignore (``ignore_failures=True``): the CRD schema refuses malformed objects even
while the operator is down, and what the webhook adds (uniqueness, the 409 on a stray retry) the
operator checks again when it handles the object. Fail would instead block every VirtualHost
and MailDomain edit whenever the operator is unavailable. Rules cover only this API group, so a
stopped operator never touches other API traffic.
"""

from __future__ import annotations

from typing import Any

import kopf

from vhost_operator.admission.configuration import FINALIZING, OPERATIONS
from vhost_operator.admission.finalizer import finalizers_with
from vhost_operator.admission.rules import Refusal, review_maildomain, review_virtualhost
from vhost_operator.handlers.context import context_of
from vhost_operator.resources.models import (
    GROUP,
    MAILDOMAINS,
    VERSION,
    VIRTUALHOSTS,
    served_names,
)

CATALOG_WAIT = 2.0
"""Seconds a review waits for the catalogs' first list just after a start; past that it checks
against what is listed so far (failurePolicy is Ignore anyway, and the operator checks again)."""


@kopf.on.validate(
    GROUP,
    VERSION,
    VIRTUALHOSTS,
    id=VIRTUALHOSTS,  # admission.configuration.REVIEWED routes the webhook by this id
    operations=list(OPERATIONS),
    ignore_failures=True,
)
async def validate_virtualhost(
    *,
    body: kopf.Body,
    name: str,
    memo: kopf.Memo,
    old: kopf.Body | None = None,
    operation: str | None = None,
    **_: Any,
) -> None:
    context = context_of(memo)
    hosts = context.hosts
    await hosts.wait(CATALOG_WAIT)
    hostname = body.get("spec", {}).get("hostname", "")
    owners = list(hosts.serving(hostname))
    others = served_names(body.get("spec") or {})[1:]
    name_owners = {n: list(hosts.serving(n)) for n in others}
    domains = body.get("spec", {}).get("domains") or []
    domain_owners = {d: list(hosts.listing(d)) for d in domains}
    try:
        review_virtualhost(
            body,
            old if operation == "UPDATE" else None,
            name=name,
            hostname_owners=owners,
            domain_owners=domain_owners,
            primary_hostnames=context.settings.primary_hostnames,
            name_owners=name_owners,
        )
    except Refusal as refusal:
        raise kopf.AdmissionError(refusal.message, code=refusal.code) from None


# One registration per resource of admission.configuration.FINALIZED, each with the id that
# admission.configuration.mutating_webhooks routes the webhook by: kopf calls the handler
# registered for the request's resource and that id.
@kopf.on.mutate(
    GROUP, VERSION, VIRTUALHOSTS, id=FINALIZING, operations=["CREATE"], ignore_failures=True
)
@kopf.on.mutate(
    GROUP, VERSION, MAILDOMAINS, id=FINALIZING, operations=["CREATE"], ignore_failures=True
)
async def add_finalizer(*, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """kopf's finalizer, so that kopf's first cycle runs the handlers instead of adding it (kopf
    answers with the JSON patch of the change: the finalizer appended, others kept)."""
    if (finalizers := finalizers_with(body)) is not None:
        patch.metadata["finalizers"] = finalizers


@kopf.on.validate(
    GROUP,
    VERSION,
    MAILDOMAINS,
    id=MAILDOMAINS,
    operations=list(OPERATIONS),
    ignore_failures=True,
)
async def validate_maildomain(*, body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> None:
    context = context_of(memo)
    claims = context.claims
    await claims.wait(CATALOG_WAIT)
    domain = body.get("spec", {}).get("name", "")
    owners = [claim.name for claim in claims.claims(domain)]
    primaries = context.settings.primary_hostnames
    virtual_host = body.get("spec", {}).get("virtualHost") or ""
    served = {
        host: record.hostname
        for host in context.hosts.serving(virtual_host)
        if (record := context.hosts.get(host)) is not None and record.hostname != virtual_host
    }
    try:
        review_maildomain(
            body,
            name=name,
            domain_owners=owners,
            primary_hostnames=primaries,
            served_as_other_name=served,
        )
    except Refusal as refusal:
        raise kopf.AdmissionError(refusal.message, code=refusal.code) from None
