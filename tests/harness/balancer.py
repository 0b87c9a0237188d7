"""A round-robin HTTP balancer in a thread of the test: what nginx in front of the challenge
Service does for several operator replicas.

Each request goes to the next replica in turn, over a new connection (nginx's default towards
upstreams); a replica that refuses the connection or drops it without an answer (a killed one)
is skipped for the next, as nginx's ``proxy_next_upstream error`` does. It counts the requests
each replica answered, so that a test can tell that every replica served.

Usage::

    with Balancer(port, [("127.0.0.1", a), ("127.0.0.1", b)]) as balancer:
        ...
        assert all(balancer.answered.values())
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Sequence
from types import TracebackType

import aiohttp
from aiohttp import web

Address = tuple[str, int]


class Balancer:
    def __init__(self, port: int, targets: Sequence[Address], host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.targets = list(targets)
        self.answered: collections.Counter[Address] = collections.Counter()
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="balancer", daemon=True)

    def __enter__(self) -> Balancer:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the balancer did not start")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._stopping is not None
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_route("GET", "/{path:.*}", self._forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        connector = aiohttp.TCPConnector(force_close=True)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self._session = session
            self._started.set()
            await self._stopping.wait()
        await runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        first, self._next = self._next, self._next + 1
        for attempt in range(len(self.targets)):
            target = self.targets[(first + attempt) % len(self.targets)]
            url = f"http://{target[0]}:{target[1]}{request.path_qs}"
            try:
                async with self._session.get(
                    url, headers={"Host": request.host}, allow_redirects=False
                ) as answer:
                    body = await answer.read()
            except (aiohttp.ClientConnectionError, TimeoutError):
                continue
            self.answered[target] += 1
            content_type = answer.headers.get("Content-Type", "text/plain")
            return web.Response(
                status=answer.status,
                body=body,
                content_type=None,
                headers={"Content-Type": content_type},
            )
        return web.Response(status=502, text="no replica answered\n")
