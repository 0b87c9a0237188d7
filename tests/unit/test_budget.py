"""The account's order budget (``provisioning.budget``) and where it is kept
(``provisioning.ledger``): a token bucket as the CA counts it, booked slots for waiting hosts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vhost_operator.kube.objects import SecretData
from vhost_operator.provisioning.budget import BudgetLimits, OrderBudget, time_for_orders
from vhost_operator.provisioning.chain import StepDeferred
from vhost_operator.provisioning.ledger import WAITING_FOR_BUDGET, OrderLedger
from vhost_operator.resources import labels
from vhost_operator.settings import Settings

START = datetime(2026, 1, 1, tzinfo=UTC)
THREE_PER_30S = BudgetLimits(3, timedelta(seconds=30))


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def test_the_defaults_are_lets_encrypts_published_limit() -> None:
    settings = Settings()
    limits = BudgetLimits(settings.acme_order_limit, timedelta(seconds=settings.acme_order_window))
    assert limits.describe() == "300 new orders per 3 hours"
    assert limits.interval == timedelta(seconds=36)  # "1 new order every 36 seconds"


def test_a_full_bucket_allows_the_burst_then_one_order_per_interval() -> None:
    budget = OrderBudget(THREE_PER_30S)
    assert [budget.admit(f"h{i}", START) for i in range(3)] == [None, None, None]
    assert budget.admit("h3", START) == at(10)
    assert budget.admit("h4", START) == at(20), "the next waiting host gets the next slot"
    assert budget.admit("h5", at(1)) == at(30)
    assert budget.booked() == {"h3": at(10), "h4": at(20), "h5": at(30)}


def test_a_booked_host_orders_at_its_slot_and_not_before() -> None:
    budget = OrderBudget(THREE_PER_30S)
    for i in range(3):
        budget.admit(f"h{i}", START)
    slot = budget.admit("late", START)
    assert slot == at(10)
    assert budget.admit("late", at(9)) == slot, "woken early (an edit): same slot"
    assert budget.admit("late", at(10)) is None
    assert budget.booked() == {}


def test_a_newcomer_never_takes_a_waiting_hosts_slot() -> None:
    budget = OrderBudget(THREE_PER_30S)
    for i in range(3):
        budget.admit(f"h{i}", START)
    assert budget.admit("first", START) == at(10)
    # At 10 s the bucket has a token, but it is "first"'s: the newcomer queues behind it.
    assert budget.admit("newcomer", at(10)) == at(20)
    assert budget.admit("first", at(10)) is None
    assert budget.admit("newcomer", at(20)) is None


def test_no_sequence_of_admissions_exceeds_the_bucket() -> None:
    """Hosts arriving and waking at odd times, some late: the orders placed never exceed the
    limit in any window's worth of refill (what the CA checks)."""
    limits = BudgetLimits(5, timedelta(seconds=50))
    budget = OrderBudget(limits)
    waiting: dict[str, datetime] = {}
    placed: list[datetime] = []
    for second in range(400):
        now = at(second)
        arrivals = [f"new-{second}-{i}" for i in range(second % 3)]
        late = timedelta(seconds=second % 4)  # some hosts wake late
        due = [name for name, when in waiting.items() if when + late <= now]
        for name in due + arrivals:
            answer = budget.admit(name, now)
            if answer is None:
                placed.append(now)
                waiting.pop(name, None)
            else:
                assert answer > now
                waiting[name] = answer
    assert len(placed) > 40
    for index, start in enumerate(placed):
        # The bucket's rule: at most `orders` + (refill since) in any stretch of time.
        for end_index in range(index, len(placed)):
            span = placed[end_index] - start
            allowed = limits.orders + span / limits.interval
            assert end_index - index + 1 <= allowed, (start, placed[end_index])


def test_an_order_the_ca_refused_to_create_gives_its_token_back() -> None:
    budget = OrderBudget(THREE_PER_30S)
    for i in range(3):
        budget.admit(f"h{i}", START)
    budget.refund()  # h2's order was answered 429: the CA created (and counted) nothing
    assert budget.admit("h2", at(1)) is None
    assert budget.admit("h3", at(1)) == at(10)


