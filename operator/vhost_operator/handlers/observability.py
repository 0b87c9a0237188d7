"""The operator's ``/metrics``: an index of every host's phase and expiry, read at scrape time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import kopf

from vhost_operator import metrics
from vhost_operator.resources.models import GROUP, VERSION, VIRTUALHOSTS


@kopf.index(GROUP, VERSION, VIRTUALHOSTS)
def host_views(name: str, status: kopf.Status, **_: Any) -> dict[str, metrics.HostView]:
    certificate = status.get("certificate") or {}
    not_after = certificate.get("notAfter")
    timestamp = datetime.fromisoformat(not_after).timestamp() if not_after else None
    return {name: metrics.HostView(name, status.get("phase") or "Pending", timestamp)}


def serve_metrics(port: int, index: kopf.Index[str, metrics.HostView]) -> None:
    metrics.serve(port, lambda: [view for store in index.values() for view in store])
