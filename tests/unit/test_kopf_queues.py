"""kopf's per-object queues, slim (``handlers.kopf_queues``): kopf's own watcher builds its
streams of the slim queue and event, they behave as asyncio's, and cost a fraction."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kopf
import pytest
from kopf._cogs.clients import watching
from kopf._cogs.structs import references
from kopf._core.reactor import queueing

from vhost_operator.handlers import kopf_queues
from vhost_operator.handlers.kopf_queues import SlimEvent, SlimQueue, slim_kopf_queues


@pytest.fixture(autouse=True)
def kopf_stream_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a test replaces of kopf's queueing is put back afterwards."""
    monkeypatch.setattr(queueing, kopf_queues.STREAM, getattr(queueing, kopf_queues.STREAM))


def test_the_queue_hands_out_in_order_and_wakes_a_waiting_getter() -> None:
    async def run() -> list[int]:
        queue = SlimQueue()
        waiting = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        await queue.put(1)
        await queue.put(2)
        queue.put_nowait(3)
        got = [await waiting, await queue.get(), queue.get_nowait()]
        assert queue.empty() and queue.qsize() == 0
        return got

    assert asyncio.run(run()) == [1, 2, 3]


def test_a_cancelled_getter_leaves_nothing_behind() -> None:
    async def run() -> SlimQueue:
        queue = SlimQueue()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queue.get(), timeout=0.01)
        await queue.put("event")
        assert await queue.get() == "event"
        return queue

    queue = asyncio.run(run())
    assert not queue._getters and not queue._queue


def test_the_event_wakes_its_waiters_and_forgets_cancelled_ones() -> None:
    async def run() -> SlimEvent:
        event = SlimEvent()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=0.01)
        waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        event.set()
        assert await asyncio.gather(*waiters) == [True] * 3
        event.clear()
        assert not event.is_set()
        return event

    assert not asyncio.run(run())._waiters


def _stream_bytes() -> float:
    """Bytes per stream as kopf's watcher builds them (its own queue and event passed in)."""
    stream = getattr(queueing, kopf_queues.STREAM)

    async def build() -> float:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            streams = [
                stream(backlog=asyncio.Queue(), pressure=asyncio.Event()) for _ in range(500)
            ]
            for item in streams:
                await item.backlog.put({"type": "ADDED"})
            return (tracemalloc.get_traced_memory()[0] - before) / len(streams)
        finally:
            tracemalloc.stop()

    return asyncio.run(build())


def test_a_waiting_object_costs_a_fraction_of_kopfs_stream() -> None:
    whole = _stream_bytes()
    assert slim_kopf_queues()
    slim = _stream_bytes()
    assert whole > 3000  # kopf's: five deques of 64 slots each
    assert slim < 1200


def test_replacing_twice_replaces_once() -> None:
    assert slim_kopf_queues()
    replaced = getattr(queueing, kopf_queues.STREAM)
    assert slim_kopf_queues()
    assert getattr(queueing, kopf_queues.STREAM) is replaced


RESOURCE = references.Resource("vhost-operator.io", "v1alpha1", "virtualhosts", namespaced=True)


def raw(uid: str, version: int) -> dict[str, Any]:
    return {
        "type": "MODIFIED",
        "object": {"metadata": {"uid": uid, "name": uid, "resourceVersion": str(version)}},
    }


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """kopf's watch stream replaced by one yielding these events, then waiting for ever."""
    listed = [raw(f"uid-{n % 3}", n) for n in range(9)]

    async def infinite_watch(**_: Any) -> AsyncIterator[Any]:
        for event in listed:
            yield event
        await asyncio.Event().wait()

    monkeypatch.setattr(watching, "infinite_watch", infinite_watch)
    yield listed


def test_kopfs_watcher_hands_every_event_through_slim_streams(
    events: list[dict[str, Any]],
) -> None:
    slim_kopf_queues()
    seen: list[tuple[str, str]] = []
    pressures: list[object] = []

    async def processor(*, raw_event: Any, stream_pressure: Any = None, **_: Any) -> None:
        pressures.append(stream_pressure)
        await asyncio.sleep(0.001)  # the others queue meanwhile
        metadata = raw_event["object"]["metadata"]
        seen.append((metadata["uid"], metadata["resourceVersion"]))

    async def run() -> None:
        settings = kopf.OperatorSettings()
        settings.queueing.worker_limit = 2  # objects wait for a worker, as in a burst
        settings.queueing.idle_timeout = 0.05
        watcher = asyncio.create_task(
            queueing.watcher(
                namespace=None, settings=settings, resource=RESOURCE, processor=processor
            )
        )
        while len(seen) < len(events):
            await asyncio.sleep(0.01)
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher

    asyncio.run(asyncio.wait_for(run(), timeout=10))
    for uid in ("uid-0", "uid-1", "uid-2"):  # each object's events in their order
        mine = [version for seen_uid, version in seen if seen_uid == uid]
        assert mine == sorted(mine, key=int) and len(mine) == 3
    assert pressures and all(isinstance(p, SlimEvent) for p in pressures)
