"""Hosts whose chain waits for a time (the CA's ``Retry-After``), woken when it comes.

One task keeps every waiting host in a heap and sleeps until the earliest time; then it pokes
that host (an annotation the operator writes, ``WAKE_ANNOTATION``), whose change makes kopf run
the host's handler and so its chain again. No kopf worker sleeps through the wait (kopf's own
retry delays do: a thousand rate-limited hosts would hold every worker slot) and no host is
polled. After a restart the heap is empty, but every waiting host's chain runs once at start-up
(kopf's resume handler) and defers again to the time stored with its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from vhost_operator.resources.models import VirtualHost

logger = logging.getLogger(__name__)

Poke = Callable[[str, datetime], Awaitable[None]]
"""``(host name, now)``: make the host's handler run again."""


class WakeUps:
    """Pokes each scheduled host once its time has come; see the module docstring."""

    def __init__(self, poke: Poke, clock: Callable[[], datetime]) -> None:
        self._poke = poke
        self._clock = clock
        self._due: dict[str, datetime] = {}
        """Each waiting host's time; a host scheduled again keeps only its latest time."""
        self._heap: list[tuple[datetime, str]] = []
        self._changed = asyncio.Event()

    def schedule(self, name: str, until: datetime) -> None:
        self._due[name] = until
        heapq.heappush(self._heap, (until, name))
        self._changed.set()

    async def schedule_host(self, host: VirtualHost, until: datetime) -> None:
        """:meth:`schedule` in the form of the chain's ``on_deferred``."""
        self.schedule(host.name, until)

    def waiting(self) -> dict[str, datetime]:
        return dict(self._due)

    async def run(self) -> None:
        """Poke hosts as their times come, until cancelled."""
        while True:
            await self._sleep_until_next()
            for name in self._pop_due():
                try:
                    await self._poke(name, self._clock())
                except Exception:  # one host's API error must not stop the others' wake-ups
                    logger.exception("could not wake VirtualHost %s", name)

    async def _sleep_until_next(self) -> None:
        self._changed.clear()
        delay = None
        if self._heap:
            delay = (self._heap[0][0] - self._clock()).total_seconds()
            if delay <= 0:
                return
        with contextlib.suppress(TimeoutError):  # the earliest time came: nothing changed
            await asyncio.wait_for(self._changed.wait(), delay)

    def _pop_due(self) -> list[str]:
        now, names = self._clock(), []
        while self._heap and self._heap[0][0] <= now:
            until, name = heapq.heappop(self._heap)
            if self._due.get(name) == until:  # else a later time replaced this entry
                del self._due[name]
                names.append(name)
        return names
