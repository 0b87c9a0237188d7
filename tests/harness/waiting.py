"""Polling a cluster object until a condition holds, with a bounded wait."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.harness.clusters import Cluster
from vhost_operator.resources.models import RENEW_ANNOTATION

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


def renew(cluster: Cluster, name: str, request: str, *, timeout: float = 60) -> Object:
    """Asks for one renewal of VirtualHost ``name`` with the renew annotation (as ``kubectl
    annotate`` does, and the renewal scanner when a certificate is due; ``request`` names it),
    and returns the host once that renewal's outcome is in its status."""
    cluster.kubectl("annotate", "vh", name, f"{RENEW_ANNOTATION}={request}", "--overwrite")
    return wait_for(
        cluster,
        "vh",
        name,
        lambda o: (o.get("status") or {}).get("observedRenewal") == request,
        what="the renewal",
        timeout=timeout,
    )
