"""An in-memory ``LogQuerier`` (tests, benchmarks, the ruler's unit tests).

Each stream keeps its entries column-wise, sorted by time. Line filters are
applied exactly as LogQL defines them (substring; RE2 regex, unanchored), so
it can stand in for any store behind the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pitwall.core import regex
from pitwall.core.labels import Labels, Matcher, labels_get
from pitwall.logs.model import Direction, LineFilter, LineFilterOp, LogBatch, LogEntry, LogStream, PushStream

__all__ = ["InMemoryLogQuerier", "MemoryLogQuerier"]

Metadata = tuple[tuple[str, str], ...]


@dataclass
class _Stream:
    labels: Labels
    ts: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    metadata: list[Metadata] = field(default_factory=list)
    # column arrays, rebuilt lazily after appends
    ts_arr: np.ndarray | None = None
    bytes_arr: np.ndarray | None = None

    def columns(self) -> tuple[np.ndarray, np.ndarray]:
        if self.ts_arr is None or self.bytes_arr is None:
            order = np.argsort(np.asarray(self.ts, dtype=np.int64), kind="stable")
            if not np.array_equal(order, np.arange(len(order))):
                self.ts = [self.ts[i] for i in order]
                self.lines = [self.lines[i] for i in order]
                self.metadata = [self.metadata[i] for i in order]
            self.ts_arr = np.asarray(self.ts, dtype=np.int64)
            self.bytes_arr = np.fromiter(
                (len(x.encode()) for x in self.lines), dtype=np.int64, count=len(self.lines)
            )
        return self.ts_arr, self.bytes_arr


_LineMask = Callable[[list[str]], np.ndarray]


def _filter_fn(f: LineFilter) -> _LineMask:
    """``lines -> keep mask`` for one line filter; a regex runs over all the lines at once (RE2)."""
    p = f.pattern
    if f.op is LineFilterOp.CONTAINS:
        return lambda lines: np.fromiter((p in x for x in lines), dtype=bool, count=len(lines))
    if f.op is LineFilterOp.NOT_CONTAINS:
        return lambda lines: np.fromiter((p not in x for x in lines), dtype=bool, count=len(lines))
    rx = regex.compile(p)
    if f.op is LineFilterOp.REGEX:
        return rx.match_many
    return lambda lines: ~rx.match_many(lines)


class InMemoryLogQuerier:
    """Holds streams in memory and answers the ``LogQuerier`` protocol."""

    def __init__(self, streams: Iterable[PushStream] = ()) -> None:
        self._streams: dict[Labels, _Stream] = {}
        self.push(streams)

    # ------------------------------------------------------------ writes

    def push(self, streams: Iterable[PushStream]) -> None:
        """Add entries (any order; sorted on first read)."""
        for ps in streams:
            self.append(ps.labels, ps.entries)

    def append(self, labels: Labels, entries: Iterable[LogEntry]) -> None:
        st = self._stream(labels)
        for e in entries:
            st.ts.append(e.ts_ns)
            st.lines.append(e.line)
            st.metadata.append(e.metadata)
        st.ts_arr = None

    def add(self, labels: Labels, ts_ns: int, line: str, metadata: Metadata = ()) -> None:
        """Add one entry."""
        st = self._stream(labels)
        st.ts.append(ts_ns)
        st.lines.append(line)
        st.metadata.append(metadata)
        st.ts_arr = None

    def append_columns(
        self,
        labels: Labels,
        ts_ns: Sequence[int],
        lines: Sequence[str],
        metadata: Sequence[Metadata] | None = None,
    ) -> None:
        """Bulk append without per-entry objects (benchmarks)."""
        st = self._stream(labels)
        st.ts.extend(int(t) for t in ts_ns)
        st.lines.extend(lines)
        st.metadata.extend(metadata if metadata is not None else [()] * len(lines))
        st.ts_arr = None

    def _stream(self, labels: Labels) -> _Stream:
        key = tuple(sorted(labels))
        st = self._streams.get(key)
        if st is None:
            st = self._streams[key] = _Stream(key)
        return st

    # ------------------------------------------------------------ reads

    def _matching(self, matchers: Sequence[Matcher]) -> list[_Stream]:
        out = [
            st
            for st in self._streams.values()
            if all(m.matches(labels_get(st.labels, m.name)) for m in matchers)
        ]
        out.sort(key=lambda st: st.labels)
        return out

    def _indices(self, st: _Stream, start_ns: int, end_ns: int, filters: Sequence[_LineMask]) -> np.ndarray:
        ts, _ = st.columns()
        lo = int(np.searchsorted(ts, start_ns, side="left"))
        hi = int(np.searchsorted(ts, end_ns, side="left"))
        if not filters:
            return np.arange(lo, hi, dtype=np.int64)
        keep = np.arange(lo, hi, dtype=np.int64)
        lines = st.lines[lo:hi]
        for k, f in enumerate(filters):
            if not len(keep):
                break
            hit = f(lines)
            keep = keep[hit]
            if k + 1 < len(filters):
                lines = [x for x, h in zip(lines, hit.tolist(), strict=True) if h]
        return keep

    def select(
        self,
        matchers: Sequence[Matcher],
        start_ns: int,
        end_ns: int,
        *,
        filters: Sequence[LineFilter] = (),
        direction: Direction = Direction.BACKWARD,
        limit: int | None = None,
    ) -> list[LogStream]:
        """Streams with entries in [start, end) passing the filters; at most ``limit`` in total."""
        fns = [_filter_fn(f) for f in filters]
        streams = self._matching(matchers)
        if limit is None or not fns:
            picked = {id(st): self._indices(st, start_ns, end_ns, fns) for st in streams}
        else:
            picked = self._limited(streams, start_ns, end_ns, fns, direction, limit)
        if limit is not None:
            picked = _newest_or_oldest(streams, picked, direction, limit)
        out: list[LogStream] = []
        for st in streams:
            idx = picked.get(id(st))
            if idx is None or idx.size == 0:
                continue
            if direction is Direction.BACKWARD:
                idx = idx[::-1]
            ts, _ = st.columns()
            il = idx.tolist()
            out.append(LogStream(st.labels, ts[idx], [st.lines[i] for i in il], [st.metadata[i] for i in il]))
        return out

    def _limited(
        self,
        streams: list[_Stream],
        start_ns: int,
        end_ns: int,
        fns: list[_LineMask],
        direction: Direction,
        limit: int,
    ) -> dict[int, np.ndarray]:
        """Filter in growing time windows from the wanted end until ``limit`` entries matched."""
        width = max((end_ns - start_ns) // 32, 1)
        parts: dict[int, list[np.ndarray]] = {id(st): [] for st in streams}
        found = 0
        backward = direction is Direction.BACKWARD
        cursor = end_ns if backward else start_ns
        while found < limit:
            lo, hi = (
                (max(start_ns, cursor - width), cursor) if backward else (cursor, min(end_ns, cursor + width))
            )
            if hi <= lo:
                break
            for st in streams:
                idx = self._indices(st, lo, hi, fns)
                if idx.size:
                    parts[id(st)].append(idx)
                    found += int(idx.size)
            cursor = lo if backward else hi
            width *= 2
        return {k: np.sort(np.concatenate(v)) if v else np.zeros(0, dtype=np.int64) for k, v in parts.items()}

    def scan(
        self,
        matchers: Sequence[Matcher],
        start_ns: int,
        end_ns: int,
        *,
        filters: Sequence[LineFilter] = (),
        with_lines: bool = True,
        with_metadata: bool = False,
    ) -> LogBatch:
        """Matching entries in [start, end) column-wise, sorted by (stream, ts)."""
        fns = [_filter_fn(f) for f in filters]
        labels: list[Labels] = []
        sidx: list[np.ndarray] = []
        tss: list[np.ndarray] = []
        sizes: list[np.ndarray] = []
        lines: list[str] | None = [] if with_lines else None
        mds: list[Metadata] | None = [] if with_metadata else None
        for st in self._matching(matchers):
            idx = self._indices(st, start_ns, end_ns, fns)
            if idx.size == 0:
                continue
            ts, nbytes = st.columns()
            sidx.append(np.full(idx.size, len(labels), dtype=np.int64))
            labels.append(st.labels)
            tss.append(ts[idx])
            sizes.append(nbytes[idx])
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            contiguous = hi - lo == idx.size
            if lines is not None:
                lines.extend(st.lines[lo:hi] if contiguous else [st.lines[i] for i in idx.tolist()])
            if mds is not None:
                mds.extend(st.metadata[lo:hi] if contiguous else [st.metadata[i] for i in idx.tolist()])
        if not labels:
            empty = np.zeros(0, dtype=np.int64)
            return LogBatch([], empty, empty, empty, lines, mds)
        return LogBatch(labels, np.concatenate(sidx), np.concatenate(tss), np.concatenate(sizes), lines, mds)

    def series(self, matchers: Sequence[Matcher], start_ns: int, end_ns: int) -> list[Labels]:
        out: list[Labels] = []
        for st in self._matching(matchers):
            ts, _ = st.columns()
            lo = int(np.searchsorted(ts, start_ns, side="left"))
            hi = int(np.searchsorted(ts, end_ns, side="left"))
            if hi > lo:
                out.append(st.labels)
        return out

    def label_names(self, start_ns: int, end_ns: int) -> list[str]:
        return sorted({k for lbl in self.series([], start_ns, end_ns) for k, _ in lbl})

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ns: int, end_ns: int) -> list[str]:
        return sorted({v for lbl in self.series(matchers, start_ns, end_ns) for k, v in lbl if k == name})


def _newest_or_oldest(
    streams: list[_Stream], picked: dict[int, np.ndarray], direction: Direction, limit: int
) -> dict[int, np.ndarray]:
    """Keep the ``limit`` newest (backward) or oldest (forward) entries over all streams."""
    total = sum(int(v.size) for v in picked.values())
    if total <= limit:
        return picked
    all_ts = np.concatenate([st.columns()[0][picked[id(st)]] for st in streams])
    owner = np.concatenate([np.full(picked[id(st)].size, n, dtype=np.int64) for n, st in enumerate(streams)])
    pos = np.concatenate([np.arange(picked[id(st)].size) for st in streams])
    key = -all_ts if direction is Direction.BACKWARD else all_ts
    chosen = np.lexsort((owner, key))[:limit]
    out: dict[int, np.ndarray] = {}
    for n, st in enumerate(streams):
        sel = np.sort(pos[chosen[owner[chosen] == n]])
        out[id(st)] = picked[id(st)][sel]
    return out


MemoryLogQuerier = InMemoryLogQuerier
