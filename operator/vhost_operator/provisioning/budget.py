"""The account's budget of new ACME orders: a token bucket, as the CA counts them. Pure.

Let's Encrypt allows 300 new orders per account per 3 hours, as a token bucket: up to 300 at
once, then one more every 36 seconds. A migration of thousands of hosts that ordered as fast as
it could would have every order past the 300th refused (``429 rateLimited``); this budget places
them at the pace the CA allows instead, and tells each waiting host *when* its order will be
placed.

The bucket is kept as one time (the "theoretical arrival time" of the generic cell rate
algorithm, GCRA): the moment the bucket would be full again. An order at ``now`` is allowed when
``tat - now <= window - interval`` (at least one token left) and moves ``tat`` on by one
``interval`` (``window / limit``). One time is all there is to store for the bucket to survive a
restart.

Hosts that find the bucket empty are *booked*: each gets the next free slot after the slots of
the hosts booked before it, so 1,000 waiting hosts get 1,000 different times, one ``interval``
apart, rather than all waking at one time for one token. A booked host orders when its slot has
come and the bucket (charged with actual orders only, at the time they were placed) has a token;
a host that is not booked orders at once only if the queue leaves a token too, so no newcomer
takes a waiting host's slot. Bookings are memory only: after a restart every waiting host books
again (the stored bucket still counts every order placed), and a deleted host's slot passes
unused (its booking is dropped a window later).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta


@dataclasses.dataclass(frozen=True)
class BudgetLimits:
    """``orders`` new orders per ``window`` (a bucket of that size, refilled evenly)."""

    orders: int
    window: timedelta

    def __post_init__(self) -> None:
        if self.orders < 1 or self.window <= timedelta(0):
            raise ValueError(f"a budget needs orders >= 1 and a window > 0, got {self}")

    @property
    def interval(self) -> timedelta:
        """The time the bucket takes to refill one order (36 s for 300 per 3 hours)."""
        return self.window / self.orders

    @property
    def tolerance(self) -> timedelta:
        """How far ahead of ``now`` the bucket's time may be while a token is left."""
        return self.window - self.interval

    def describe(self) -> str:
        return f"{self.orders} new orders per {_duration(self.window)}"


def time_for_orders(count: int, limits: BudgetLimits) -> timedelta:
    """How long ``count`` new orders take from a full bucket: the burst at once, then one per
    ``interval``. What the bench prints for 10,000 hosts against production limits."""
    return limits.interval * max(0, count - limits.orders)


@dataclasses.dataclass
class OrderBudget:
    """The bucket (``tat``, see the module docstring) and the hosts booked for later slots."""

    limits: BudgetLimits
    tat: datetime | None = None
    """When the bucket is full again, counting orders placed; ``None``: full (never used)."""
    _queue_tat: datetime | None = None
    """The same, counting booked slots too: where the next booking goes."""
    _booked: dict[str, datetime] = dataclasses.field(default_factory=dict)

    def admit(self, name: str, now: datetime) -> datetime | None:
        """May ``name`` place a new order at ``now``? ``None``: yes, and it is counted (place
        it now). Otherwise the time its order will be placed: ask again then."""
        self._prune(now)
        booked = self._booked.get(name)
        if booked is not None and booked > now:
            return booked
        if booked is not None:
            if self._has_token(self.tat, now):
                del self._booked[name]
                self.tat = self._charged(self.tat, now)
                return None
            # Orders placed later than their slots (a host woken late) used the token: wait for
            # the next one rather than exceed the bucket.
            later = self._first_token(self.tat, now)
            self._booked[name] = later
            self._queue_tat = self._charged(self._queue(), later)  # its old slot is spent
            return later
        queue = self._queue()
        slot = self._first_token(queue, now)
        if slot <= now:
            self.tat = self._charged(self.tat, now)
            self._queue_tat = self._charged(queue, now)
            return None
        self._booked[name] = slot
        self._queue_tat = self._charged(queue, slot)
        return slot

    def record(self, now: datetime) -> None:
        """Count an order placed without admission: the CA could not resume an order (it had
        turned invalid) and a new one was created in its place."""
        queue = self._queue()
        self.tat = self._charged(self.tat, now)
        self._queue_tat = self._charged(queue, now)

    def refund(self) -> None:
        """An admitted order was not placed after all: the CA refused to create it (``429``,
        or the account's pause refused it before asking), and the CA counts no such order."""
        if self.tat is not None:
            self.tat -= self.limits.interval
        if self._queue_tat is not None:
            self._queue_tat -= self.limits.interval

    def _prune(self, now: datetime) -> None:
        """Drop bookings a window past their slot: their hosts were deleted (a host that is
        still there and comes back that late simply books again). Bookings are made in time
        order, so the stale ones are at the front."""
        stale = now - self.limits.window
        while self._booked:
            name, slot = next(iter(self._booked.items()))
            if slot >= stale:
                return
            del self._booked[name]

    def booked(self) -> dict[str, datetime]:
        return dict(self._booked)

    @property
    def waiting(self) -> int:
        """Hosts booked for a slot (a deleted host's booking counts until it is pruned)."""
        return len(self._booked)

    def _queue(self) -> datetime | None:
        if self._queue_tat is None or (self.tat is not None and self.tat > self._queue_tat):
            return self.tat
        return self._queue_tat

    def _has_token(self, tat: datetime | None, now: datetime) -> bool:
        return tat is None or tat - now <= self.limits.tolerance

    def _first_token(self, tat: datetime | None, now: datetime) -> datetime:
        if self._has_token(tat, now):
            return now
        assert tat is not None
        return _ceil_second(tat - self.limits.tolerance)

    def _charged(self, tat: datetime | None, at: datetime) -> datetime:
        return max(tat, at) + self.limits.interval if tat is not None else at + self.limits.interval


def _ceil_second(moment: datetime) -> datetime:
    """Whole seconds, as status times and wake-ups are: a time rounded down would come before
    the token and the host would be told to wait once more."""
    if moment.microsecond == 0:
        return moment
    return moment.replace(microsecond=0) + timedelta(seconds=1)


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    for unit, size in (("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            count = math.floor(seconds / size)
            return f"{count} {unit[:-1] if count == 1 else unit}"
    return f"{seconds:g} seconds"
