"""Handing memory freed after a burst back to the operating system, keeping it in few places
(``limit_malloc_arenas``: glibc's arenas, which otherwise grow with the threads), and not
reserving it per TLS connection (``limit_tls_read_buffers``: asyncio's read buffers).

A burst (thousands of new hosts, or a restart that lists them all) fills the heap with objects
that are all freed again minutes later; glibc's allocator keeps most of that freed memory
mapped, so the resident size stays at the burst's peak. ``malloc_trim`` returns the free pages
to the kernel. On a C library without it this does nothing.

A trim is not free: it walks the whole heap holding the allocator's lock, tens of milliseconds
for a heap of a hundred megabytes, during which the event loop (webhook answers included)
waits. So it runs only around bursts: when the resident size has grown since the last trim, and
then a few more times while what the burst left behind is freed. A steady operator never trims.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ctypes
import ctypes.util
import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

TRIM_INTERVAL = 10.0
"""Seconds between two looks at the resident size."""

GROWTH = 16 * 2**20
"""Bytes the resident size must have grown since the last trim to count as a burst."""

SETTLING_TRIMS = 6
"""Trims after a burst's growth stopped (one per interval): the objects of a burst are freed
over the following minute (kopf's workers end after their idle timeout)."""


@dataclasses.dataclass
class TrimPolicy:
    """Decides, from the resident size alone (cheap to read), whether to trim now."""

    growth: int = GROWTH
    settling_trims: int = SETTLING_TRIMS
    baseline: int | None = None
    settling: int = 0

    def should_trim(self, resident: int) -> bool:
        if self.baseline is None or resident > self.baseline + self.growth:
            self.settling = self.settling_trims
            return True
        if self.settling > 0:
            self.settling -= 1
            return True
        return False

    def trimmed(self, resident: int) -> None:
        """Record the resident size right after a trim: growth is measured from here."""
        self.baseline = resident


MALLOC_ARENAS = 2
"""glibc malloc arenas the operator's threads share (glibc's default: 8 per core). Each thread
that allocates while another holds an arena gets one of its own, up to that default; freed
memory stays in the arena it came from, so the operator's thread pool (``BLOCKING_CALL_THREADS``
threads that parse API responses) spread a burst's garbage over many arenas, each keeping its
share resident. The usual setting for threaded Python servers (``MALLOC_ARENA_MAX=2``)."""

M_ARENA_MAX = -8
"""``mallopt``'s parameter number for the arena limit (glibc's ``malloc.h``)."""


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas, before the process starts threads; whether it did (not when
    ``MALLOC_ARENA_MAX`` is set in the environment: the administrator's value stands, nor on
    a C library without ``mallopt``)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))


TLS_READ_BUFFER = 64 * 2**10
"""Bytes of the buffer each of asyncio's TLS connections reads into (asyncio's: 256 KiB, which
it allocates and zero-fills per connection, so resident as long as the connection lives). A TLS
record is at most 16 KiB; a smaller buffer only means more reads for a large response."""


def limit_tls_read_buffers(size: int = TLS_READ_BUFFER) -> None:
    """Make every asyncio TLS connection of this process read through a ``size``-byte buffer:
    kopf's up to ``handlers.lifecycle.KOPF_CONNECTIONS`` connections to the API server, the
    API server's to the webhook, and each serving probe of nginx."""
    asyncio.sslproto.SSLProtocol.max_size = size


def _libc_function(name: str) -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(libc, name, None)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    trim = _libc_function("malloc_trim")
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    function: Callable[[int], int] = trim
    return function


def release_freed_memory() -> bool:
    """Return free heap pages to the kernel; whether the C library could."""
    trim = _malloc_trim()
    return trim is not None and trim(0) == 1


def resident_bytes() -> int:
    """This process's resident size (``/proc/self/statm``), 0 where there is no such file."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


async def release_periodically(
    interval: float = TRIM_INTERVAL, policy: TrimPolicy | None = None
) -> None:
    """Look every ``interval`` seconds and trim when ``policy`` says so, until cancelled (the
    trim runs in a thread: it holds no Python lock)."""
    if _malloc_trim() is None:
        return
    policy = policy or TrimPolicy()
    while True:
        await asyncio.sleep(interval)
        if policy.should_trim(resident_bytes()):
            await asyncio.to_thread(release_freed_memory)
            policy.trimmed(resident_bytes())
