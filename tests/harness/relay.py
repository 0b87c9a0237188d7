"""A TCP relay, run as its own process by the test node: the API server listens on 127.0.0.1
only, and pods reach it (through the ``kubernetes`` Service) at the node's address instead.

    python -m tests.harness.relay LISTEN_HOST:PORT TARGET_HOST:PORT [OWNER]

OWNER is ignored: the node passes its work directory, so that the cleanup after a crashed
session finds this process by its arguments like the node's other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        # Half-close only: the other direction may still carry the answer.
        if writer.can_write_eof():
            writer.write_eof()


async def relay(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        upstream_writer.close()
        writer.close()

    server = await asyncio.start_server(connect, *listen)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    listen, target = _address(argv[0]), _address(argv[1])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(relay(listen, target))


if __name__ == "__main__":
    main(sys.argv[1:])
