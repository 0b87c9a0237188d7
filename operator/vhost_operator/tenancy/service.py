"""Running the gate: the API connection, the VirtualHost watch that feeds the directory, and
the HTTP server, as one process (``vhost-operator tenancy-gate``).

RBAC: virtualhosts list and watch (cluster-wide), nothing else. The watch is one list-then-watch
stream for all hosts (``kube.watching``); a login never makes an API call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from vhost_operator.kube.api import ApiClient, connect
from vhost_operator.kube.virtualhosts import watch_virtualhosts
from vhost_operator.kube.watching import ObjectWatch
from vhost_operator.tenancy.directory import HostDirectory
from vhost_operator.tenancy.server import GateApi, create_app
from vhost_operator.tenancy.settings import GateSettings

logger = logging.getLogger(__name__)


class VirtualHostFollower:
    """Keeps a directory current from a watch of every VirtualHost, for the app's lifetime."""

    def __init__(self, directory: HostDirectory, client: ApiClient) -> None:
        self.directory = directory
        self._client = client
        self._task: asyncio.Task[None] | None = None

    def alive(self) -> bool:
        """False once following has stopped for good: the liveness probe then restarts us,
        rather than answering from state that no longer changes."""
        return self._task is not None and not self._task.done()

    async def lifetime(self, _: web.Application) -> AsyncIterator[None]:
        """An aiohttp cleanup context: follow while the app runs."""
        watch = watch_virtualhosts(self._client)
        self._task = asyncio.create_task(self._follow(watch), name="follow-virtualhosts")
        yield
        watch.stop()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _follow(self, watch: ObjectWatch) -> None:
        # The watch itself relists and reconnects; an error reaching here is a bug.
        try:
            async for event in watch.events():
                self.directory.apply(event)
        except Exception:
            logger.exception("following VirtualHosts failed; the gate is no longer live")
            raise


def build_app(settings: GateSettings, client: ApiClient) -> web.Application:
    directory = HostDirectory()
    follower = VirtualHostFollower(directory, client)
    api = GateApi(directory, settings.primary_hostnames, settings.global_theme(), follower.alive)
    app = create_app(api)
    app.cleanup_ctx.append(follower.lifetime)
    return app


def run(settings: GateSettings, *, verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logger.info(
        "tenancy gate on %s:%d; primary hostnames: %s",
        settings.listen_address,
        settings.listen_port,
        ", ".join(settings.primary_hostnames) or "(none)",
    )
    web.run_app(
        build_app(settings, connect()),
        host=settings.listen_address,
        port=settings.listen_port,
        access_log=None,  # decisions are logged by the gate itself; per-request lines cost time
        print=None,
    )
