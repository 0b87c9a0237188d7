"""The automatic retry's backoff: growing, capped, jittered per host, the same after a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.unit.builders import virtualhost
from vhost_operator.provisioning.retries import (
    RetryCandidate,
    RetryPolicy,
    due_for_retry,
    next_retry,
)
from vhost_operator.resources.models import (
    RETRY_ANNOTATION,
    Phase,
    VirtualHost,
    VirtualHostStatus,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_the_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(initial=300, maximum=3600, jitter=0)
    delays = [policy.delay("h", attempts) for attempts in range(1, 8)]
    assert delays == [300, 600, 1200, 2400, 3600, 3600, 3600]
    assert policy.delay("h", 10_000) == 3600, "no overflow however many failures"


def test_jitter_spreads_hosts_within_bounds_and_is_stable() -> None:
    policy = RetryPolicy(initial=1000, maximum=1000, jitter=0.2)
    delays = [policy.delay(f"host-{i}", 1) for i in range(200)]
    assert all(800 < delay <= 1000 for delay in delays)
    assert len(set(delays)) > 150, "hosts failing together come back spread out"
    assert delays == [policy.delay(f"host-{i}", 1) for i in range(200)], "same after a restart"


def failed_host(
    *, attempts: int, retry: str | None = None, observed: str | None = None
) -> VirtualHost:
    status = VirtualHostStatus(
        phase=Phase.FAILED, failed_attempts=attempts, last_failure_time=NOW, observed_retry=observed
    )
    return virtualhost(annotations={RETRY_ANNOTATION: retry} if retry else {}, status=status)


def test_a_pending_retry_is_not_asked_again() -> None:
    policy = RetryPolicy(initial=60, maximum=60, jitter=0)
    fresh = RetryCandidate.of(failed_host(attempts=1))
    asked = RetryCandidate.of(failed_host(attempts=1, retry="auto-1-x", observed="user-1"))
    handled = RetryCandidate.of(failed_host(attempts=2, retry="auto-1-x", observed="auto-1-x"))
    assert fresh is not None and asked is not None and handled is not None
    assert asked.requested and not fresh.requested and not handled.requested
    later = NOW + timedelta(minutes=5)
    assert [c.failed_attempts for c in due_for_retry([fresh, asked, handled], later, policy)] == [
        1,
        2,
    ]
    assert next_retry([asked], policy) is None
    assert next_retry([fresh, handled], policy) == NOW + timedelta(seconds=60)
    assert fresh.request_value != handled.request_value


def test_only_failed_hosts_are_candidates() -> None:
    host = failed_host(attempts=1)
    host.status.phase = Phase.READY
    assert RetryCandidate.of(host) is None
