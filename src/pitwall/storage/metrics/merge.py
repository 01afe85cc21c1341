"""Numpy kernels of the metrics read and flush paths: gather, order, merge.

Contract: pure functions over (sid, ts, val) columns (int64, int64, float64),
no I/O and no store state. ``Chunk`` is one head chunk: rows grouped by sid,
time-ordered within a sid. ``gather_head`` picks wanted series out of a chunk,
``sorted_by_sid_ts`` orders block rows, ``order_by`` is the (major, minor)
sort used when flushing, and ``place`` merges per-source parts into one flat
``(counts, ts, values)`` layout in a caller-given series order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pitwall.core.native import optional_module

__all__ = ["Chunk", "gather_few", "gather_few_scales", "gather_head", "order_by", "place", "sorted_by_sid_ts"]

# (first sid, first time, time width, key): key = (sid - first sid) * width + (ts - first time).
_Key = tuple[int, int, int, np.ndarray]

# gather_few's loops in C (pitwall/_native/metricsc.c); optional: not built without a compiler.
_metricsc: Any = optional_module("pitwall._metricsc")


def gather_few_scales() -> bool:
    """Whether ``gather_few`` beats the general path at any number of sids (its C form: 3.7x at 3,200)."""
    return _metricsc is not None


@dataclass
class Chunk:
    sid: np.ndarray  # int64, grouped by sid, time-ordered within a sid
    ts: np.ndarray
    val: np.ndarray
    # Built on a chunk's first read by ``gather_few``; chunks are never changed in place.
    _key: _Key | None = field(default=None, repr=False, compare=False)
    _no_key: bool = field(default=False, repr=False, compare=False)
    _starts: tuple[int, np.ndarray | None] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.sid.shape[0])

    def sid_ts_key(self) -> _Key | None:
        """One sorted int64 per row ordering rows by (sid, ts), so a window of any sid is two binary searches.

        None for an empty chunk or when the key would overflow (a time span
        times the sid span beyond 2**62); the key is built once, on first use.
        """
        if self._key is None and not self._no_key:
            n = len(self)
            s0, s1 = (int(self.sid[0]), int(self.sid[-1])) if n else (0, 0)
            t0 = int(self.ts.min()) if n else 0
            width = int(self.ts.max()) - t0 + 1 if n else 0
            if not n or (s1 - s0 + 3) * width >= 2**62:
                self._no_key = True
                return None
            key = self.sid - s0
            key *= width
            key += self.ts
            key -= t0
            self._key = (s0, t0, width, key)
        return self._key


    def sid_starts(self) -> tuple[int, np.ndarray | None]:
        """``(s0, starts)``: sid ``s0 + i`` owns rows ``starts[i]:starts[i + 1]``; built once, on first use.

        ``starts`` is None when the chunk's sids are too sparse for such an
        array to pay (more than four entries a row): the rows of a sid are
        then found by binary search on ``sid``.
        """
        if self._starts is None:
            n = len(self)
            s0, s1 = (int(self.sid[0]), int(self.sid[-1])) if n else (0, -1)
            starts = None
            if n and s1 - s0 + 2 <= 4 * n + 1024:
                starts = np.searchsorted(self.sid, np.arange(s0, s1 + 2, dtype=np.int64)).astype(np.int64)
            self._starts = (s0, starts)
        return self._starts


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


def _few_bounds(key: _Key, sids: np.ndarray, start: int, end: int) -> tuple[list[int], list[int]]:
    """Per sid, the chunk rows [a, b) of its samples in [start, end] (sids outside the chunk: empty)."""
    s0, t0, width, k = key
    top = int(k[-1]) // width + 1  # one past the chunk's last sid, relative to s0
    lo_off = min(max(start - t0, 0), width)
    hi_off = min(max(end - t0, -1), width - 1)
    if len(sids) == 1:  # scalars: a numpy call on a one-element array costs as much as on a thousand
        one = min(max(int(sids[0]) - s0, -1), top) * width
        return [int(k.searchsorted(one + lo_off, "left"))], [int(k.searchsorted(one + hi_off, "right"))]
    rel = sids - s0
    np.maximum(rel, -1, out=rel)  # np.clip costs 3x as much on small arrays
    np.minimum(rel, top, out=rel)
    rel *= width
    return k.searchsorted(rel + lo_off, "left").tolist(), k.searchsorted(rel + hi_off, "right").tolist()


def gather_few(
    chunks: Sequence[Chunk], sids: np.ndarray, start: int, end: int, account: Callable[[int], None] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``gather_head`` and ``place`` in one for a few sids (series in ``sids`` order, then time).

    With the C helper, a sid's rows in a chunk come from its ``sid_starts``
    and the window's from a binary search on their times. Without it, each
    chunk's rows of a sid in the window are found by two binary searches on
    its ``sid_ts_key``, and the pieces are cut as slices: a constant number
    of numpy calls per chunk, where the general path makes ~40 whatever the
    sizes; then None when a chunk has no key.
    """
    if _metricsc is not None:
        return _gather_few_c(chunks, sids, start, end, account)
    found: list[tuple[Chunk, list[int], list[int]]] = []
    for c in chunks:
        if not len(c):
            continue
        key = c.sid_ts_key()
        if key is None:
            return None
        a, b = _few_bounds(key, sids, start, end)
        n = sum(b) - sum(a)
        if n:
            if account is not None:
                account(n)
            found.append((c, a, b))
    counts = [0] * len(sids)
    ts: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for i in range(len(sids)):
        for c, a, b in found:
            lo, hi = a[i], b[i]
            if hi > lo:
                ts.append(c.ts[lo:hi])
                vals.append(c.val[lo:hi])
                counts[i] += hi - lo
    cnt = np.array(counts, dtype=np.int64)
    if len(ts) == 1:  # copies, as the general path's: a reader must never alias the head
        return cnt, ts[0].copy(), vals[0].copy()
    if not ts:
        return cnt, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    return cnt, np.concatenate(ts), np.concatenate(vals)


def _gather_few_c(
    chunks: Sequence[Chunk], sids: np.ndarray, start: int, end: int, account: Callable[[int], None] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``gather_few`` by the C helper: the same pieces, found from ``sid_starts``, copied into fresh arrays."""
    indexed = [(*c.sid_starts(), c.sid, c.ts, c.val) for c in chunks if len(c)]
    counts, ts, vals = _metricsc.gather(indexed, np.ascontiguousarray(sids, dtype=np.int64), start, end, account)
    return (np.frombuffer(counts, dtype=np.int64), np.frombuffer(ts, dtype=np.int64),
            np.frombuffer(vals, dtype=np.float64))


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

