"""Certificate renewal: which hosts are due, and the scanner that asks for their renewal (and
keeps the other clock-driven duties: expiry in the conditions, automatic retries).

The scanner reads an in-memory view of every host (kept current by the watch), so a scan of
10,000 hosts costs no API call at all; only a host that is due gets one write, the request that
makes its own handler renew it. Requests are paced (``renewal_spacing``) so that thousands of
hosts issued together on a migration day are not renewed in one burst on the same day later.
Disabled hosts are skipped: nginx does not serve their challenge, so a renewal would fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Protocol

from vhost_operator.metrics import RENEWAL_REQUESTS, RENEWAL_SCAN_SECONDS
from vhost_operator.provisioning.chain import (
    ChainRecorder,
    OnDeferred,
    Step,
    StepDeferred,
    StepOutcome,
    failure_message,
    with_conditions,
)
from vhost_operator.provisioning.retries import (
    RetryCandidate,
    RetryPolicy,
    due_for_retry,
    next_retry,
)
from vhost_operator.resources.conditions import CERTIFICATE_VALID, set_condition
from vhost_operator.resources.models import (
    ConditionStatus,
    Phase,
    RenewalWindowStatus,
    StepError,
    VirtualHost,
    VirtualHostStatus,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RenewalCandidate:
    """What the scanner needs to know of a host that holds a certificate."""

    name: str
    enabled: bool
    phase: Phase | None
    renewal_time: datetime
    not_after: datetime
    requested: str | None
    """The renewal request already pending on the host, if any."""
    certificate_valid: bool = False
    """Whether the status says ``CertificateValid=True`` (what must turn False at expiry)."""
    serial: str = ""
    certificate_id: str | None = None
    """The certificate's ACME Renewal Information ID (``provisioning.renewal_info``)."""
    window: RenewalWindowStatus | None = None
    """The renewal window the status shows."""

    @classmethod
    def of(cls, host: VirtualHost) -> RenewalCandidate | None:
        certificate = host.status.certificate
        if certificate is None:
            return None
        pending = host.renewal_request
        if pending is not None and pending == host.status.observed_renewal:
            pending = None
        valid = any(
            c.type == CERTIFICATE_VALID and c.status == ConditionStatus.TRUE
            for c in host.status.conditions
        )
        return cls(
            name=host.name,
            enabled=host.spec.enabled,
            phase=host.status.phase,
            renewal_time=certificate.renewal_time,
            not_after=certificate.not_after,
            requested=pending,
            certificate_valid=valid,
            serial=certificate.serial,
            certificate_id=certificate.certificate_id,
            window=certificate.renewal_window,
        )


def due_for_renewal(
    candidates: Iterable[RenewalCandidate], now: datetime
) -> list[RenewalCandidate]:
    """Enabled, Ready hosts past their renewal time with no request pending, earliest first."""
    due = [
        c
        for c in candidates
        if c.enabled and c.phase == Phase.READY and c.renewal_time <= now and c.requested is None
    ]
    return sorted(due, key=lambda c: c.renewal_time)


RequestRenewal = Callable[[str, datetime], Awaitable[None]]


async def scan_once(
    candidates: Iterable[RenewalCandidate],
    request_renewal: RequestRenewal,
    *,
    now: datetime,
    spacing: float,
) -> int:
    """Ask each due host for a renewal, ``spacing`` seconds apart; return how many were asked."""
    started = time.perf_counter()
    due = due_for_renewal(candidates, now)
    RENEWAL_SCAN_SECONDS.observe(time.perf_counter() - started)
    for index, candidate in enumerate(due):
        if index:
            await asyncio.sleep(spacing)
        try:
            await request_renewal(candidate.name, now)
        except Exception:  # one host's API error must not stop the others' renewals
            logger.exception("could not request the renewal of VirtualHost %s", candidate.name)
        else:
            RENEWAL_REQUESTS.inc()
    if due:
        logger.info("renewal scan: %d host(s) due", len(due))
    return len(due)


