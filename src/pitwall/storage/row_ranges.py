"""An in-memory index from keys to the row ranges of a block table that hold them.

Block tables are only ever appended to (each flush adds one run of rows) or
rewritten whole, so a row's position never changes and a key's rows form a
few contiguous stretches: one per run that holds it. Keeping, per key, the
first and last row of each stretch lets a reader ask DuckDB for exactly those
rows (``rowid``/``seq BETWEEN`` literals prune by zone map) instead of
scanning the table. Both the span store (key: trace) and the metric store
(key: series) use it.
"""

from __future__ import annotations

import numpy as np

_EMPTY = np.empty(0, dtype=np.int64)


def stretches(keys: np.ndarray, base: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key, first row, last row) of every maximal stretch of equal keys; row i is ``base + i``."""
    n = len(keys)
    if not n:
        return _EMPTY, _EMPTY, _EMPTY
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(keys[1:], keys[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:] - 1
    ends[-1] = n - 1
    return np.asarray(keys[starts], dtype=np.int64), starts + base, ends + base


class RowRanges:
    """Stretches of a block's rows by key: entries sorted by key, a key's entries in row order."""

    def __init__(self) -> None:
        self.keys = _EMPTY
        self.lo = _EMPTY
        self.hi = _EMPTY
        self.rows = 0  # rows in the table: the next run starts here

    @classmethod
    def of_table(cls, keys: np.ndarray) -> RowRanges:
        """The index of a table whose rows, in order, have these keys."""
        idx = cls()
        idx.add_run(keys)
        return idx

    @classmethod
    def of_entries(cls, keys: np.ndarray, lo: np.ndarray, hi: np.ndarray, rows: int) -> RowRanges:
        """An index from stored entries: sorted by key, a key's entries in row order."""
        idx = cls()
        idx.keys, idx.lo, idx.hi, idx.rows = keys, lo, hi, rows
        return idx

    def add_run(self, keys: np.ndarray) -> None:
        """Index a run of ``len(keys)`` rows appended to the table (keys in row order)."""
        k, lo, hi = stretches(keys, self.rows)
        order = np.argsort(k, kind="stable")
        k, lo, hi = k[order], lo[order], hi[order]
        # Merge without re-sorting: new entries go after the key's older ones.
        pos = np.searchsorted(self.keys, k, side="right")
        self.keys = np.insert(self.keys, pos, k)
        self.lo = np.insert(self.lo, pos, lo)
        self.hi = np.insert(self.hi, pos, hi)
        self.rows += len(keys)

    def fragmented(self) -> bool:
        """Whether some key's rows are in more than one stretch."""
        return bool(np.any(self.keys[1:] == self.keys[:-1]))

    def entries(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(key, first row, last row) of every stretch of any of the sorted, unique ``keys``."""
        a = np.searchsorted(self.keys, keys, side="left")
        b = np.searchsorted(self.keys, keys, side="right")
        n = b - a
        total = int(n.sum())
        if not total:
            return _EMPTY, _EMPTY, _EMPTY
        has = np.flatnonzero(n)
        a, n = a[has], n[has]
        idx = np.arange(total, dtype=np.int64) + np.repeat(a - (np.cumsum(n) - n), n)
        return self.keys[idx], self.lo[idx], self.hi[idx]

    def spans(self, keys: np.ndarray, *, max_spans: int, join_gap: int) -> tuple[np.ndarray, np.ndarray]:
        """Few row ranges covering every row of ``keys`` (sorted, unique), in row order.

        Ranges closer than ``join_gap`` rows are joined, and more are joined
        (closest first) until at most ``max_spans`` remain: a reader pays per
        range far more than per extra row read.
        """
        _, lo, hi = self.entries(keys)
        if not len(lo):
            return _EMPTY, _EMPTY
        order = np.argsort(lo)
        lo, hi = lo[order], hi[order]
        gaps = lo[1:] - hi[:-1] - 1  # rows between neighbours
        cut = gaps > join_gap
        keep = max_spans - 1  # cuts allowed
        if int(cut.sum()) > keep:
            cut = np.zeros(len(gaps), dtype=bool)
            if keep > 0:
                cut[np.argpartition(gaps, len(gaps) - keep)[len(gaps) - keep :]] = True
        starts = np.concatenate([[0], np.flatnonzero(cut) + 1])
        return lo[starts], np.maximum.reduceat(hi, starts)
