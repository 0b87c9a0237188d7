"""The renewal scanner's task: a paced scan of the certificates in the host catalog."""

from __future__ import annotations

import asyncio
from datetime import datetime

from vhost_operator.handlers.context import OperatorContext
from vhost_operator.provisioning.chain import utc_now
from vhost_operator.provisioning.renewal import run_scanner
from vhost_operator.resources.models import RENEW_ANNOTATION


def start_scanner(context: OperatorContext) -> asyncio.Task[None]:
    async def request_renewal(name: str, now: datetime) -> None:
        await context.virtualhosts.annotate(name, {RENEW_ANNOTATION: now.isoformat()})

    return asyncio.create_task(
        run_scanner(
            # Walked once, synchronously, by each scan: the catalog cannot change under it.
            context.hosts.candidates,
            request_renewal,
            interval=context.settings.renewal_interval,
            spacing=context.settings.renewal_spacing,
            clock=utc_now,
        ),
        name="renewal-scanner",
    )
