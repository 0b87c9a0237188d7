"""The operator's ``/metrics``: an index of every host's phase and expiry, read at scrape time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import kopf

from vhost_operator import metrics
from vhost_operator.resources.models import GROUP, VERSION, VIRTUALHOSTS


@kopf.index(GROUP, VERSION, VIRTUALHOSTS)  # a coroutine: kopf runs plain functions in a thread
async def host_views(name: str, status: kopf.Status, **_: Any) -> dict[str, metrics.HostView]:
    certificate = status.get("certificate") or {}
    not_after = certificate.get("notAfter")
    timestamp = datetime.fromisoformat(not_after).timestamp() if not_after else None
    return {name: metrics.HostView(name, status.get("phase") or "Pending", timestamp)}


SNAPSHOT_TIMEOUT = 10.0
"""Seconds a scrape waits for the event loop to copy the index."""


def serve_metrics(port: int, index: kopf.Index[str, metrics.HostView]) -> None:
    """Serve ``/metrics``; call from the event loop that keeps ``index`` current."""
    metrics.serve(port, read_on_loop(index, asyncio.get_running_loop()))


def read_on_loop(
    index: Mapping[str, Iterable[metrics.HostView]], loop: asyncio.AbstractEventLoop
) -> Callable[[], list[metrics.HostView]]:
    """Every host in ``index``, for a thread other than ``loop``'s.

    Scrapes run in the HTTP server's thread while kopf changes the index on the event loop, so
    the scrape asks the loop for a copy instead of walking the index itself (which fails with
    "dictionary changed size during iteration" whenever a watch event arrives meanwhile).
    """

    async def snapshot() -> list[metrics.HostView]:
        return [view for store in index.values() for view in store]

    def views() -> list[metrics.HostView]:
        return asyncio.run_coroutine_threadsafe(snapshot(), loop).result(SNAPSHOT_TIMEOUT)

    return views
