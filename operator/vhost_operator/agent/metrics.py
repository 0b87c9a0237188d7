"""The agent's counters and its small HTTP endpoint: ``/healthz``, ``/readyz``, ``/metrics``.

The counters live in memory (tests and the loop read them directly) and are rendered in the
Prometheus text format by hand: a dozen numbers do not justify another dependency. aiohttp comes
with kopf already.
"""

from __future__ import annotations

import dataclasses

from aiohttp import web

_PREFIX = "vhost_agent"


@dataclasses.dataclass
class AgentStats:
    """Counters (``_total``: only ever grow) and gauges of one agent process."""

    batches_total: int = 0
    """Batches applied: each is one burst of changes (or a retry)."""
    reloads_total: int = 0
    """nginx reloads that were confirmed."""
    reload_failures_total: int = 0
    batch_failures_total: int = 0
    """Batches that failed and are retried later: nginx down, disk full, API unreachable (the
    log says which); a reload that failed counts here and in ``reload_failures_total``."""
    nginx_tests_total: int = 0
    """``nginx -t`` runs, including those that isolated rejected hosts."""
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
    synced: bool = False
    """Both watches delivered their first list."""
    applied: bool = False
    """Synced, and the whole state applied, reloaded and reported once (it stays true)."""
    failing: bool = False
    """The latest batch failed because of nginx or the disk (nginx refuses what the agent
    wrote even without the new changes, will not reload, a write failed): this replica may
    serve stale config, so it is not ready until a batch succeeds again."""
    failure: str = ""
    """Why, for ``/readyz`` (not a metric)."""

    @property
    def ready(self) -> bool:
        """What ``/readyz`` answers: only a replica that serves the current state takes
        traffic. A failure of the API server alone does not count: every replica would see
        it, and nginx still serves what it had."""
        return self.applied and not self.failing

    def render(self) -> str:
        """The Prometheus text exposition of every field."""
        lines = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, str):
                continue
            kind = "counter" if field.name.endswith("_total") else "gauge"
            name = f"{_PREFIX}_{field.name}"
            lines.append(f"# TYPE {name} {kind}")
            lines.append(
                f"{name} {value!r}" if isinstance(value, float) else f"{name} {int(value)}"
            )
        return "\n".join(lines) + "\n"


def application(stats: AgentStats) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        # The process answers: the event loop runs. A dead loop task ends the process instead.
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if stats.ready:
            return web.Response(text="ready\n")
        if stats.failing:
            return web.Response(status=503, text=f"not ready: applying failed: {stats.failure}\n")
        return web.Response(status=503, text="not ready: waiting for the first sync and reload\n")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=stats.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(stats: AgentStats, port: int) -> web.AppRunner:
    """Start the endpoint on ``port`` (all interfaces: probes come from the kubelet)."""
    runner = web.AppRunner(application(stats), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
