"""The nginx agent's counters (served on ``/metrics`` by ``vhost_operator.sidecar``)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from vhost_operator.sidecar import Counters

NOT_READY = "waiting for the first sync and reload"


@dataclasses.dataclass
class AgentStats(Counters):
    """Counters (``_total``: only ever grow) and gauges of one agent process. ``ready``: synced,
    and nginx confirmed a reload of what the agent wrote (once: it stays true)."""

    PREFIX: ClassVar[str] = "vhost_agent"

    batches_total: int = 0
    """Batches applied: each is one burst of changes (or a retry)."""
    reloads_total: int = 0
    """nginx reloads that were confirmed."""
    reload_failures_total: int = 0
    batch_failures_total: int = 0
    """Batches that failed and are retried later: nginx down, disk full, API unreachable (the
    log says which); a reload that failed counts here and in ``reload_failures_total``."""
    nginx_tests_total: int = 0
    """``nginx -t`` runs of the whole config, including those that isolated rejected hosts."""
    nginx_batch_tests_total: int = 0
    """``nginx -t`` runs of only a batch's sites (``AgentSettings.test_batch_sites_only``)."""
    hosts_changed_total: int = 0
    """Host changes nginx accepted and now serves."""
    hosts_rejected_total: int = 0
    """Host changes nginx refused (each is reported on its ConfigMap)."""
    annotation_patches_total: int = 0
    sites: int = 0
    enabled_sites: int = 0
    hosts_with_errors: int = 0
    last_reload_hosts: int = 0
    """Hosts changed by the latest reload."""
    last_reload_timestamp_seconds: float = 0.0
    reload_pause_seconds: float = 0.0
    """How long the next batch waits after the latest reload (``AgentSettings.reload_pacing``
    times the time the batch kept nginx busy)."""
    synced: bool = False
    """Both watches delivered their first list."""
