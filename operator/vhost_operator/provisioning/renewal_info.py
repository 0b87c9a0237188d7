"""ACME Renewal Information (RFC 9773): each certificate's suggested renewal window, kept
current while the CA may move it (an incident: the CA asks for early renewal of the affected
certificates by moving their windows, to the past for a revoked one).

The certificate step records the window when it issues; :func:`run_renewal_info` asks the CA
again for every enabled, Ready host's certificate when the CA's ``Retry-After`` says (clamped
to at least a minute and at most ``max_age``), at most ``rate`` requests per second, and writes
only when the window moved: the new window and a new renewal time in it. The renewal scanner
then renews the host when that time comes, as with any renewal time.

When to ask next lives in this task's memory, per certificate ID: reading it from the API
would cost a read per host and writing it a write per fetch. After a restart every certificate
is first asked at a time spread over ``max_age`` by its ID, so 10,000 hosts are never asked in
one burst, and a new certificate (whose window the step just fetched) is not asked twice at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Protocol

from vhost_operator.acme.errors import AcmeError, AcmeRetryLater
from vhost_operator.acme.orders import RenewalInfo
from vhost_operator.certs import ARI, RenewalWindow, time_in_window
from vhost_operator.provisioning.renewal import RenewalCandidate
from vhost_operator.resources.models import Phase

logger = logging.getLogger(__name__)

MIN_CHECK_INTERVAL = timedelta(minutes=1)
"""RFC 9773 suggests treating a ``Retry-After`` under a minute as a minute."""

MIN_PAUSE = 1.0
"""Seconds the task rests at least between two looks, however much is due."""

IDLE_WAKE = 60.0
"""Seconds the task sleeps at most between two looks at the catalog, to notice new hosts."""


class RenewalInfoSource(Protocol):
    """The CA's renewal information (``provisioning.certificates.AcmeAccount``)."""

    async def renewal_info(self, certificate_id: str) -> RenewalInfo | None:
        """The suggested window, or ``None`` when the CA offers or knows none."""


class HostsWithCertificates(Protocol):
    def candidates(self) -> Iterable[RenewalCandidate]: ...


class WindowWriter(Protocol):
    async def write_renewal_window(
        self, name: str, serial: str, window: RenewalWindow, renewal_time: datetime
    ) -> None:
        """Record the window and renewal time, unless the host's certificate changed."""


@dataclasses.dataclass(frozen=True)
class Pacing:
    rate: float
    """Requests per second at most."""
    max_age: timedelta
    """How long a window is trusted at most, however long the CA's ``Retry-After``."""


def next_check(now: datetime, retry_after: datetime | None, pacing: Pacing) -> datetime:
    """When to ask again: at the CA's ``Retry-After``, clamped to [a minute, ``max_age``]
    (``max_age`` itself when it is under a minute: a test's setting)."""
    shortest = min(MIN_CHECK_INTERVAL, pacing.max_age)
    wait = pacing.max_age if retry_after is None else retry_after - now
    return now + min(max(wait, shortest), pacing.max_age)


def first_check(certificate_id: str, now: datetime, pacing: Pacing) -> datetime:
    """When a certificate this task has not asked about yet is first asked: spread over
    ``max_age`` by its ID, so that a restart does not ask for every certificate at once."""
    digest = hashlib.sha256(certificate_id.encode()).digest()
    return now + pacing.max_age * (int.from_bytes(digest[:8], "big") / 2**64)


def worth_asking(candidate: RenewalCandidate, now: datetime) -> bool:
    """Hosts whose renewal the window could still move: enabled, Ready, not due yet, not
    expired (RFC 9773: never ask about an expired certificate), with a certificate ID."""
    return (
        bool(candidate.certificate_id)
        and candidate.enabled
        and candidate.phase == Phase.READY
        and candidate.requested is None
        and now < candidate.renewal_time
        and now < candidate.not_after
    )


def window_moved(candidate: RenewalCandidate, info: RenewalInfo) -> bool:
    known = candidate.window
    return known is None or (known.start, known.end, known.source) != (info.start, info.end, ARI)


class RenewalInfoKeeper:
    """Asks the CA for the windows that are due, paced; remembers when to ask next."""

    def __init__(self, source: RenewalInfoSource, writer: WindowWriter, pacing: Pacing) -> None:
        self._source = source
        self._writer = writer
        self._pacing = pacing
        self._checks: dict[str, datetime] = {}
        """Certificate ID → when to ask next."""

    @property
    def max_age(self) -> timedelta:
        return self._pacing.max_age

    async def check_due(
        self, candidates: Iterable[RenewalCandidate], clock: Callable[[], datetime]
    ) -> datetime | None:
        """Ask about every certificate due now, ``1 / rate`` seconds apart; return when the
        next one is due."""
        now = clock()
        present: dict[str, datetime] = {}
        due: list[RenewalCandidate] = []
        for candidate in candidates:
            if not worth_asking(candidate, now):
                continue
            ident = candidate.certificate_id or ""
            when = self._checks.get(ident) or first_check(ident, now, self._pacing)
            present[ident] = when
            if when <= now:
                due.append(candidate)
        self._checks = present  # certificates replaced or hosts gone are forgotten
        for index, candidate in enumerate(
            sorted(due, key=lambda c: present[c.certificate_id or ""])
        ):
            if index:
                await asyncio.sleep(1 / self._pacing.rate)
            await self._check(candidate, clock())
        return min(self._checks.values(), default=None)

    async def _check(self, candidate: RenewalCandidate, now: datetime) -> None:
        ident = candidate.certificate_id or ""
        try:
            info = await self._source.renewal_info(ident)
        except AcmeRetryLater as wait:
            self._checks[ident] = max(wait.until, now + MIN_CHECK_INTERVAL)
            return
        except AcmeError as error:
            logger.info(
                "VirtualHost %s: renewal information unavailable: %s", candidate.name, error
            )
            self._checks[ident] = next_check(now, None, self._pacing)
            return
        if info is None:  # the CA does not know it (or no longer offers ARI): lifetime rule
            self._checks[ident] = next_check(now, None, self._pacing)
            return
        self._checks[ident] = next_check(now, info.retry_after, self._pacing)
        if not window_moved(candidate, info):
            return
        window = RenewalWindow(start=info.start, end=info.end, source=ARI)
        renewal_time = time_in_window(window, candidate.serial)
        try:
            await self._writer.write_renewal_window(
                candidate.name, candidate.serial, window, renewal_time
            )
        except Exception:  # one host's API error must not stop the others
            logger.exception(
                "could not record the renewal window of VirtualHost %s", candidate.name
            )
            self._checks[ident] = now  # asked again at the next look
            return
        logger.info(
            "VirtualHost %s: the CA suggests renewal from %s to %s; renewing at %s",
            candidate.name,
            window.start.isoformat(),
            window.end.isoformat(),
            renewal_time.isoformat(),
        )


async def run_renewal_info(
    hosts: HostsWithCertificates,
    keeper: RenewalInfoKeeper,
    *,
    clock: Callable[[], datetime],
) -> None:
    """Keep the renewal windows current until cancelled (see the module docstring)."""
    logger.info("keeping ACME renewal information current")
    # New certificates are first asked about within max_age: looking more rarely would delay it.
    idle = min(IDLE_WAKE, keeper.max_age.total_seconds())
    while True:
        upcoming = await keeper.check_due(hosts.candidates(), clock)
        wait = idle if upcoming is None else (upcoming - clock()).total_seconds()
        await asyncio.sleep(max(min(wait, idle), MIN_PAUSE))
