"""Freed heap memory goes back to the OS when the maintenance pass asks."""

from __future__ import annotations

import ctypes.util
from pathlib import Path

import numpy as np
import pytest

from pitwall.storage import memtrim

pytestmark = pytest.mark.timeout(30)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(memtrim._trim is None or not ctypes.util.find_library("c"), reason="needs glibc")
def test_freed_heap_pages_are_returned() -> None:
    big = np.ones(2 << 20)  # a large (16 MiB) free raises glibc's mmap threshold: later arrays come from the heap
    del big
    arrays = [np.ones(1 << 17) for _ in range(400)]  # 1 MiB each, 400 MiB of heap
    keep = arrays[-1]  # the heap's top stays in use, so only a trim (not the free) can hand pages back
    del arrays
    before = _rss_mib()
    assert memtrim.release_free_memory()
    assert before - _rss_mib() > 200
    assert keep.sum() == 1 << 17
