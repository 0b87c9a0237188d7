"""The operator's ``/metrics``: every host's phase and expiry, read from the catalog at scrape
time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from vhost_operator import metrics

T = TypeVar("T")


SNAPSHOT_TIMEOUT = 10.0
"""Seconds a scrape waits for the event loop to copy the catalog."""


def serve_metrics(port: int, hosts: Callable[[], list[metrics.HostView]]) -> None:
    """Serve ``/metrics``; call from the event loop that keeps the hosts current."""
    metrics.serve(port, read_on_loop(hosts, asyncio.get_running_loop()))


def read_on_loop(read: Callable[[], T], loop: asyncio.AbstractEventLoop) -> Callable[[], T]:
    """``read()`` called on ``loop``, for a thread other than the loop's.

    Scrapes run in the HTTP server's thread while watch events change the hosts on the event
    loop, so the scrape asks the loop for a copy instead of walking the hosts itself (which
    fails with "dictionary changed size during iteration" whenever an event arrives meanwhile).
    """

    async def snapshot() -> T:
        return read()

    def read_there() -> T:
        return asyncio.run_coroutine_threadsafe(snapshot(), loop).result(SNAPSHOT_TIMEOUT)

    return read_there
