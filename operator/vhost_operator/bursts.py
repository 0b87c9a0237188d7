"""Folding a burst of changes into one batch: wait until the changes pause for a quiet window,
or a maximum delay has passed since the first of them. Used by the sidecar agents (nginx, mail
TLS), whose every batch costs a test and a reload of their server however few hosts changed.
"""

from __future__ import annotations

import asyncio


class Burst:
    """Changes noted since the last batch, and when the next batch may start."""

    def __init__(self, quiet_window: float, max_delay: float) -> None:
        self._quiet_window = quiet_window
        self._max_delay = max_delay
        self._changed = asyncio.Event()
        self._first_change: float | None = None
        self._last_change = 0.0
        self._paced_until = 0.0
        """Loop time before which no batch starts (:meth:`pace`)."""

    def note(self) -> None:
        """Something changed: a batch is due."""
        now = asyncio.get_running_loop().time()
        if self._first_change is None:
            self._first_change = now
        self._last_change = now
        self._changed.set()

    def note_later(self, delay: float) -> None:
        """A batch is due in ``delay`` seconds (a retry, a grace period that ends)."""
        asyncio.get_running_loop().call_later(delay, self.note)

    def pace(self, seconds: float) -> None:
        """No batch starts within ``seconds`` from now, however many changes come meanwhile."""
        self._paced_until = asyncio.get_running_loop().time() + seconds

    async def settled(self) -> None:
        """Wait for a change, then until the burst it starts is over; the changes noted until
        then all belong to the batch the caller starts now."""
        await self._changed.wait()
        loop = asyncio.get_running_loop()
        while self._first_change is not None:
            due = min(self._last_change + self._quiet_window, self._first_change + self._max_delay)
            due = max(due, self._paced_until)
            if loop.time() >= due:
                break
            await asyncio.sleep(due - loop.time())
        self._changed.clear()
        self._first_change = None
