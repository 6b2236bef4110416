"""Handing freed memory back to the system, between the bins of whole-city work (`day.binned`) and the
chunks of the city generator (`fixtures.city`)."""
from __future__ import annotations

import ctypes

import pyarrow as pa

try:
    _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.malloc_trim
except (OSError, AttributeError):  # not glibc
    _LIBC = None


def release_memory() -> None:
    """What pyarrow's allocator keeps for reuse, and glibc's free blocks inside its heap (freed, but still
    counted against the process), given back. Without it a bin's memory carries into the next one."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
