"""kopf's events without managedFields (``handlers.kopf_watching``): the wrapper kopf's
watcher calls drops them from every event's object, and nothing else."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kopf._cogs.clients import watching as kopf_watching
from kopf._core.reactor import queueing

from vhost_operator.handlers import kopf_watching as slim
from vhost_operator.handlers.kopf_watching import (
    drop_managed_fields,
    share_strings,
    slim_kopf_events,
)


def event(kind: str | None, **metadata: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "object": {
            "apiVersion": "vhost-operator.io/v1alpha1",
            "kind": "VirtualHost",
            "metadata": {"name": "h", "uid": "1", "resourceVersion": "7", **metadata},
            "spec": {"hostname": "mail.example.com"},
            "status": {"phase": "Ready"},
        },
    }


MANAGED = [{"manager": "kopf", "operation": "Update", "fieldsV1": {"f:metadata": {}}}]


def test_only_the_managed_fields_are_dropped() -> None:
    raw = event("MODIFIED", managedFields=MANAGED, annotations={"a": "b"})
    expected = copy.deepcopy(raw)
    del expected["object"]["metadata"]["managedFields"]
    drop_managed_fields(raw)
    assert raw == expected


@pytest.mark.parametrize("marker", [None, "LISTED", {"type": "BOOKMARK"}, {"object": None}])
def test_markers_and_odd_events_pass_unchanged(marker: object) -> None:
    before = copy.deepcopy(marker)
    drop_managed_fields(marker)
    assert marker == before


def parsed(kind: str | None, **metadata: Any) -> dict[str, Any]:
    """An event as kopf has it: parsed from its own line of the watch stream (so no string
    in it is shared with another event's, unlike literals of this module)."""
    text = json.dumps(event(kind, **metadata))
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def test_events_share_their_keys_and_repeated_values_and_stay_equal() -> None:
    one = parsed("ADDED", namespace="default", labels={"team": "a"})
    other = parsed("MODIFIED", namespace="default", labels={"team": "b"})
    again = parsed("ADDED")
    assert next(iter(one["object"])) is not next(iter(other["object"]))  # parsed apart
    expected = copy.deepcopy(one)
    for raw in (one, other, again):
        share_strings(raw)
    assert one == expected
    first, second = one["object"], other["object"]
    for key, _ in first["metadata"].items():
        shared = next(k for k in second["metadata"] if k == key)
        assert shared is key
    assert next(iter(first["metadata"]["labels"])) is next(iter(second["metadata"]["labels"]))
    for key in ("apiVersion", "kind"):
        assert first[key] is second[key]
    assert first["metadata"]["namespace"] is second["metadata"]["namespace"]
    assert one["type"] is again["type"]


@pytest.mark.parametrize("marker", [None, "LISTED", {"type": "BOOKMARK"}, {"object": None}])
def test_markers_keep_their_strings(marker: object) -> None:
    before = copy.deepcopy(marker)
    share_strings(marker)
    assert marker == before


@pytest.fixture
def fake_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """kopf's stream replaced by one yielding a listed and a watched event (and recording
    that it was closed), restored afterwards."""
    closed: list[str] = []

    async def infinite_watch(**_: Any) -> AsyncIterator[Any]:
        try:
            yield parsed(None, managedFields=MANAGED)
            yield kopf_watching.Bookmark.LISTED
            yield parsed("ADDED", managedFields=MANAGED)
        finally:
            closed.append("closed")

    monkeypatch.setattr(kopf_watching, slim.STREAM, infinite_watch)
    yield closed


def test_kopfs_watcher_gets_events_without_managed_fields(fake_stream: list[str]) -> None:
    assert slim_kopf_events()
    # The function kopf's watcher calls (it looks it up on the module at every start).
    stream = getattr(queueing, "watching").infinite_watch  # noqa: B009 (not re-exported)

    async def read() -> list[Any]:
        return [e async for e in stream()]

    events = asyncio.run(read())
    assert events[1] is kopf_watching.Bookmark.LISTED
    assert [e["object"]["metadata"] for e in (events[0], events[2])] == [
        {"name": "h", "uid": "1", "resourceVersion": "7"}
    ] * 2
    keys = [next(k for k in e["object"] if k == "metadata") for e in (events[0], events[2])]
    assert keys[0] is keys[1]
    assert fake_stream == ["closed"]


def test_a_stream_left_early_is_closed(fake_stream: list[str]) -> None:
    slim_kopf_events()

    async def first() -> None:
        stream = getattr(kopf_watching, slim.STREAM)()
        await anext(stream)
        await stream.aclose()

    asyncio.run(first())
    assert fake_stream == ["closed"]


def test_wrapping_twice_wraps_once(fake_stream: list[str]) -> None:
    slim_kopf_events()
    wrapped = getattr(kopf_watching, slim.STREAM)
    assert slim_kopf_events()
    assert getattr(kopf_watching, slim.STREAM) is wrapped
