from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vhost_operator.resources.conditions import set_condition
from vhost_operator.resources.models import ConditionStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_transition_time_moves_only_when_status_flips() -> None:
    first = set_condition(
        [],
        type="Ready",
        status=ConditionStatus.FALSE,
        reason="A",
        message="",
        now=T0,
        observed_generation=1,
    )
    same = set_condition(
        first,
        type="Ready",
        status=ConditionStatus.FALSE,
        reason="B",
        message="m",
        now=T1,
        observed_generation=2,
    )
    assert same[0].last_transition_time == T0 and same[0].reason == "B"
    flipped = set_condition(
        same,
        type="Ready",
        status=ConditionStatus.TRUE,
        reason="C",
        message="",
        now=T1,
        observed_generation=2,
    )
    assert flipped[0].last_transition_time == T1
    assert len(flipped) == 1
