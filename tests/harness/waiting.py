"""Polling a cluster object until a condition holds, with a bounded wait."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.harness.clusters import Cluster

Object = dict[str, Any]


def get_object(cluster: Cluster, kind: str, name: str) -> Object | None:
    found = cluster.kubectl("get", kind, name, "-o", "json", "--ignore-not-found")
    return json.loads(found.stdout) if found.stdout.strip() else None


def wait_for(
    cluster: Cluster,
    kind: str,
    name: str,
    predicate: Callable[[Object], bool],
    *,
    timeout: float = 30,
    what: str = "condition",
) -> Object:
    deadline = time.monotonic() + timeout
    last: Object | None = None
    while time.monotonic() < deadline:
        last = get_object(cluster, kind, name)
        if last is not None and predicate(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"{kind}/{name}: no {what} within {timeout}s; last seen: {last}")


def phase_of(obj: Object) -> str | None:
    phase: str | None = obj.get("status", {}).get("phase")
    return phase
