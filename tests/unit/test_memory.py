"""Handing freed memory back to the kernel (``vhost_operator.memory``)."""

from __future__ import annotations

import asyncio
import contextlib
import platform

import pytest

from vhost_operator.memory import (
    TrimPolicy,
    release_freed_memory,
    release_periodically,
    resident_bytes,
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_returns_pages_freed_after_a_burst() -> None:
    burst = [bytes(300) for _ in range(200_000)]  # ~60 MiB of small objects from the heap
    del burst
    assert release_freed_memory() is True


def test_periodic_release_runs_until_cancelled() -> None:
    async def scenario() -> None:
        task = asyncio.create_task(release_periodically(0.01))
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(scenario())


MIB = 2**20


def test_a_steady_process_trims_once_then_never() -> None:
    policy = TrimPolicy(growth=16 * MIB, settling_trims=2)
    decisions = []
    for _ in range(10):
        decisions.append(policy.should_trim(100 * MIB))
        if decisions[-1]:
            policy.trimmed(100 * MIB)
    # The first look has nothing to compare with; two settling trims follow, then quiet.
    assert decisions == [True, True, True] + [False] * 7


def test_growth_starts_trimming_again_until_the_burst_has_settled() -> None:
    policy = TrimPolicy(growth=16 * MIB, settling_trims=2)
    policy.trimmed(100 * MIB)
    assert policy.should_trim(110 * MIB) is False, "below the growth threshold"
    assert policy.should_trim(150 * MIB) is True, "a burst"
    policy.trimmed(140 * MIB)
    assert policy.should_trim(170 * MIB) is True, "still growing"
    policy.trimmed(160 * MIB)
    assert [policy.should_trim(160 * MIB) for _ in range(4)] == [True, True, False, False]


def test_resident_size_is_read_from_proc() -> None:
    assert resident_bytes() > MIB
