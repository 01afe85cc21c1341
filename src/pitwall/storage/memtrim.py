"""Hand freed heap memory back to the OS (glibc's ``malloc_trim``); a no-op elsewhere.

The stores allocate and free large numpy arrays (head merges, flushes,
compactions). glibc raises its mmap threshold after the first large free, so
later arrays of that size come from the heap, and freed heap pages stay in the
process: after a remote-write burst and a flush that is 40-90 MiB of RSS
holding nothing. ``malloc_trim(0)`` returns them; it takes milliseconds, so
the maintenance pass calls it, not the write path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["release_free_memory"]


def _load() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    return fn


_trim = _load()


def release_free_memory() -> bool:
    """Return free heap pages to the OS; whether anything was released (False without glibc)."""
    return bool(_trim(0)) if _trim is not None else False