def expired_but_valid(candidates: Iterable[RenewalCandidate], now: datetime) -> list[str]:
    """Hosts whose status still says ``CertificateValid=True`` after ``notAfter``."""
    return [c.name for c in candidates if c.certificate_valid and c.not_after <= now]


def next_expiry(candidates: Iterable[RenewalCandidate], now: datetime) -> datetime | None:
    """The next ``notAfter`` to come among certificates the status calls valid."""
    valid = (c.not_after for c in candidates if c.certificate_valid and c.not_after > now)
    return min(valid, default=None)


class ScannedHosts(Protocol):
    """The in-memory catalog, as the scanner reads it (``catalog.HostCatalog``)."""

    def candidates(self) -> Iterable[RenewalCandidate]: ...

    def failed(self) -> Iterable[RetryCandidate]: ...

    def plan_wake(self, at: datetime) -> None:
        """Tell the catalog when the scanner wakes next: an object arriving with a duty due
        earlier (a new failure, a certificate expiring sooner) wakes it early."""

    async def wait_for_duty(self, timeout: float) -> None:
        """Return after ``timeout`` seconds, or as soon as an earlier duty arrives (or has
        arrived since the last wait)."""


class ScannerActions(Protocol):
    """The API writes the scanner asks for, one host at a time."""

    async def request_renewal(self, name: str, now: datetime) -> None: ...

    async def mark_expired(self, name: str, now: datetime) -> None:
        """Record ``CertificateValid=False`` (reason Expired) on the host."""

    async def request_retry(self, name: str, value: str) -> None: ...


MIN_PAUSE = 1.0
"""Seconds the scanner rests at least between two walks of the catalog, however many duties
arrive (a burst of failures), so that its walks cannot crowd out the event loop."""


async def keep_time(
    hosts: ScannedHosts,
    actions: ScannerActions,
    *,
    now: datetime,
    retry: RetryPolicy | None,
) -> datetime | None:
    """The duties that follow the clock rather than events: ``CertificateValid`` turns False
    when a certificate expires, whatever the host's phase or state (a disabled or Failed host
    runs no chain that would notice), and Failed hosts are retried once their backoff passed.
    Only hosts whose status is wrong or due get an API call. Returns when the next one is due."""
    for name in expired_but_valid(hosts.candidates(), now):
        try:
            await actions.mark_expired(name, now)
        except Exception:  # one host's API error must not hold up the others
            logger.exception("could not record the expiry of VirtualHost %s", name)
    upcoming = [next_expiry(hosts.candidates(), now)]
    if retry is not None:
        asked = set()
        for candidate in due_for_retry(hosts.failed(), now, retry):
            asked.add(candidate.name)  # the catalog shows the request only once it is watched
            try:
                await actions.request_retry(candidate.name, candidate.request_value)
            except Exception:  # e.g. a user's retry won the race: the host is not Failed now
                logger.exception("could not retry VirtualHost %s", candidate.name)
        waiting = (c for c in hosts.failed() if c.name not in asked)
        upcoming.append(next_retry(waiting, retry))
    return min((when for when in upcoming if when is not None), default=None)


async def run_scanner(
    hosts: ScannedHosts,
    actions: ScannerActions,
    *,
    interval: float,
    spacing: float,
    retry: RetryPolicy | None,
    clock: Callable[[], datetime],
) -> None:
    """Scan for renewals now, then every ``interval`` seconds; in between, wake for expiries
    and retries when they fall due. Runs until cancelled.

    The first scan is at start: an operator restarted more often than the interval (upgrades,
    node drains, OOM kills against a daily interval) would otherwise never renew anything. The
    caller starts this once the catalog holds every host.
    """
    next_scan = clock()
    while True:
        if clock() >= next_scan:
            candidates = hosts.candidates()
            await scan_once(candidates, actions.request_renewal, now=clock(), spacing=spacing)
            next_scan = clock() + timedelta(seconds=interval)
        due = await keep_time(hosts, actions, now=clock(), retry=retry)
        wake = next_scan if due is None else min(next_scan, due)
        hosts.plan_wake(wake)
        await asyncio.sleep(MIN_PAUSE)
        await hosts.wait_for_duty((wake - clock()).total_seconds())


