"""What the sidecar agents (nginx, mail TLS) share as processes: their counters and small HTTP
endpoint (``/healthz``, ``/readyz``, ``/metrics``), running their server's commands with a
timeout, and a life until SIGTERM.

The counters live in memory (tests and the loop read them directly) and are rendered in the
Prometheus text format by hand: a dozen numbers do not justify another dependency. aiohttp comes
with kopf already.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ClassVar

from aiohttp import web

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Counters:
    """Base of a sidecar's counters: fields ending in ``_total`` only ever grow (Prometheus
    counters), the others are gauges."""

    PREFIX: ClassVar[str]
    ready: bool = False
    """Synced, and the whole state applied, reloaded and reported once (it stays true)."""
    failing: bool = False
    """The latest batch failed because of the server or the disk (it refuses what the agent
    wrote even without the new changes, will not reload, a write failed): this replica may
    serve stale config, so it takes no traffic until a batch succeeds again. A failure of the
    API server alone does not count: every replica would see it, and the server still serves
    what it had."""
    failure: str = ""
    """Why it is failing, for ``/readyz`` (text: not a metric)."""

    @property
    def serving(self) -> bool:
        """What ``/readyz`` answers: only a replica that serves the current state takes
        traffic."""
        return self.ready and not self.failing

    def render(self) -> str:
        """The Prometheus text exposition of every numeric field."""
        lines = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, str):
                continue
            kind = "counter" if field.name.endswith("_total") else "gauge"
            name = f"{self.PREFIX}_{field.name}"
            lines.append(f"# TYPE {name} {kind}")
            lines.append(
                f"{name} {value!r}" if isinstance(value, float) else f"{name} {int(value)}"
            )
        return "\n".join(lines) + "\n"


def application(stats: Counters, not_ready: str) -> web.Application:
    """``/readyz`` answers 503 with ``not_ready`` until ``stats.ready``, and with the failure
    while ``stats.failing``."""

    async def healthz(_: web.Request) -> web.Response:
        # The process answers: the event loop runs. A dead loop task ends the process instead.
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if stats.serving:
            return web.Response(text="ready\n")
        if stats.failing:
            return web.Response(status=503, text=f"not ready: applying failed: {stats.failure}\n")
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


# -- commands --------------------------------------------------------------------------------


class CommandFailed(Exception):
    """A command could not be run, or did not finish in time."""


@dataclasses.dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str

    @property
    def said(self) -> str:
        """What it complained about: stderr, else stdout."""
        return (self.stderr or self.stdout).strip()


async def run_command(argv: Sequence[str], *, timeout: float, what: str) -> Finished:
    """Run ``argv`` (no shell, no stdin) to its end; killed after ``timeout`` seconds."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as error:
        raise CommandFailed(f"cannot run {argv[0]}: {error.strerror or error}") from error
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise CommandFailed(f"{what} did not finish within {timeout:.0f}s") from None
    assert process.returncode is not None
    return Finished(
        process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")
    )


# -- the process -----------------------------------------------------------------------------


async def run_until_stopped(
    run: Callable[[], Awaitable[None]],
    stats: Counters,
    *,
    health_port: int,
    not_ready: str,
    name: str,
) -> None:
    """Serve the endpoint (unless ``health_port`` is 0) and ``run()`` until SIGTERM/SIGINT."""
    runner = await serve(stats, health_port, not_ready) if health_port else None
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await run()
    except asyncio.CancelledError:
        logger.info("%s stopping", name)
    finally:
        if runner is not None:
            await runner.cleanup()


def main(run: Callable[[], Coroutine[Any, Any, None]], *, verbose: bool) -> None:
    """A sidecar's entry point: logging, then ``run()`` in a new event loop."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(run())
