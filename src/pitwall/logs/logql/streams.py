"""Reading log streams for LogQL log queries (Loki's readStreams).

Contract: ``StreamReader(selector, ctx, limit, direction, interval_ns).read()``
walks entries newest-first (backward) or oldest-first (forward) across
streams, in growing time windows, runs the pipeline and stops at ``limit``
entries; ties in time go by stream labels. Line filters are pushed into the
store; ``| json | <label filters>`` is decided column-wise a chunk at a time;
``interval_ns`` keeps one entry per interval. Returns streams sorted by
labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pitwall.core.labels import Labels, Matcher
from pitwall.logs.logql import ast
from pitwall.logs.logql.columnar import (
    FALSE,
    TRUE,
    JsonColumns,
    filter_prefix,
    label_filter_names,
    text_drops,
    tri_filters,
)
from pitwall.logs.logql.context import QueryContext
from pitwall.logs.logql.pipeline import (
    Pipeline,
    split_pushdown,
)
from pitwall.logs.logql.result import (
    StreamEntry,
    StreamResult,
    labels_string,
)
from pitwall.logs.model import LEVEL_LABEL, ArrowLines, Direction, LineFilter, LogStream, next_window_width

__all__ = ["StreamReader", "compile_prefilter", "pushed_filters"]


class StreamReader:
    """Reads up to ``limit`` entries in direction order, through the pipeline (Loki's readStreams)."""

    def __init__(
        self, node: ast.LogSelector, ctx: QueryContext, limit: int, direction: Direction, interval_ns: int
    ) -> None:
        self.node = node
        self.ctx = ctx
        self.limit = limit
        self.direction = direction
        self.interval_ns = interval_ns
        self.pushed, rest = split_pushdown(node.stages)
        self.pipeline = Pipeline.compile(rest)
        # ``| json | <label filters>`` first: decide most entries column-wise, a chunk at a time.
        self.batch_filters = filter_prefix(rest) or None
        self.prefilter = compile_prefilter(rest) if self.batch_filters is None else None
        self.matchers: list[Matcher] = list(node.matchers)
        self.out: dict[Labels, StreamResult] = {}
        self.count = 0
        self.last_ts: int | None = None

    def read(self) -> list[StreamResult]:
        if self.limit == 0:
            return []
        if self.pipeline.empty:
            # Nothing can drop an entry after the store: the store applies the limit.
            # Interval skipping happens here, so the store may only cut at ``limit`` without it.
            streams = self._select(
                self.ctx.start_ns, self.ctx.end_ns, None if self.interval_ns else self.limit
            )
            self._consume(streams)
        else:
            self._read_chunked()
        return sorted(self.out.values(), key=lambda s: labels_string(s.labels))

    def _select(self, start: int, end: int, limit: int | None) -> list[LogStream]:
        streams = self.ctx.querier.select(
            self.matchers, start, end, filters=self.pushed, direction=self.direction, limit=limit
        )
        self.ctx.stats.splits += 1
        for s in streams:
            self.ctx.stats.lines_processed += len(s)
            self.ctx.stats.bytes_processed += ArrowLines.of(s.lines).utf8_bytes()  # as the metric path counts
        return streams

    def _read_chunked(self) -> None:
        """Walk the range in growing windows from the newest (backward) or oldest (forward) end.

        Windows grow with the rate of kept entries, so a selective pipeline reads the rest of
        the range at once after the first window (each read has a fixed cost).
        """
        start, end = self.ctx.start_ns, self.ctx.end_ns
        width = max((end - start) // 16, 1)
        backward = self.direction is Direction.BACKWARD
        cursor = end if backward else start
        while self.count < self.limit:
            if backward:
                lo, hi = max(start, cursor - width), cursor
            else:
                lo, hi = cursor, min(end, cursor + width)
            if hi <= lo:
                break
            self._consume(self._select(lo, hi, None))
            cursor = lo if backward else hi
            width = next_window_width(width, self.limit - self.count, abs(cursor - (end if backward else start)),
                                      self.count)

    def _consume(self, streams: list[LogStream]) -> None:
        if not streams:
            return
        order_s, order_p = _merge_order(streams, self.direction)
        ctx = self.ctx
        process = self.pipeline.process
        bases = [dict(s.labels) for s in streams]
        base_names = [frozenset(b) for b in bases]
        # Shared metadata (detected_level) joins the labels, yet is no stream label for parsers.
        full = [b | dict(s.stream_md) if s.stream_md else b for b, s in zip(bases, streams, strict=True)]
        full_t = [tuple(sorted(f.items())) if s.stream_md else s.labels for f, s in zip(full, streams, strict=True)]
        static = self.pipeline.empty
        prefilter = self.prefilter
        chunk = _CHUNK if self.batch_filters is not None else len(order_s)
        # The column pass reads the lines as one Arrow array; only kept entries become Python strings.
        all_lines = _concat_lines(streams) if self.batch_filters is not None else None
        lo = 0
        while lo < len(order_s):
            sis = order_s[lo : lo + chunk]
            poss = order_p[lo : lo + chunk]
            lo += chunk
            chunk *= 4  # small first (the limit may come early), then amortize per-batch costs
            got = self._batch_state(streams, bases, sis, poss, all_lines) if all_lines is not None else None
            kept_lines: list[str] | None = None
            if got is not None:
                state, chunk_lines = got
                keep = np.flatnonzero(state != FALSE)
                sure = (state[keep] == TRUE).tolist()
                sis, poss = sis[keep], poss[keep]
                kept_lines = chunk_lines.take(keep.tolist())
            else:
                sure = [False] * len(sis)
            for n, (si, pos, ok) in enumerate(zip(sis.tolist(), poss.tolist(), sure, strict=True)):
                if self.count >= self.limit:
                    return
                if n & 0x3FFF == 0:
                    ctx.check_deadline()
                s = streams[si]
                ts = int(s.ts_ns[pos])
                if self.interval_ns and not self._interval_ok(ts):
                    continue
                own = s.metadata[pos] if s.metadata else ()
                md = own + s.stream_md if s.stream_md else own
                line: str | None = s.lines[pos] if kept_lines is None else kept_lines[n]
                if static and not own:
                    labels_t = full_t[si]
                    parsed: tuple[tuple[str, str], ...] = ()
                else:
                    assert line is not None
                    if prefilter is not None and not ok:
                        scratch = full[si].copy()
                        if md:
                            scratch.update(md)
                        if prefilter.process(ts, line, scratch, base_names[si]) is None:
                            continue
                    labels = full[si].copy()
                    if md:
                        labels.update(md)
                    line = process(ts, line, labels, base_names[si])
                    if line is None:
                        continue
                    labels_t = tuple(sorted(labels.items()))
                    md_names = {k for k, _ in md}
                    parsed = tuple(p for p in labels_t if p[0] not in bases[si] and p[0] not in md_names)
                assert line is not None
                self._append(labels_t, s.labels, StreamEntry(ts, line, md, parsed))

    def _batch_state(
        self, streams: list[LogStream], bases: list[dict[str, str]], sis: np.ndarray, poss: np.ndarray,
        all_lines: tuple[pa.Array, np.ndarray],
    ) -> tuple[np.ndarray, ArrowLines] | None:
        """FALSE/TRUE/UNKNOWN per entry for the leading ``| json | <filters>`` stages and the entries'
        lines, or None."""
        filters = self.batch_filters
        if filters is None or not len(sis):
            return None
        if any(s.stream_md for s in streams) and any(
                n.startswith(LEVEL_LABEL) for n in label_filter_names(filters)):
            return None  # detected_level is metadata here, not a stream label
        arr, starts = all_lines
        lines = ArrowLines(arr.take(pa.array(starts[sis] + poss)))
        undecidable = None
        if any(s.metadata and any(s.metadata) for s in streams):
            undecidable = np.fromiter(
                (bool(streams[si].metadata[pos]) if streams[si].metadata else False
                 for si, pos in zip(sis.tolist(), poss.tolist(), strict=True)),
                dtype=bool, count=len(sis),
            )
        state = np.full(len(lines), FALSE, dtype=np.int8)
        # Lines the raw text already rules out are never decoded.
        drop = text_drops(lines, filters, frozenset(k for b in bases for k in b))
        if undecidable is not None:
            drop &= ~undecidable
        rest = np.flatnonzero(~drop)
        if len(rest):
            sub = ArrowLines(lines.arrow.take(pa.array(rest))) if len(rest) < len(lines) else lines
            cols = JsonColumns(sub, sis[rest], bases, label_filter_names(filters),
                               None if undecidable is None else undecidable[rest])
            state[rest] = tri_filters(filters, cols)
        return state, lines

    def _interval_ok(self, ts: int) -> bool:
        last = self.last_ts
        if last is None:
            return True
        if self.direction is Direction.FORWARD:
            return ts >= last + self.interval_ns
        return ts <= last - self.interval_ns

    def _append(self, labels: Labels, stream_labels: Labels, entry: StreamEntry) -> None:
        res = self.out.get(labels)
        if res is None:
            res = self.out[labels] = StreamResult(labels, stream_labels, [])
        res.entries.append(entry)
        self.count += 1
        self.last_ts = entry.ts_ns
        self.ctx.stats.post_filter_lines += 1


_CHUNK = 4096  # entries decided column-wise at a time (log queries stop at ``limit``)

_PREFILTER_SAFE = (
    ast.LineFilterExpr,
    ast.JsonParser,
    ast.LogfmtParser,
    ast.RegexpParser,
    ast.PatternParser,
    ast.StringLabelFilter,
    ast.NumericLabelFilter,
    ast.DurationLabelFilter,
    ast.BytesLabelFilter,
    ast.BinaryLabelFilter,
)


def compile_prefilter(stages: Sequence[ast.Stage]) -> Pipeline | None:
    """A cheaper pipeline that drops exactly the entries ``stages`` drop, or None.

    When only parsers and filters run, extracting just the labels the filters
    read decides the same entries; the full pipeline then runs on survivors.
    Worth it only for ``| json``, whose full extraction dominates.
    """
    if not all(isinstance(st, _PREFILTER_SAFE) for st in stages):
        return None
    if not any(isinstance(st, ast.JsonParser) and not st.params for st in stages):
        return None
    names: set[str] = set()
    todo: list[ast.Stage] = [st for st in stages if not isinstance(st, (ast.LineFilterExpr, *_PARSERS))]
    if not todo:
        return None
    while todo:
        f = todo.pop()
        if isinstance(f, ast.BinaryLabelFilter):
            todo.extend((f.left, f.right))
        elif isinstance(f, ast.StringLabelFilter):
            names.add(f.matcher.name)
        elif isinstance(f, (ast.NumericLabelFilter, ast.DurationLabelFilter, ast.BytesLabelFilter,
                            ast.IpLabelFilter)):
            names.add(f.name)
    return Pipeline.compile(stages, required=frozenset(names))


_PARSERS = (ast.JsonParser, ast.LogfmtParser, ast.RegexpParser, ast.PatternParser)


def _merge_order(streams: list[LogStream], direction: Direction) -> tuple[np.ndarray, np.ndarray]:
    """(stream, position) arrays of every entry in direction order; ties by stream labels."""
    # Loki's heap iterator breaks ties by the labels string, shared metadata (detected_level) included.
    keys = [labels_string(tuple(sorted(s.labels + s.stream_md))) if s.stream_md else labels_string(s.labels)
            for s in streams]
    ranks = {i: r for r, i in enumerate(sorted(range(len(streams)), key=lambda i: keys[i]))}
    ts_parts: list[np.ndarray] = []
    sid_parts: list[np.ndarray] = []
    pos_parts: list[np.ndarray] = []
    for i, s in enumerate(streams):
        n = len(s)
        if n == 0:
            continue
        ts_parts.append(np.asarray(s.ts_ns, dtype=np.int64))
        sid_parts.append(np.full(n, i, dtype=np.int64))
        pos_parts.append(np.arange(n, dtype=np.int64))
    if not ts_parts:
        e = np.empty(0, dtype=np.int64)
        return e, e.copy()
    ts = np.concatenate(ts_parts)
    sid = np.concatenate(sid_parts)
    pos = np.concatenate(pos_parts)
    rank = np.asarray([ranks[int(i)] for i in range(len(streams))], dtype=np.int64)[sid]
    key_ts = -ts if direction is Direction.BACKWARD else ts
    order = np.lexsort((rank, key_ts))
    return sid[order], pos[order]


def _concat_lines(streams: list[LogStream]) -> tuple[pa.Array, np.ndarray]:
    """Every stream's lines as one Arrow array, and where each stream starts in it."""
    arrays = [ArrowLines.of(s.lines).arrow for s in streams]
    starts = np.zeros(len(streams), dtype=np.int64)
    np.cumsum([len(a) for a in arrays[:-1]], out=starts[1:])
    return pa.concat_arrays(arrays), starts


def pushed_filters(node: ast.LogSelector) -> list[LineFilter]:
    """The line filters of a log selector the store applies (for callers planning store reads)."""
    return split_pushdown(node.stages)[0]
