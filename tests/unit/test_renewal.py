"""Which hosts the renewal scanner asks to renew, and what a renewal writes."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY

from tests.unit.builders import virtualhost
from vhost_operator.errors import VhostOperatorError
from vhost_operator.provisioning.chain import StepDeferred, StepOutcome
from vhost_operator.provisioning.renewal import (
    RenewalCandidate,
    due_for_renewal,
    renew_certificate,
    run_scanner,
    scan_once,
)
from vhost_operator.provisioning.retries import RetryCandidate, RetryPolicy
from vhost_operator.resources.models import (
    RENEW_ANNOTATION,
    CertificateStatus,
    Phase,
    VirtualHost,
    VirtualHostStatus,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
REQUESTS_TOTAL = "vhost_operator_renewal_requests_total"


def candidate(
    name: str,
    *,
    due_in: float,
    enabled: bool = True,
    phase: Phase = Phase.READY,
    requested: str | None = None,
) -> RenewalCandidate:
    renewal = NOW + timedelta(hours=due_in)
    return RenewalCandidate(
        name=name,
        enabled=enabled,
        phase=phase,
        renewal_time=renewal,
        not_after=renewal + timedelta(days=20),
        requested=requested,
    )


def test_only_enabled_ready_hosts_past_their_time_are_due() -> None:
    hosts = [
        candidate("late", due_in=-5),
        candidate("early", due_in=5),
        candidate("disabled", due_in=-5, enabled=False),
        candidate("failed", due_in=-5, phase=Phase.FAILED),
        candidate("already-asked", due_in=-5, requested="t"),
        candidate("later", due_in=-1),
    ]
    assert [c.name for c in due_for_renewal(hosts, NOW)] == ["late", "later"]


def test_a_scan_of_ten_thousand_hosts_not_due_writes_nothing() -> None:
    requests: list[str] = []

    async def request(name: str, now: datetime) -> None:
        requests.append(name)

    hosts = [candidate(f"h{i}", due_in=1 + i % 500) for i in range(10_000)]
    asked = asyncio.run(scan_once(hosts, request, now=NOW, spacing=0))
    assert asked == 0 and requests == []


def test_a_scan_asks_each_due_host_once_in_order() -> None:
    requests: list[str] = []

    async def request(name: str, now: datetime) -> None:
        requests.append(name)

    counted = REGISTRY.get_sample_value(REQUESTS_TOTAL) or 0.0
    hosts = [candidate("b", due_in=-1), candidate("a", due_in=-2), candidate("c", due_in=3)]
    asyncio.run(scan_once(hosts, request, now=NOW, spacing=0))
    assert requests == ["a", "b"]
    assert REGISTRY.get_sample_value(REQUESTS_TOTAL) == counted + 2


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.status: VirtualHostStatus | None = None

    async def write_status(
        self, host: VirtualHost, status: VirtualHostStatus, *, last: bool = False
    ) -> None:
        self.status = status

    async def event(self, host: VirtualHost, *, warning: bool, reason: str, message: str) -> None:
        self.events.append(reason)


class Renewer:
    def __init__(self, fails: bool) -> None:
        self.fails = fails

    async def renew(self, host: VirtualHost) -> StepOutcome:
        if self.fails:
            raise VhostOperatorError("the CA is down")
        return StepOutcome(message="renewed", certificate=certificate(NOW, days=90))


def certificate(start: datetime, *, days: int) -> CertificateStatus:
    return CertificateStatus(
        secret_name="s",
        not_before=start,
        not_after=start + timedelta(days=days),
        serial="ab",
        renewal_time=start + timedelta(days=days * 2 // 3),
    )


def host_with(cert: CertificateStatus) -> VirtualHost:
    status = VirtualHostStatus(phase=Phase.READY, certificate=cert, observed_generation=1)
    return virtualhost(annotations={RENEW_ANNOTATION: "r1"}, status=status)


def test_a_failed_renewal_keeps_the_host_ready_while_its_certificate_is_valid() -> None:
    recorder = Recorder()
    current = certificate(NOW - timedelta(days=80), days=90)
    status = asyncio.run(
        renew_certificate(host_with(current), Renewer(True), recorder, clock=lambda: NOW)
    )
    assert status.phase == Phase.READY and status.certificate == current
    assert status.observed_renewal == "r1" and status.failed_attempts == 1
    renewal = next(c for c in status.conditions if c.type == "CertificateRenewal")
    assert renewal.status.value == "False" and renewal.message == "the CA is down"
    assert recorder.events == ["RenewalFailed"]


def test_a_failed_renewal_of_an_expired_certificate_fails_the_host() -> None:
    expired = certificate(NOW - timedelta(days=100), days=90)
    status = asyncio.run(
        renew_certificate(host_with(expired), Renewer(True), Recorder(), clock=lambda: NOW)
    )
    assert status.phase == Phase.FAILED
    assert status.error is not None and status.error.step == "certificate"


def test_a_renewal_records_the_new_certificate() -> None:
    host = host_with(certificate(NOW - timedelta(days=80), days=90))
    host.status.failed_attempts = 2  # two renewals failed before this one
    status = asyncio.run(
        renew_certificate(
            host,
            Renewer(False),
            Recorder(),
            clock=lambda: NOW,
        )
    )
    assert status.certificate == certificate(NOW, days=90)
    assert {c.type: c.status.value for c in status.conditions}["CertificateRenewal"] == "True"
    assert status.failed_attempts == 0


class Hosts:
    """The catalog as the scanner reads it, in a list."""

    def __init__(
        self, candidates: list[RenewalCandidate], failed: list[RetryCandidate] | None = None
    ) -> None:
        self.renewal = candidates
        self.failures = failed or []
        self.wakes: list[datetime] = []

    def candidates(self) -> list[RenewalCandidate]:
        return self.renewal

    def failed(self) -> list[RetryCandidate]:
        return self.failures

    def plan_wake(self, at: datetime) -> None:
        self.wakes.append(at)

    async def wait_for_duty(self, timeout: float) -> None:
        await asyncio.sleep(3600)


class Actions:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def request_renewal(self, name: str, now: datetime) -> None:
        self.calls.append(("renew", name))

    async def mark_expired(self, name: str, now: datetime) -> None:
        self.calls.append(("expired", name))

    async def request_retry(self, name: str, value: str) -> None:
        self.calls.append(("retry", name))


def scan_briefly(hosts: Hosts, actions: Actions, retry: RetryPolicy | None = None) -> None:
    async def scan() -> None:
        task = asyncio.create_task(
            run_scanner(hosts, actions, interval=3600, spacing=0, retry=retry, clock=lambda: NOW)
        )
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(scan())


def test_the_scanner_scans_at_start_then_on_the_interval() -> None:
    hosts, actions = Hosts([candidate("due", due_in=-1)]), Actions()
    scan_briefly(hosts, actions)
    assert actions.calls == [("renew", "due")], "an operator restarted often must still renew"
    assert hosts.wakes == [NOW + timedelta(hours=1)]


def test_expiry_turns_certificate_valid_false_whatever_the_phase() -> None:
    changes: dict[str, dict[str, Any]] = {
        "disabled": {"enabled": False},
        "failed": {"phase": Phase.FAILED},
        "already-false": {"certificate_valid": False},
    }
    expired = [
        dataclasses.replace(candidate(name, due_in=-24 * 30), **{"certificate_valid": True, **c})
        for name, c in changes.items()
    ]
    soon = dataclasses.replace(candidate("soon", due_in=0.5 - 24 * 20), certificate_valid=True)
    hosts, actions = Hosts([*expired, soon]), Actions()
    scan_briefly(hosts, actions)
    expiries = [call for call in actions.calls if call[0] == "expired"]
    assert expiries == [("expired", "disabled"), ("expired", "failed")]
    assert hosts.wakes == [soon.not_after], "the scanner wakes when the next one expires"


def test_failed_hosts_are_retried_after_their_backoff_when_enabled() -> None:
    def failure(name: str, minutes_ago: float, requested: bool = False) -> RetryCandidate:
        return RetryCandidate(name, 1, NOW - timedelta(minutes=minutes_ago), requested)

    policy = RetryPolicy(initial=600, maximum=3600, jitter=0)
    failed = [failure("due", 11), failure("waiting", 5), failure("asked", 30, requested=True)]
    hosts, actions = Hosts([], failed), Actions()
    scan_briefly(hosts, actions)
    assert actions.calls == [], "off unless enabled"
    hosts = Hosts([], failed)
    scan_briefly(hosts, actions, policy)
    assert actions.calls == [("retry", "due")]
    assert hosts.wakes == [NOW + timedelta(minutes=5)]


class PausedRenewer:
    async def renew(self, host: VirtualHost) -> StepOutcome:
        raise StepDeferred("waiting for the CA until then", until=NOW + timedelta(minutes=5))


def test_a_renewal_the_ca_pauses_stays_requested_and_is_taken_up_at_that_time() -> None:
    recorder = Recorder()
    current = certificate(NOW - timedelta(days=80), days=90)
    woken: list[datetime] = []

    async def on_deferred(host: VirtualHost, until: datetime) -> None:
        woken.append(until)

    host = host_with(current)
    status = asyncio.run(
        renew_certificate(
            host, PausedRenewer(), recorder, clock=lambda: NOW, on_deferred=on_deferred
        )
    )
    assert status.phase == Phase.READY and status.certificate == current
    assert status.observed_renewal is None, "the request stays pending"
    assert status.failed_attempts == 0
    renewal = next(c for c in status.conditions if c.type == "CertificateRenewal")
    assert (renewal.status.value, renewal.reason) == ("False", "WaitingForCA")
    assert renewal.message == "waiting for the CA until then"
    assert woken == [NOW + timedelta(minutes=5)]
    assert recorder.events == ["RenewalWaiting"]
    assert recorder.status == status


class UnbudgetedRenewer:
    async def renew(self, host: VirtualHost) -> StepOutcome:
        raise StepDeferred(
            "waiting for the order budget",
            until=NOW + timedelta(hours=2),
            reason="WaitingForOrderBudget",
        )


def test_a_renewal_beyond_the_order_budget_says_so_and_keeps_serving() -> None:
    woken: list[datetime] = []

    async def on_deferred(host: VirtualHost, until: datetime) -> None:
        woken.append(until)

    current = certificate(NOW - timedelta(days=80), days=90)
    status = asyncio.run(
        renew_certificate(
            host_with(current), UnbudgetedRenewer(), Recorder(), clock=lambda: NOW,
            on_deferred=on_deferred,
        )
    )  # fmt: skip
    assert status.phase == Phase.READY and status.certificate == current
    renewal = next(c for c in status.conditions if c.type == "CertificateRenewal")
    assert (renewal.reason, renewal.message) == (
        "WaitingForOrderBudget",
        "waiting for the order budget",
    )
    assert woken == [NOW + timedelta(hours=2)]
