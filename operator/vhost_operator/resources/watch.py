"""What a list-then-watch stream hands its consumers: raw objects in events. Pure data.

Events carry raw dicts (the JSON the API server sent), never client models. A stream starts with
a ``SYNC`` event carrying every object, and sends another ``SYNC`` whenever it had to list again
(after ``410 Gone`` or a broken connection): a consumer replaces its whole state on ``SYNC``, so
deletions missed while disconnected are not kept forever.

The streams themselves are ``vhost_operator.kube.watching``; the consumers (the operator's
catalogs, the nginx agent, the tenancy gate's directory) need only these types, not a client.
"""

from __future__ import annotations

import dataclasses
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