def test_an_order_placed_without_admission_is_counted() -> None:
    budget = OrderBudget(THREE_PER_30S)
    budget.admit("h0", START)
    budget.record(START)  # h0's order could not be resumed: a second one was created
    assert budget.admit("h1", START) is None
    assert budget.admit("h2", START) == at(10)


def test_a_booking_nobody_took_is_dropped_a_window_after_its_slot() -> None:
    budget = OrderBudget(THREE_PER_30S)
    for i in range(3):
        budget.admit(f"h{i}", START)
    assert budget.admit("deleted", START) == at(10)
    assert budget.waiting == 1
    assert budget.admit("next", at(39)) is None, "the deleted host's slot passed unused"
    assert budget.waiting == 1
    assert budget.admit("other", at(41)) is None
    assert budget.waiting == 0


def test_times_are_whole_seconds() -> None:
    budget = OrderBudget(BudgetLimits(3, timedelta(seconds=20)))
    for i in range(3):
        budget.admit(f"h{i}", START)
    slot = budget.admit("h3", START)
    assert slot == at(7), "6.67 s rounded up: a time rounded down would be too early"


def test_ten_thousand_hosts_against_production_limits() -> None:
    limits = BudgetLimits(300, timedelta(hours=3))
    assert time_for_orders(300, limits) == timedelta(0)
    assert time_for_orders(10_000, limits) == timedelta(seconds=9_700 * 36)  # 97 hours


def test_a_budget_needs_a_limit() -> None:
    with pytest.raises(ValueError, match="orders >= 1"):
        BudgetLimits(0, timedelta(hours=3))


class AccountSecret:
    """The account Secret's annotations, and every write to them."""

    def __init__(self, annotations: dict[str, str] | None = None) -> None:
        self.annotations = dict(annotations or {})
        self.writes: list[dict[str, str]] = []

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        assert (namespace, name) == ("operator", "account")
        body: dict[str, Any] = {"metadata": {"annotations": self.annotations}, "data": {}}
        return SecretData(body)

    async def annotate_secret(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        await asyncio.sleep(0)  # another order may be admitted meanwhile
        self.annotations |= annotations
        self.writes.append(dict(annotations))


def ledger(secret: AccountSecret, clock: list[datetime]) -> OrderLedger:
    return OrderLedger(THREE_PER_30S, secret, ("operator", "account"), clock=lambda: clock[0])


def test_the_ledger_stores_the_bucket_before_the_order_and_a_restart_counts_it() -> None:
    secret, clock = AccountSecret(), [START]

    async def scenario() -> None:
        first = ledger(secret, clock)
        await asyncio.gather(*(first.admit(f"h{i}") for i in range(3)))
        assert secret.annotations[labels.ORDER_BUCKET] == at(30).isoformat()
        assert len(secret.writes) < 3, "concurrent admissions share a write"
        restarted = ledger(secret, clock)
        with pytest.raises(StepDeferred) as waiting:
            await restarted.admit("h3")
        assert waiting.value.until == at(10)
        assert waiting.value.reason == WAITING_FOR_BUDGET
        assert str(waiting.value) == (
            "waiting for the order budget (3 new orders per 30 seconds): the order will be "
            "placed at 2026-01-01T00:00:10+00:00"
        )
        clock[0] = at(10)
        await restarted.admit("h3")
        assert secret.annotations[labels.ORDER_BUCKET] == at(40).isoformat()

    asyncio.run(scenario())


def test_an_unreadable_stored_bucket_counts_as_empty() -> None:
    secret, clock = AccountSecret({labels.ORDER_BUCKET: "yesterday"}), [START]
    with pytest.raises(StepDeferred) as waiting:
        asyncio.run(ledger(secret, clock).admit("h0"))
    assert waiting.value.until == at(10)
