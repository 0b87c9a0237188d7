"""kopf's watch events without ``metadata.managedFields``, their keys shared.

kopf's watcher puts every event of a watched kind into its object's queue, where it waits until
one of the ``handlers.lifecycle.WORKER_LIMIT`` workers takes the object. In a burst (10,000 new
hosts, or a restart that lists 10,000 hosts) nearly every object waits, holding its whole
parsed body, and the ``managedFields`` (an entry per writer: the creator, the status writes,
kopf's annotations) are most of it: a new VirtualHost is 5.3 KB in memory with them and 2.4 KB
without, a provisioned one 13 KB and 4 KB. Neither kopf nor our handlers read them (kopf's diff
base keeps only spec, labels and annotations; handlers read spec, status and a few metadata
fields), and the bodies kopf patches are built from patches, never from the event's object.

Each event is parsed on its own, so each holds its own copy of every key ("metadata",
"resourceVersion", "creationTimestamp", ...) and of the values every object repeats (its
apiVersion, kind and namespace): a third of a new VirtualHost's 2.7 KB. The events come with
those strings interned (one copy in the process, ``sys.intern``): 0.9 KB less per waiting event
(9 MB at 10,000 waiting), for about 12 us of CPU per event (parsing it took 10).

kopf has no hook for filtering events, so this wraps its stream: ``infinite_watch`` of
``kopf._cogs.clients.watching``, a private module (kopf >= 1.45, < 2, as pinned). kopf's
watcher looks that function up on its module each time it starts a stream, so wrapping it
before kopf's watchers start (in the start-up handler) covers every event, listed or watched.
Should a kopf release move it, :func:`slim_kopf_events` logs a warning and kopf keeps its
events whole: more memory, the same behaviour.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import AsyncGenerator, Callable
from typing import Any

from kopf._cogs.clients import watching as kopf_watching

logger = logging.getLogger(__name__)

STREAM = "infinite_watch"
"""The function of ``kopf._cogs.clients.watching`` that yields every listed and watched event."""

_WRAPPED = "_vhost_operator_slim"
"""Marks the wrapper, so a second start-up in the same process wraps nothing twice."""


def drop_managed_fields(event: object) -> None:
    """Remove ``metadata.managedFields`` from a raw watch event's object, in place (kopf's
    bookmarks and other markers pass unchanged)."""
    if not isinstance(event, dict):
        return
    obj = event.get("object")
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)


REPEATED_VALUES = frozenset({"apiVersion", "kind", "namespace"})
"""Keys whose string values nearly every object of a watch repeats: interned as the keys are."""


def share_strings(event: object) -> None:
    """Replace the dicts of a raw watch event's object, in place, by equal ones whose keys
    (and the values of ``REPEATED_VALUES``) are interned: one copy of each for every event."""
    if isinstance(event, dict) and isinstance(event.get("object"), dict):
        event["object"] = _interned(event["object"])
        if isinstance(event.get("type"), str):
            event["type"] = sys.intern(event["type"])


def _interned(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            sys.intern(key): sys.intern(item)
            if key in REPEATED_VALUES and isinstance(item, str)
            else _interned(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_interned(item) for item in value]
    return value


def slim_kopf_events() -> bool:
    """Wrap kopf's event stream with :func:`drop_managed_fields` and :func:`share_strings`,
    once per process; whether kopf's events are slimmed now."""
    original: Callable[..., AsyncGenerator[Any, None]] | None = getattr(kopf_watching, STREAM, None)
    if original is None:
        logger.warning("kopf has no %s.%s: its events keep their managedFields", "watching", STREAM)
        return False
    if getattr(original, _WRAPPED, False):
        return True

    @functools.wraps(original)
    async def slimmed(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        # Closed with the wrapper: kopf closes its streams when it stops or pauses watching.
        async with contextlib.aclosing(original(*args, **kwargs)) as events:
            async for event in events:
                drop_managed_fields(event)
                share_strings(event)
                yield event

    setattr(slimmed, _WRAPPED, True)
    setattr(kopf_watching, STREAM, slimmed)
    return True