RENEWAL_CONDITION = "CertificateRenewal"
"""Condition on the outcome of the last renewal: a failed one leaves the host Ready and serving
its current certificate, so the phase alone would hide it."""


class CertificateRenewer(Protocol):
    async def renew(self, host: VirtualHost) -> StepOutcome: ...


class ServedRenewal:
    """A renewal that ends, like the chain, only when nginx serves the new certificate: the
    final step runs again with it (same config, new serial to wait for)."""

    def __init__(self, certificates: CertificateRenewer, final: Step) -> None:
        self._certificates = certificates
        self._final = final

    async def renew(self, host: VirtualHost) -> StepOutcome:
        renewed = await self._certificates.renew(host)
        status = host.status.model_copy(update={"certificate": renewed.certificate})
        served = await self._final.run(host.model_copy(update={"status": status}))
        return StepOutcome(
            message=f"{renewed.message}; {served.message}", certificate=renewed.certificate
        )


async def renew_certificate(
    host: VirtualHost,
    renewer: CertificateRenewer,
    recorder: ChainRecorder,
    *,
    clock: Callable[[], datetime],
    on_deferred: OnDeferred | None = None,
) -> VirtualHostStatus:
    """Renew ``host``'s certificate on request. A failure keeps the current certificate (and the
    host Ready) unless that certificate has expired, which makes the host Failed.

    When the CA asks for a pause, the request stays pending (not observed) and ``on_deferred``
    is told when to take it up again; the current certificate keeps serving meanwhile.
    """
    status = host.status.model_copy(update={"observed_renewal": host.renewal_request})
    try:
        outcome = await renewer.renew(host.model_copy(update={"status": status}))
    except StepDeferred as deferral:
        if on_deferred is None:
            raise
        waiting = _renewal_condition(
            host.status, host, ConditionStatus.FALSE, deferral.reason, str(deferral), clock()
        )
        await recorder.write_status(host, waiting)
        await recorder.event(host, warning=True, reason="RenewalWaiting", message=str(deferral))
        await on_deferred(host, deferral.until)
        return waiting
    except Exception as failure:  # an escape would skip the renewal silently
        message = failure_message("certificate", failure)
        status = _renewal_failed(status, host, message, clock())
        await recorder.write_status(host, status)
        await recorder.event(host, warning=True, reason="RenewalFailed", message=message)
        return status
    now = clock()
    status = status.model_copy(update={"certificate": outcome.certificate, "failed_attempts": 0})
    status = with_conditions(status, host, now)
    status = _renewal_condition(status, host, ConditionStatus.TRUE, "Renewed", outcome.message, now)
    await recorder.write_status(host, status)
    await recorder.event(host, warning=False, reason="Renewed", message=outcome.message)
    return status


def _renewal_failed(
    status: VirtualHostStatus, host: VirtualHost, message: str, now: datetime
) -> VirtualHostStatus:
    expired = status.certificate is None or status.certificate.not_after <= now
    update: dict[str, object] = {
        "failed_attempts": status.failed_attempts + 1,
        "last_failure_time": now,
    }
    if expired:
        update |= {
            "phase": Phase.FAILED,
            "error": StepError(step="certificate", message=message, at=now),
        }
    status = status.model_copy(update=update)
    status = with_conditions(status, host, now)
    return _renewal_condition(status, host, ConditionStatus.FALSE, "RenewalFailed", message, now)


def _renewal_condition(
    status: VirtualHostStatus,
    host: VirtualHost,
    state: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
) -> VirtualHostStatus:
    conditions = set_condition(
        status.conditions,
        type=RENEWAL_CONDITION,
        status=state,
        reason=reason,
        message=message,
        now=now,
        observed_generation=host.generation,
    )
    return status.model_copy(update={"conditions": conditions})
