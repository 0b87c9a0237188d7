"""Waking hosts whose chain waits for a time: each once, at (never before) its latest time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from vhost_operator.provisioning.wakeups import WakeUps


def test_hosts_are_poked_at_their_time_in_order_and_once() -> None:
    async def scenario() -> list[tuple[str, float]]:
        started = datetime.now(UTC)
        poked: list[tuple[str, float]] = []

        async def poke(name: str, now: datetime) -> None:
            poked.append((name, (now - started).total_seconds()))

        wakeups = WakeUps(poke, clock=lambda: datetime.now(UTC))
        runner = asyncio.create_task(wakeups.run())
        wakeups.schedule("late", started + timedelta(seconds=0.3))
        wakeups.schedule("early", started + timedelta(seconds=0.1))
        wakeups.schedule("moved", started + timedelta(seconds=0.05))
        wakeups.schedule("moved", started + timedelta(seconds=0.2))  # the latest time counts
        await asyncio.sleep(0.5)
        assert wakeups.waiting() == {}
        runner.cancel()
        return poked

    poked = asyncio.run(scenario())
    assert [name for name, _ in poked] == ["early", "moved", "late"]
    for (_, at), earliest in zip(poked, (0.1, 0.2, 0.3), strict=True):
        assert at >= earliest


def test_a_failing_poke_does_not_stop_the_others() -> None:
    async def scenario() -> list[str]:
        poked: list[str] = []

        async def poke(name: str, now: datetime) -> None:
            poked.append(name)
            if name == "a":
                raise RuntimeError("API down")

        wakeups = WakeUps(poke, clock=lambda: datetime.now(UTC))
        runner = asyncio.create_task(wakeups.run())
        now = datetime.now(UTC)
        wakeups.schedule("a", now)
        wakeups.schedule("b", now + timedelta(seconds=0.05))
        await asyncio.sleep(0.2)
        runner.cancel()
        return poked

    assert asyncio.run(scenario()) == ["a", "b"]
