"""The shared HTTPS servers on disk (``nginx.SharedHttpsServer``): put in place when a site can
be listed in one, only once nginx accepts it; removed when no site wants it and no host is
listed in it any more. Filesystem I/O through ``files``, the verdict through a workspace's test.

A shared server is tested on its own, before the batch that lists sites in it: a server nginx
refuses (its upstream's name does not resolve, say) is not put in place, and its sites are then
planned as servers of their own, so nginx's verdict on each of them names that site's file and
reaches its ConfigMap as for any other site. A server on disk that nginx refuses now (its
upstream's name stopped resolving) breaks nginx's config even with no site listed in it: the
quarantine of a broken disk takes every shared server away first (:meth:`SharedServers.withdraw`)
and the next batch puts back, testing each, those nginx accepts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from vhost_operator.agent import files
from vhost_operator.agent.plan import DiskState, https_names_path
from vhost_operator.nginx import SharedHttpsServer, render_shared_https_server

logger = logging.getLogger(__name__)


class Tester(Protocol):
    async def test(self) -> str | None:
        """``None`` if nginx accepts what is on disk, else nginx's complaint."""
        ...


class SharedServers:
    """What the agent knows of the shared HTTPS servers in its directory."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._on_disk: dict[str, bytes] | None = None
        """Key → contents; ``None``: to be read."""

    def forget(self) -> None:
        """Read them again next time: after a batch that failed half-way."""
        self._on_disk = None

    @property
    def keys(self) -> frozenset[str]:
        """The shared servers on disk, as far as known."""
        return frozenset(self._on_disk or ())

    async def prepare(
        self, wanted: Mapping[str, SharedHttpsServer], tester: Tester
    ) -> frozenset[str]:
        """Put in place each ``wanted`` shared server (by key: those the enabled sites can be
        listed in) that nginx accepts (testing each on top of what is on disk, with
        ``tester``). The keys of those on disk then."""
        on_disk = await self._read()
        for key, server in sorted(wanted.items()):
            names = str(self._root / https_names_path(key))
            content = render_shared_https_server(server, names).encode()
            if on_disk.get(key) != content:
                await self._put_in_place(server, content, tester)
        return frozenset(on_disk)

    async def withdraw(self) -> None:
        """Take every shared server away; their sites' entries stay, included by none (the
        next plan moves them)."""
        for key in sorted(await self._read()):
            await asyncio.to_thread(files.remove_shared_server, self._root, key)
        self._on_disk = {}
        logger.warning("took the shared HTTPS servers away; the next batch tests them again")

    async def prune(self, wanted: Mapping[str, SharedHttpsServer], disk: DiskState) -> None:
        """Remove the shared servers not ``wanted`` (by key) that no host on ``disk`` is
        listed in: after the batch that took their last hosts out (and its reload, so that
        undoing a batch never puts a host back into a server that is gone). nginx drops them at
        its next reload; until then they serve no name."""
        on_disk = await self._read()
        for key in sorted(set(on_disk) - set(wanted) - disk.listed_servers):
            await asyncio.to_thread(files.remove_shared_server, self._root, key)
            del on_disk[key]
            logger.info("removed the shared HTTPS server %s: no site is listed in it", key)

    async def _read(self) -> dict[str, bytes]:
        if self._on_disk is None:
            self._on_disk = await asyncio.to_thread(files.read_shared_servers, self._root)
        return self._on_disk

    async def _put_in_place(
        self, server: SharedHttpsServer, content: bytes, tester: Tester
    ) -> None:
        assert self._on_disk is not None
        key = server.key
        before = self._on_disk.get(key)
        await asyncio.to_thread(files.write_shared_server, self._root, key, content)
        try:
            failure = await tester.test()
        except BaseException:
            await self._restore(key, before)
            raise
        if failure is None:
            self._on_disk[key] = content
            logger.info("shared HTTPS server %s in place, for upstream %s", key, server.upstream)
            return
        await self._restore(key, before)
        logger.error(
            "nginx refuses the shared HTTPS server %s (upstream %s, port %d, body size %d MiB); "
            "its sites get a server of their own: %s",
            key,
            server.upstream,
            server.https_port,
            server.max_body_size_mib,
            failure,
        )

    async def _restore(self, key: str, before: bytes | None) -> None:
        if before is None:
            await asyncio.to_thread(files.remove_shared_server, self._root, key)
        else:
            await asyncio.to_thread(files.write_shared_server, self._root, key, before)
