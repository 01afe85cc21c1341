"""Recently read series' samples of block tables, kept in memory (issue 24).

A DuckDB query costs ~1 ms whatever it returns, so a small query over
samples already flushed into blocks spent most of its time there. Reads of
a few series keep each series' whole stretch of a block here, keyed by
(table, generation, rows, sid): a flush that adds a run to the block changes
``rows`` and a compaction ``generation``, so a changed block is never
answered from the cache; ``drop_table`` frees a table's entries when
retention drops it (a later table of the same name starts at generation 0)
or a compaction replaces it. Sids are global, never reused, and belong to
one tenant, so entries are per tenant by construction.

Contract: ``get``/``put``/``drop_table`` are thread-safe; entries are
read-only arrays the cache owns; the least recently used go first once the
entries hold more than ``max_samples`` samples.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

__all__ = ["BlockSeriesCache", "Key"]

Key = tuple[str, int, int, int]  # (table, generation, rows, sid)


class BlockSeriesCache:
    """LRU of (timestamps, values) per block and series, bounded by samples."""

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self._entries: OrderedDict[Key, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._samples = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def samples(self) -> int:
        return self._samples

    def get(self, key: Key) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return hit

    def put(self, key: Key, ts: np.ndarray, vals: np.ndarray) -> None:
        """Keep copies of ``ts``/``vals`` (a slice would pin the whole array it came from)."""
        n = len(ts)
        if n > self.max_samples:
            return
        t, v = np.array(ts, dtype=np.int64), np.array(vals, dtype=np.float64)
        t.flags.writeable = False
        v.flags.writeable = False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._samples -= len(old[0])
            self._entries[key] = (t, v)
            self._samples += n
            while self._samples > self.max_samples:
                _, (ot, _) = self._entries.popitem(last=False)
                self._samples -= len(ot)

    def drop_table(self, table: str) -> None:
        """Forget every entry of ``table`` (dropped by retention, or replaced by a compaction)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == table]:
                self._samples -= len(self._entries.pop(key)[0])
