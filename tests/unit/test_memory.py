"""Handing freed memory back to the kernel (``vhost_operator.memory``)."""

from __future__ import annotations

import asyncio
import contextlib
import platform

import pytest

from vhost_operator.memory import release_freed_memory, release_periodically


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
