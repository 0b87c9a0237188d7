"""Validating webhook handlers: kopf's admission requests → ``admission.rules``.

The handlers are coroutines although they never wait: kopf runs a plain function in a thread
pool, and the hop there and back costs more than the checks themselves (milliseconds of latency
for the API server's call). They read the indexes ``handlers.maildomains`` keeps (always loaded).

failurePolicy is Ignore (``ignore_failures=True``): the CRD schema refuses malformed objects even
while the operator is down, and what the webhook adds (uniqueness, the 409 on a stray retry) the
operator checks again when it handles the object. Fail would instead block every VirtualHost
and MailDomain edit whenever the operator is unavailable. Rules cover only this API group, so a
stopped operator never touches other API traffic.
"""

from __future__ import annotations

from typing import Any

import kopf

from vhost_operator.admission.rules import Refusal, review_maildomain, review_virtualhost
from vhost_operator.resources.maildomains import Claim
from vhost_operator.resources.models import GROUP, MAILDOMAINS, VERSION, VIRTUALHOSTS


@kopf.on.validate(
    GROUP,
    VERSION,
    VIRTUALHOSTS,
    id="virtualhosts",
    operations=["CREATE", "UPDATE"],
    ignore_failures=True,
)
async def validate_virtualhost(
    *,
    body: kopf.Body,
    name: str,
    old: kopf.Body | None = None,
    operation: str | None = None,
    hosts_by_hostname: kopf.Index[str, str] | None = None,
    hosts_by_domain: kopf.Index[str, str] | None = None,
    **_: Any,
) -> None:
    hostname = body.get("spec", {}).get("hostname", "")
    owners = list((hosts_by_hostname or {}).get(hostname, []))
    domains = body.get("spec", {}).get("domains") or []
    domain_owners = {d: list((hosts_by_domain or {}).get(d, [])) for d in domains}
    try:
        review_virtualhost(
            body,
            old if operation == "UPDATE" else None,
            name=name,
            hostname_owners=owners,
            domain_owners=domain_owners,
        )
    except Refusal as refusal:
        raise kopf.AdmissionError(refusal.message, code=refusal.code) from None


@kopf.on.validate(
    GROUP,
    VERSION,
    MAILDOMAINS,
    id="maildomains",
    operations=["CREATE", "UPDATE"],
    ignore_failures=True,
)
async def validate_maildomain(
    *,
    body: kopf.Body,
    name: str,
    maildomain_claims: kopf.Index[str, Claim] | None = None,
    **_: Any,
) -> None:
    domain = body.get("spec", {}).get("name", "")
    owners = [claim.name for claim in (maildomain_claims or {}).get(domain, [])]
    try:
        review_maildomain(body, name=name, domain_owners=owners)
    except Refusal as refusal:
        raise kopf.AdmissionError(refusal.message, code=refusal.code) from None
