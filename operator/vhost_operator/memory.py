"""Handing memory freed after a burst back to the operating system.

A burst (thousands of new hosts, or a restart that lists them all) fills the heap with objects
that are all freed again minutes later; glibc's allocator keeps most of that freed memory
mapped, so the resident size stays at the burst's peak. ``malloc_trim`` returns the free pages
to the kernel. It takes milliseconds, and on a C library without it this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
from collections.abc import Callable

TRIM_INTERVAL = 10.0
"""Seconds between two trims."""


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
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


async def release_periodically(interval: float = TRIM_INTERVAL) -> None:
    """Trim every ``interval`` seconds until cancelled (in a thread: it holds no Python lock)."""
    if _malloc_trim() is None:
        return
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(release_freed_memory)
