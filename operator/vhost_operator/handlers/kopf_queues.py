"""kopf's per-object queues, in a fraction of their memory.

kopf's watcher gives every object with an event to handle a ``Stream`` of its own (an
``asyncio.Queue`` of its events and an ``asyncio.Event`` that cuts a handler's sleep short) until
one of the ``handlers.lifecycle.WORKER_LIMIT`` workers has taken the object and gone idle. In a
burst (10,000 new hosts, or a restart that lists 10,000 hosts) nearly every object waits for a
worker with such a stream: 4.2 KB each, most of it five ``collections.deque``, each of which
allocates a block of 64 slots when it is made (the queue's items, its waiting getters and
putters, and the waiters of two events), for queues that hold one or two events and at most one
waiting getter. The same classes with lists in place of the deques (as asyncio's own
``LifoQueue`` keeps its items) take 0.8 KB: 34 MB less at the peak of a 10,000-host burst.

kopf has no setting for its queues, so this replaces ``Stream`` in
``kopf._core.reactor.queueing`` (a private module, kopf >= 1.45, < 2, as pinned), which its
watcher calls by that name for each new object's stream: what kopf passes is dropped at once for
a slim queue and event, which behave the same (asyncio's own code, only other containers). Should
a kopf release move it, :func:`slim_kopf_queues` logs a warning and kopf keeps its own: more
memory, the same behaviour.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kopf._core.reactor import queueing

logger = logging.getLogger(__name__)

STREAM = "Stream"
"""The class of ``kopf._core.reactor.queueing`` its watcher builds each object's stream with."""

_SLIM = "_vhost_operator_slim"
"""Marks the replacement, so a second start-up in the same process replaces nothing twice."""


class _Waiters(list[Any]):
    """The part of ``collections.deque`` that asyncio's queues and events use, on a list (an
    empty list is 56 bytes, an empty deque 760). Its few items make ``popleft`` cheap."""

    def popleft(self) -> Any:
        return self.pop(0)


class SlimEvent(asyncio.Event):
    """``asyncio.Event`` with its waiters in a list."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters: Any = _Waiters()


class SlimQueue(asyncio.Queue[Any]):
    """An unbounded ``asyncio.Queue`` with its items and waiting getters and putters in lists."""

    def __init__(self) -> None:
        super().__init__()
        self._getters: Any = _Waiters()
        self._putters: Any = _Waiters()
        self._finished: Any = SlimEvent()
        self._finished.set()

    def _init(self, maxsize: int) -> None:
        self._queue: Any = _Waiters()


def slim_kopf_queues() -> bool:
    """Have kopf's watcher build each object's stream of a :class:`SlimQueue` and a
    :class:`SlimEvent`, once per process; whether it does now."""
    original: Any = getattr(queueing, STREAM, None)
    if getattr(original, _SLIM, False):
        return True
    if original is None or not hasattr(original, "_fields"):  # no longer kopf's NamedTuple
        logger.warning("kopf has no queueing.%s: its queues keep their deques", STREAM)
        return False

    def slim_stream(*, backlog: Any, pressure: Any) -> Any:
        # kopf's own queue and event are built before this call; they are freed right away.
        return original(backlog=SlimQueue(), pressure=SlimEvent())

    setattr(slim_stream, _SLIM, True)
    setattr(queueing, STREAM, slim_stream)
    return True
