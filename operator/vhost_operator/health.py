"""A sidecar's counters and its small HTTP endpoint: ``/healthz``, ``/readyz``, ``/metrics``.

The counters live in memory (tests and the loop read them directly) and are rendered in the
Prometheus text format by hand: a dozen numbers do not justify another dependency. aiohttp comes
with kopf already. Shared by the nginx agent and the mail TLS agent.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from aiohttp import web


@dataclasses.dataclass
class Counters:
    """Base of a sidecar's counters: fields ending in ``_total`` only ever grow (Prometheus
    counters), the others are gauges."""

    PREFIX: ClassVar[str]
    ready: bool = False

    def render(self) -> str:
        """The Prometheus text exposition of every field."""
        lines = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kind = "counter" if field.name.endswith("_total") else "gauge"
            name = f"{self.PREFIX}_{field.name}"
            lines.append(f"# TYPE {name} {kind}")
            lines.append(
                f"{name} {value!r}" if isinstance(value, float) else f"{name} {int(value)}"
            )
        return "\n".join(lines) + "\n"


def application(stats: Counters, not_ready: str) -> web.Application:
    """``/readyz`` answers 503 with ``not_ready`` until ``stats.ready``."""

    async def healthz(_: web.Request) -> web.Response:
        # The process answers: the event loop runs. A dead loop task ends the process instead.
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if stats.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {not_ready}\n")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=stats.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(stats: Counters, port: int, not_ready: str) -> web.AppRunner:
    """Start the endpoint on ``port`` (all interfaces: probes come from the kubelet)."""
    runner = web.AppRunner(application(stats, not_ready), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
