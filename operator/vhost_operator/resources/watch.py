"""What a list-then-watch stream hands its consumers: raw objects in events. Pure data.

Events carry raw dicts (the JSON the API server sent), never client models. A stream starts with
a ``SYNC`` event carrying every object, and sends another ``SYNC`` whenever it had to list again
(after ``410 Gone`` or a broken connection): a consumer replaces its whole state on ``SYNC``, so
deletions missed while disconnected are not kept forever.

The streams themselves are ``vhost_operator.kube.watching``; the consumers (the operator's
catalogs, the sidecar agents, the tenancy gate's directory) need only these types, not a client.
:class:`ObjectStore` is the sidecar agents' in-memory copy of one watched kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal

Object = dict[str, Any]
EventType = Literal["SYNC", "ADDED", "MODIFIED", "DELETED"]


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    type: EventType
    object: Object | None = None
    """The object of an ADDED, MODIFIED or DELETED event."""
    objects: tuple[Object, ...] = ()
    """Every object, on SYNC."""


class ObjectStore:
    """The objects one watch has shown, by name, whether its first list has arrived, and the
    names of those its events touched since a consumer last asked (:meth:`take_changes`)."""

    def __init__(self, relevant: Callable[[Object | None], object]) -> None:
        self.objects: dict[str, Object] = {}
        self.synced = False
        self._relevant = relevant
        self._changed: set[str] | None = None

    def take_changes(self) -> set[str] | None:
        """The names of the objects an event added, modified or deleted since the last call
        (changed or not); ``None``: any object may have changed (the first call, or a
        ``SYNC`` since)."""
        changed, self._changed = self._changed, set()
        return changed

    def update(self, event: WatchEvent) -> bool:
        """Take in ``event``; ``True`` if it changed anything the files depend on."""
        if event.type == "SYNC":
            fresh = {obj["metadata"]["name"]: obj for obj in event.objects}
            changed = not self.synced or self._fingerprints(fresh) != self._fingerprints(
                self.objects
            )
            self.objects, self.synced = fresh, True
            self._changed = None
            return changed
        assert event.object is not None
        name = event.object["metadata"]["name"]
        if self._changed is not None:
            self._changed.add(name)
        before = self._relevant(self.objects.get(name))
        if event.type == "DELETED":
            self.objects.pop(name, None)
        else:
            self.objects[name] = event.object
        return before != self._relevant(self.objects.get(name))

    def _fingerprints(self, objects: Mapping[str, Object]) -> dict[str, object]:
        return {name: self._relevant(obj) for name, obj in objects.items()}
