"""Numpy kernels of the metrics read and flush paths: gather, order, merge.

Contract: pure functions over (sid, ts, val) columns (int64, int64, float64),
no I/O and no store state. ``Chunk`` is one head chunk: rows grouped by sid,
time-ordered within a sid. ``gather_head`` picks wanted series out of a chunk,
``sorted_by_sid_ts`` orders block rows, ``order_by`` is the (major, minor)
sort used when flushing, and ``place`` merges per-source parts into one flat
``(counts, ts, values)`` layout in a caller-given series order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Chunk", "gather_head", "order_by", "place", "sorted_by_sid_ts"]


@dataclass
class Chunk:
    sid: np.ndarray  # int64, grouped by sid, time-ordered within a sid
    ts: np.ndarray
    val: np.ndarray

    def __len__(self) -> int:
        return int(self.sid.shape[0])


def sorted_by_sid_ts(
    s: np.ndarray, t: np.ndarray, v: np.ndarray, lo: int, hi: int, start: int, end: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by (sid, ts); cheap when they already are, or nearly are."""
    width = end - start + 1
    if (hi - lo + 1) * width >= 2**62:
        order = np.lexsort((t, s))
        return s[order], t[order], v[order]
    key = s - lo
    key *= width
    key += t - start
    if bool(np.all(key[1:] > key[:-1])):
        return s, t, v
    order = np.argsort(key, kind="stable")
    return s[order], t[order], v[order]


def order_by(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """The permutation sorting rows by (major, minor), both int64 and major >= 0."""
    if not len(major):
        return np.empty(0, dtype=np.int64)
    base = int(minor.min())
    width = int(minor.max()) - base + 1
    if (int(major.max()) + 1) * width >= 2**62:
        return np.lexsort((minor, major))
    key = major * width
    key += minor - base
    return np.argsort(key, kind="stable")


def gather_head(
    c: Chunk, sids: np.ndarray, start: int, end: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Samples of ``sids`` in [start, end] from one head chunk, grouped by sid in ``sids`` order."""
    if not len(c.sid):
        return None
    a = np.searchsorted(c.sid, sids, side="left")
    b = np.searchsorted(c.sid, sids, side="right")
    n = b - a
    total = int(n.sum())
    if not total:
        return None
    has = np.flatnonzero(n)
    a, n = a[has], n[has]
    idx: np.ndarray | None = None
    if total < len(c.sid) or bool(np.any(a[1:] < a[:-1])):
        idx = np.arange(total, dtype=np.int64) + np.repeat(a - (np.cumsum(n) - n), n)
    s = c.sid if idx is None else c.sid[idx]
    t = c.ts if idx is None else c.ts[idx]
    v = c.val if idx is None else c.val[idx]
    if int(t.min()) < start or int(t.max()) > end:
        m = (t >= start) & (t <= end)
        s, t, v = s[m], t[m], v[m]
        if not len(s):
            return None
    return s, t, v


def place(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], rank: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge parts into one flat layout ordered by ``rank[sid]``, then time.

    Each part holds (sid, ts, val) with every sid's samples contiguous and in
    time order, and parts come in time order per sid (blocks by start time in
    insertion order, then head chunks). Every sample's destination is computed
    directly, without sorting.
    """
    counts = np.zeros(k, dtype=np.int64)
    if not parts:
        e = np.empty(0, dtype=np.int64)
        return counts, e, np.empty(0, dtype=np.float64)
    runs = []
    for s, _t, _v in parts:
        n = len(s)
        new_run = np.empty(n, dtype=bool)
        new_run[0] = True
        np.not_equal(s[1:], s[:-1], out=new_run[1:])
        run_start = np.flatnonzero(new_run)
        run_len = np.diff(np.append(run_start, n))
        run_rank = rank[s[run_start]]
        if int(np.bincount(run_rank, minlength=k).max()) > 1:
            # A sid in two runs of one part: not grouped as promised; sort instead.
            return place_sorted(parts, rank, k)
        runs.append((run_start, run_len, run_rank))
        counts[run_rank] += run_len
    if len(parts) == 1 and bool(np.all(runs[0][2][1:] > runs[0][2][:-1])):
        return counts, parts[0][1], parts[0][2]  # already in the wanted order
    total = int(counts.sum())
    start = np.zeros(k, dtype=np.int64)
    np.cumsum(counts[:-1], out=start[1:])
    ts = np.empty(total, dtype=np.int64)
    vals = np.empty(total, dtype=np.float64)
    for (s, t, v), (run_start, run_len, run_rank) in zip(parts, runs, strict=True):
        pos = np.repeat(start[run_rank] - run_start, run_len)
        pos += np.arange(len(s), dtype=np.int64)
        ts[pos] = t
        vals[pos] = v
        start[run_rank] += run_len
    # Each series must come out strictly increasing in time.
    bad = ts[1:] <= ts[:-1]
    if bad.any():
        ends = np.cumsum(counts)[:-1]
        bad[ends[(ends > 0) & (ends < total)] - 1] = False
        if bad.any():
            return place_sorted(parts, rank, k)
    return counts, ts, vals


def place_sorted(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], rank: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``place`` for parts in no particular order: a full (rank, ts) sort."""
    s = np.concatenate([p[0] for p in parts])
    t = np.concatenate([p[1] for p in parts])
    v = np.concatenate([p[2] for p in parts])
    r = rank[s]
    order = np.lexsort((t, r))
    return np.bincount(r, minlength=k).astype(np.int64), t[order], v[order]

