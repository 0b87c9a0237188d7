"""The renewal scanner's inputs and task: an in-memory index of certificates, a paced scan."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import kopf

from vhost_operator.handlers.context import OperatorContext
from vhost_operator.provisioning.chain import utc_now
from vhost_operator.provisioning.renewal import RenewalCandidate, run_scanner
from vhost_operator.resources.models import (
    GROUP,
    RENEW_ANNOTATION,
    VERSION,
    VIRTUALHOSTS,
    VirtualHost,
)


@kopf.index(GROUP, VERSION, VIRTUALHOSTS)  # a coroutine: kopf runs plain functions in a thread
async def renewal_candidates(body: kopf.Body, **_: Any) -> dict[str, RenewalCandidate] | None:
    candidate = RenewalCandidate.of(VirtualHost.from_body(body))
    return None if candidate is None else {candidate.name: candidate}


def start_scanner(
    context: OperatorContext, index: kopf.Index[str, RenewalCandidate]
) -> asyncio.Task[None]:
    async def request_renewal(name: str, now: datetime) -> None:
        await context.virtualhosts.annotate(name, {RENEW_ANNOTATION: now.isoformat()})

    def candidates() -> Iterator[RenewalCandidate]:
        # Walked once, synchronously, by the scan: the index cannot change under it.
        return (candidate for store in index.values() for candidate in store)

    return asyncio.create_task(
        run_scanner(
            candidates,
            request_renewal,
            interval=context.settings.renewal_interval,
            spacing=context.settings.renewal_spacing,
            clock=utc_now,
        ),
        name="renewal-scanner",
    )
