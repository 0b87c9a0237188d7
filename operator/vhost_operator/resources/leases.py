"""Leader election over a ``coordination.k8s.io`` Lease: the decisions, without I/O.

Several operator replicas run; exactly one (the holder of the Lease) provisions. The rules are
client-go's: the holder renews the Lease every ``retry_period``; another replica takes the Lease
over only once it has seen it unchanged for the Lease's whole duration, measured on its own
clock from the moment it first saw that version (never from ``renewTime``, which another
machine's clock wrote); a holder that could not renew for ``renew_deadline`` stops at once,
before anyone may take over (``renew_deadline < lease_duration``). ``kube.leases`` makes the
calls and keeps the time.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime


@dataclasses.dataclass(frozen=True)
class LeaseTiming:
    """Seconds; ``retry_period < renew_deadline < lease_duration`` (checked by the settings)."""

    lease_duration: float
    """How long a Lease is valid after its holder last renewed it."""
    renew_deadline: float
    """How long a holder keeps provisioning without a successful renewal before it stops."""
    retry_period: float
    """How often the holder renews and the others look."""


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """A Lease as read: its holder and its version (``resourceVersion``, for conditional writes)."""

    holder: str
    """``spec.holderIdentity``; empty when released."""
    duration: float
    """``spec.leaseDurationSeconds``."""
    transitions: int
    """``spec.leaseTransitions``: how often the holder changed."""
    acquired: datetime | None
    renewed: datetime | None
    version: str


@dataclasses.dataclass(frozen=True)
class Observation:
    """A Lease version and when (on the observer's monotonic clock) it was first seen."""

    record: LeaseRecord | None
    since: float


class Move(enum.Enum):
    CREATE = "create"
    """No Lease yet: create it, holding it."""
    TAKE = "take"
    """Expired or released: take it over (conditional on the version seen)."""
    RENEW = "renew"
    """Ours: renew it."""
    WAIT = "wait"
    """Someone else holds it."""


def observe(previous: Observation | None, record: LeaseRecord | None, now: float) -> Observation:
    """The observation after reading ``record`` at ``now``: the clock starts again only when
    the Lease changed (a new version: renewed, taken, released)."""
    if previous is not None and _version(previous.record) == _version(record):
        return previous
    return Observation(record, now)


def _version(record: LeaseRecord | None) -> str | None:
    return None if record is None else record.version


def decide(observation: Observation, identity: str, now: float) -> Move:
    """What the replica ``identity`` does about the Lease it observed."""
    record = observation.record
    if record is None:
        return Move.CREATE
    if record.holder == identity:
        return Move.RENEW
    if not record.holder or now - observation.since >= record.duration:
        return Move.TAKE
    return Move.WAIT


def claimed(
    record: LeaseRecord | None, identity: str, at: datetime, timing: LeaseTiming
) -> LeaseRecord:
    """The Lease to write for ``identity`` at ``at``: renewed if already its own, else taken
    (a new acquire time, one more transition)."""
    if record is not None and record.holder == identity:
        return dataclasses.replace(record, renewed=at, duration=timing.lease_duration)
    transitions = 0 if record is None else record.transitions + (1 if record.holder else 0)
    return LeaseRecord(
        holder=identity,
        duration=timing.lease_duration,
        transitions=transitions,
        acquired=at,
        renewed=at,
        version="" if record is None else record.version,
    )


def must_stop(last_renewed: float, now: float, timing: LeaseTiming) -> bool:
    """Whether a holder whose last successful renewal began at ``last_renewed`` (monotonic)
    must stop provisioning: past the renew deadline, another replica may soon take over."""
    return now - last_renewed >= timing.renew_deadline


def next_look(observation: Observation, identity: str, now: float, timing: LeaseTiming) -> float:
    """Seconds until the next look at the Lease: every retry period, and for a follower also
    exactly when the Lease it sees expires (takeover does not wait for the next period)."""
    record = observation.record
    if record is None or record.holder == identity or not record.holder:
        return timing.retry_period
    expires_in = observation.since + record.duration - now
    return max(0.0, min(timing.retry_period, expires_in))
