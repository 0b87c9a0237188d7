"""Handing freed memory back to the kernel (``vhost_operator.memory``)."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import os
import platform
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from vhost_operator.admission.tls import make_serving_material
from vhost_operator.memory import (
    MALLOC_ARENAS,
    TLS_READ_BUFFER,
    TrimPolicy,
    limit_tls_read_buffers,
    release_freed_memory,
    release_periodically,
    resident_bytes,
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_returns_pages_freed_after_a_burst() -> None:
    burst = [bytes(300) for _ in range(200_000)]  # ~60 MiB of small objects from the heap
    del burst
    assert release_freed_memory() is True


def test_periodic_release_runs_until_cancelled() -> None:
    async def scenario() -> None:
        task = asyncio.create_task(release_periodically(0.01))
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(scenario())


MIB = 2**20


def test_a_steady_process_trims_once_then_never() -> None:
    policy = TrimPolicy(growth=16 * MIB, settling_trims=2)
    decisions = []
    for _ in range(10):
        decisions.append(policy.should_trim(100 * MIB))
        if decisions[-1]:
            policy.trimmed(100 * MIB)
    # The first look has nothing to compare with; two settling trims follow, then quiet.
    assert decisions == [True, True, True] + [False] * 7


def test_growth_starts_trimming_again_until_the_burst_has_settled() -> None:
    policy = TrimPolicy(growth=16 * MIB, settling_trims=2)
    policy.trimmed(100 * MIB)
    assert policy.should_trim(110 * MIB) is False, "below the growth threshold"
    assert policy.should_trim(150 * MIB) is True, "a burst"
    policy.trimmed(140 * MIB)
    assert policy.should_trim(170 * MIB) is True, "still growing"
    policy.trimmed(160 * MIB)
    assert [policy.should_trim(160 * MIB) for _ in range(4)] == [True, True, False, False]


def test_resident_size_is_read_from_proc() -> None:
    assert resident_bytes() > MIB


ARENAS_USED = """
import ctypes, ctypes.util, sys, tempfile, threading
from vhost_operator.memory import limit_malloc_arenas
print(limit_malloc_arenas())
threads = 8
barrier, kept = threading.Barrier(threads), []
def allocate():  # all alive at once: each thread asks for an arena of its own
    barrier.wait()
    kept.append([bytes(5000) for _ in range(100)])
    barrier.wait()
workers = [threading.Thread(target=allocate) for _ in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.NamedTemporaryFile("r") as report:
    handle = libc.fopen(report.name.encode(), b"w")
    libc.malloc_info(0, handle)
    libc.fclose(handle)
    print(report.read().count("<heap nr="))
"""


def arenas_used(**environment: str) -> tuple[str, int]:
    """(whether the limit was set, malloc arenas in use) in a fresh interpreter whose eight
    threads allocate at the same time."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | environment
    result = subprocess.run(
        [sys.executable, "-c", ARENAS_USED], env=env, capture_output=True, text=True, check=True
    )
    limited, count = result.stdout.split()
    return limited, int(count)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_threads_share_the_limited_arenas() -> None:
    assert arenas_used() == ("True", MALLOC_ARENAS)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_administrators_setting_stands() -> None:
    assert arenas_used(MALLOC_ARENA_MAX="4") == ("False", 4)


@pytest.fixture
def tls_read_buffer_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio's buffer size is put back after the test (it is process-wide)."""
    monkeypatch.setattr(
        asyncio.sslproto.SSLProtocol, "max_size", asyncio.sslproto.SSLProtocol.max_size
    )


def _tls_round_trip(tmp_path: Path, payload: bytes) -> tuple[bytes, list[int]]:
    """``payload`` sent over a real asyncio TLS connection on loopback; what arrived, and the
    read buffer sizes of the connections' TLS protocols."""
    material = make_serving_material(["127.0.0.1"], tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(material.certificate_path, material.key_path)
    client_context = ssl.create_default_context(cadata=material.ca_pem.decode())
    buffers: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffers.append(len(writer.transport._ssl_protocol._ssl_buffer))  # type: ignore[attr-defined]
        writer.write(payload)
        await writer.drain()
        writer.close()

    async def scenario() -> bytes:
        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context, server_hostname="127.0.0.1"
            )
            buffers.append(len(writer.transport._ssl_protocol._ssl_buffer))  # type: ignore[attr-defined]
            received = await reader.read(-1)
            writer.close()
            return received

    return asyncio.run(scenario()), buffers


@pytest.mark.usefixtures("tls_read_buffer_restored")
def test_tls_connections_read_through_a_small_buffer_and_lose_nothing(tmp_path: Path) -> None:
    payload = os.urandom(3 * 2**20 + 17)  # many buffers' worth
    limit_tls_read_buffers()
    received, buffers = _tls_round_trip(tmp_path, payload)
    assert received == payload
    assert buffers == [TLS_READ_BUFFER, TLS_READ_BUFFER]
    assert TLS_READ_BUFFER < 256 * 2**10  # asyncio's own
