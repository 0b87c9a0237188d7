"""The renewal scanner's task: a paced scan of the certificates in the host catalog."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from vhost_operator.handlers.context import OperatorContext
from vhost_operator.provisioning.chain import utc_now
from vhost_operator.provisioning.renewal import run_scanner
from vhost_operator.resources.models import RENEW_ANNOTATION

logger = logging.getLogger(__name__)

CATALOG_WAIT = 60.0
"""Seconds between two log lines while the scanner waits for the catalog's first list."""


def start_scanner(context: OperatorContext) -> asyncio.Task[None]:
    async def request_renewal(name: str, now: datetime) -> None:
        await context.virtualhosts.annotate(name, {RENEW_ANNOTATION: now.isoformat()})

    async def scan_when_loaded() -> None:
        # A scan of a catalog still being listed would miss the hosts not listed yet.
        while not await context.hosts.wait(CATALOG_WAIT):
            logger.info("renewal scanner: waiting for the list of VirtualHosts")
        await run_scanner(
            # Walked once, synchronously, by each scan: the catalog cannot change under it.
            context.hosts.candidates,
            request_renewal,
            interval=context.settings.renewal_interval,
            spacing=context.settings.renewal_spacing,
            clock=utc_now,
        )

    return asyncio.create_task(scan_when_loaded(), name="renewal-scanner")
