"""Automatic retry of Failed hosts with backoff (off by default, as in the original product). Pure.

A Failed host is retried ``initial`` seconds after its failure, then twice as long after each
further failure, never longer than ``maximum``; a success resets the count (``failedAttempts``).
Each delay is shortened by up to ``jitter`` of itself, by an amount derived from the host's name
and attempt, so that hosts failing together (a CA outage) do not all come back at one instant,
and a delay computed again after a restart is the same. The renewal scanner asks for due
retries from its in-memory catalog: no timer per host, and nothing is lost across restarts
because everything it needs (``failedAttempts``, ``lastFailureTime``) is in the status.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta

from vhost_operator.resources.models import Phase, VirtualHost

MAX_DOUBLINGS = 32
"""Beyond this the delay is the cap anyway; it keeps ``2 ** n`` a small number."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    initial: float
    """Seconds from the first failure to its retry."""
    maximum: float
    """The cap on any delay, in seconds."""
    jitter: float
    """Up to this fraction of a delay is taken off it (0 to 1)."""

    def delay(self, name: str, attempts: int) -> float:
        """Seconds between the ``attempts``-th consecutive failure of ``name`` and its retry."""
        doublings = min(max(attempts, 1) - 1, MAX_DOUBLINGS)
        base = min(self.maximum, self.initial * 2.0**doublings)
        return base * (1 - self.jitter * _fraction(name, attempts))


def _fraction(name: str, attempts: int) -> float:
    """A number in [0, 1) that looks random across hosts but is fixed per host and attempt."""
    digest = hashlib.sha256(f"{name}/{attempts}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclasses.dataclass(frozen=True, slots=True)
class RetryCandidate:
    """What the scanner needs to know of a Failed host."""

    name: str
    failed_attempts: int
    last_failure: datetime
    requested: bool
    """A retry was asked for and the chain has not taken it up yet."""

    @classmethod
    def of(cls, host: VirtualHost) -> RetryCandidate | None:
        status = host.status
        if status.phase != Phase.FAILED or status.last_failure_time is None:
            return None
        requested = host.retry_request is not None and host.retry_request != status.observed_retry
        return cls(host.name, status.failed_attempts, status.last_failure_time, requested)

    def due_at(self, policy: RetryPolicy) -> datetime:
        return self.last_failure + timedelta(seconds=policy.delay(self.name, self.failed_attempts))

    @property
    def request_value(self) -> str:
        """The retry annotation's value for this failure: new for every failure, so that it is
        always a change (a value seen before would be taken as already handled)."""
        return f"auto-{self.failed_attempts}-{self.last_failure.isoformat()}"


def due_for_retry(
    candidates: Iterable[RetryCandidate], now: datetime, policy: RetryPolicy
) -> list[RetryCandidate]:
    """Failed hosts past their backoff with no retry pending, earliest first."""
    due = [c for c in candidates if not c.requested and c.due_at(policy) <= now]
    return sorted(due, key=lambda c: c.due_at(policy))


def next_retry(candidates: Iterable[RetryCandidate], policy: RetryPolicy) -> datetime | None:
    """When the next retry falls due, if any is waiting."""
    return min((c.due_at(policy) for c in candidates if not c.requested), default=None)
