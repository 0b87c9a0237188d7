"""The renewal scanner's task: a paced scan of the certificates in the host catalog, and the
clock-driven duties beside it (expiry in the conditions, automatic retries)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from vhost_operator.certs import RenewalWindow
from vhost_operator.handlers.context import OperatorContext
from vhost_operator.provisioning.chain import utc_now, with_conditions
from vhost_operator.provisioning.renewal import run_scanner
from vhost_operator.provisioning.renewal_info import Pacing, RenewalInfoKeeper, run_renewal_info
from vhost_operator.provisioning.retries import RetryPolicy
from vhost_operator.resources.models import (
    RENEW_ANNOTATION,
    RETRY_ANNOTATION,
    RenewalWindowStatus,
)
from vhost_operator.settings import Settings

logger = logging.getLogger(__name__)

CATALOG_WAIT = 60.0
"""Seconds between two log lines while the scanner waits for the catalog's first list."""


class ScannerWrites:
    """What the scanner asks of the API server, one host at a time (``ScannerActions``)."""

    def __init__(self, context: OperatorContext) -> None:
        self._context = context

    async def request_renewal(self, name: str, now: datetime) -> None:
        await self._context.virtualhosts.annotate(name, {RENEW_ANNOTATION: now.isoformat()})

    async def mark_expired(self, name: str, now: datetime) -> None:
        # The catalog keeps too little of a host to rewrite its conditions: read it whole. Only
        # hosts whose certificate just expired get here, one read and one write each; the write
        # is conditional, so it never undoes a status a chain wrote meanwhile (it is retried at
        # the scanner's next wake instead).
        found = await self._context.virtualhosts.read(name)
        if found is None:
            return
        host, version = found
        conditions = with_conditions(host.status, host, now).conditions
        if conditions != host.status.conditions:
            await self._context.virtualhosts.write_conditions(name, conditions, version)
            logger.info("VirtualHost %s: certificate expired", name)

    async def write_renewal_window(
        self, name: str, serial: str, window: RenewalWindow, renewal_time: datetime
    ) -> None:
        status = RenewalWindowStatus(start=window.start, end=window.end, source=window.source)
        written = await self._context.virtualhosts.write_renewal_window(
            name, serial, status, renewal_time.isoformat()
        )
        if not written:
            logger.info("VirtualHost %s: certificate %s replaced meanwhile", name, serial)

    async def request_retry(self, name: str, value: str) -> None:
        # The user's retry annotation: the chain takes it up exactly as it does theirs.
        await self._context.virtualhosts.annotate(name, {RETRY_ANNOTATION: value})
        logger.info("VirtualHost %s: retried automatically after backoff", name)


def retry_policy(settings: Settings) -> RetryPolicy | None:
    if not settings.retry_backoff_enabled:
        return None
    return RetryPolicy(
        initial=settings.retry_backoff_initial,
        maximum=settings.retry_backoff_max,
        jitter=settings.retry_backoff_jitter,
    )


def start_scanner(context: OperatorContext) -> asyncio.Task[None]:
    async def scan_when_loaded() -> None:
        await context.until_leading()  # the scanner's writes are provisioning: the leader's
        # A scan of a catalog still being listed would miss the hosts not listed yet.
        while not await context.hosts.wait(CATALOG_WAIT):
            logger.info("renewal scanner: waiting for the list of VirtualHosts")
        await run_scanner(
            context.hosts,
            ScannerWrites(context),
            interval=context.settings.renewal_interval,
            spacing=context.settings.renewal_spacing,
            retry=retry_policy(context.settings),
            clock=utc_now,
        )

    return asyncio.create_task(scan_when_loaded(), name="renewal-scanner")


def start_renewal_info(context: OperatorContext) -> asyncio.Task[None] | None:
    """The task keeping ACME Renewal Information current (``None`` without ACME)."""
    source, settings = context.renewal_info, context.settings
    if source is None or not settings.renewal_info_enabled:
        return None
    pacing = Pacing(
        rate=settings.renewal_info_rate,
        max_age=timedelta(seconds=settings.renewal_info_max_age),
    )
    keeper = RenewalInfoKeeper(source, ScannerWrites(context), pacing)

    async def keep_when_loaded() -> None:
        await context.until_leading()  # its writes (moved windows) are the leader's, as the scan's
        while not await context.hosts.wait(CATALOG_WAIT):
            pass  # the scanner says so in the log
        await run_renewal_info(context.hosts, keeper, clock=utc_now)

    return asyncio.create_task(keep_when_loaded(), name="renewal-info")
