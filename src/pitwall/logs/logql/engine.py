"""The LogQL engine: parses, fetches through a ``LogQuerier`` and evaluates.

Log queries walk entries newest-first (backward) or oldest-first (forward)
across streams, run the pipeline and stop at ``limit`` entries, as Loki's
``readStreams`` does. Metric queries scan column-wise (``LogQuerier.scan``),
turn entries into samples (per entry only when a pipeline stage needs the
line) and evaluate every step at once with numpy (``metric.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pitwall.core import deadline
from pitwall.core.durations import NS_PER_MS
from pitwall.core.labels import Labels, Matcher
from pitwall.logs.logql import ast
from pitwall.logs.logql.columnar import (
    FALSE,
    K_MISSING,
    K_TEXT,
    K_UNKNOWN,
    TRUE,
    UNKNOWN,
    JsonColumns,
    filter_prefix,
    label_filter_names,
    text_drops,
    tri_filters,
)
from pitwall.logs.logql.errors import LogQLError, LogQLLimitError, LogQLPipelineError, LogQLTimeout
from pitwall.logs.logql.metric import (
    StepMatrix,
    StepScalar,
    Value,
    absent_labels,
    eval_binop,
    eval_label_replace,
    eval_range_agg,
    eval_vector_agg,
)
from pitwall.logs.logql.parser import parse_expr
from pitwall.logs.logql.pipeline import (
    ERR_SAMPLE,
    ERROR_DETAILS_LABEL,
    ERROR_LABEL,
    Pipeline,
    label_filter_predicate,
    split_pushdown,
)
from pitwall.logs.logql.result import (
    LogQLResult,
    QueryStats,
    SeriesResult,
    StreamEntry,
    StreamResult,
    labels_string,
)
from pitwall.logs.logql.units import parse_bytes, parse_duration_ns, parse_go_float
from pitwall.logs.model import Direction, LineFilter, LogBatch, LogStream
from pitwall.logs.store import LogQuerier

__all__ = ["LogQLEngine"]

DEFAULT_MAX_QUERY_LENGTH_NS = 721 * 3600 * 1_000_000_000  # Loki's max_query_length default
INSTANT_LOOKBACK_NS = 30 * 1_000_000_000  # Loki's querier.engine.max-lookback-period
MAX_POINTS = 11_000  # Loki/Prometheus resolution limit per series
# Sum over these range aggregations commutes with merging series, so Loki
# pushes the outer ``sum by`` grouping into sample extraction.
_INJECTABLE = frozenset({"bytes_over_time", "bytes_rate", "sum_over_time", "rate", "count_over_time"})
_BYTES_OPS = frozenset({"bytes_over_time", "bytes_rate"})
_MAX_CELLS = 50_000_000  # series x steps held at once before a query is refused


def _format_model_duration(ns: int) -> str:
    """Prometheus ``model.Duration`` text (``30d1h``), as Loki's limit messages print it."""
    ms = ns // NS_PER_MS
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (
        ("y", 365 * 86400000),
        ("w", 7 * 86400000),
        ("d", 86400000),
        ("h", 3600000),
        ("m", 60000),
        ("s", 1000),
        ("ms", 1),
    ):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)


@dataclass
class _Ctx:
    querier: LogQuerier
    start_ns: int
    end_ns: int
    step_ns: int
    steps: np.ndarray
    deadline: float
    stats: QueryStats = field(default_factory=QueryStats)

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise LogQLTimeout()


class LogQLEngine:
    """Evaluates LogQL over any ``LogQuerier``; stateless apart from its limits."""

    def __init__(
        self,
        *,
        max_entries_limit: int = 5000,
        max_series: int = 500,
        timeout_s: float = 120.0,
        max_query_length_ns: int = DEFAULT_MAX_QUERY_LENGTH_NS,
    ) -> None:
        self.max_entries_limit = max_entries_limit
        self.max_series = max_series
        self.timeout_s = timeout_s
        self.max_query_length_ns = max_query_length_ns

    # ------------------------------------------------------------ public API

    def query_range(
        self,
        querier: LogQuerier,
        expr: str,
        start_ns: int,
        end_ns: int,
        step_ns: int,
        *,
        limit: int = 100,
        direction: Direction = Direction.BACKWARD,
        interval_ns: int | None = None,
    ) -> LogQLResult:
        """Loki's ``/query_range``: streams for log expressions, a matrix for metric ones."""
        node = parse_expr(expr)
        if end_ns < start_ns:
            raise LogQLError("end timestamp must not be before or equal to start time")
        self._check_length(start_ns, end_ns)
        if isinstance(node, ast.LogSelector):
            self._check_limit(limit)
            return self._run_logs(querier, node, start_ns, end_ns, limit, direction, interval_ns or 0)
        if step_ns <= 0:
            raise LogQLError(
                "zero or negative query resolution step widths are not accepted. Try a positive integer"
            )
        if (end_ns - start_ns) // step_ns + 1 > MAX_POINTS:
            raise LogQLError(
                "exceeded maximum resolution of 11,000 points per timeseries. "
                "Try decreasing the query resolution (?step=XX)"
            )
        return self._run_metric(querier, node, start_ns, end_ns, step_ns, instant=False)

    def query_instant(
        self,
        querier: LogQuerier,
        expr: str,
        time_ns: int,
        *,
        limit: int = 100,
        direction: Direction = Direction.BACKWARD,
    ) -> LogQLResult:
        """Loki's ``/query``: a vector or scalar; log expressions return streams (30s lookback)."""
        node = parse_expr(expr)
        if isinstance(node, ast.LogSelector):
            self._check_limit(limit)
            return self._run_logs(querier, node, time_ns - INSTANT_LOOKBACK_NS, time_ns, limit, direction, 0)
        return self._run_metric(querier, node, time_ns, time_ns, 0, instant=True)

    # ------------------------------------------------------------ limits

    def _check_limit(self, limit: int) -> None:
        if limit < 0:
            raise LogQLError("limit must be a positive value")
        if self.max_entries_limit and limit > self.max_entries_limit:
            raise LogQLLimitError(
                "max entries limit per query exceeded, limit > max_entries_limit_per_query "
                f"({limit} > {self.max_entries_limit})"
            )

    def _check_length(self, start_ns: int, end_ns: int) -> None:
        if self.max_query_length_ns and end_ns - start_ns > self.max_query_length_ns:
            raise LogQLLimitError(
                "the query time range exceeds the limit (query length: "
                f"{_format_model_duration(end_ns - start_ns)}, limit: {_format_model_duration(self.max_query_length_ns)})"
            )

    def _series_limit_error(self) -> LogQLLimitError:
        return LogQLLimitError(f"maximum of series ({self.max_series}) reached for a single query")

    def _ctx(self, querier: LogQuerier, start: int, end: int, step: int) -> _Ctx:
        steps = (
            np.array([start], dtype=np.int64)
            if step == 0
            else np.arange(start, end + 1, step, dtype=np.int64)
        )
        return _Ctx(querier, start, end, step, steps, time.monotonic() + self.timeout_s)

    # ------------------------------------------------------------ metric queries

    def _run_metric(
        self, querier: LogQuerier, node: ast.Expr, start: int, end: int, step: int, *, instant: bool
    ) -> LogQLResult:
        t0 = time.perf_counter()
        ctx = self._ctx(querier, start, end, step)
        with deadline.scope(ctx.deadline, LogQLTimeout):
            value = self._eval(node, ctx)
            result = self._metric_result(node, value, ctx, instant)
        ctx.stats.exec_time_s = time.perf_counter() - t0
        result.stats = ctx.stats
        return result

    def _metric_result(self, node: ast.Expr, value: Value, ctx: _Ctx, instant: bool) -> LogQLResult:
        steps_ms = (ctx.steps // NS_PER_MS).tolist()
        if isinstance(value, StepScalar):
            if instant:
                return LogQLResult("scalar", scalar=(steps_ms[0], float(value.values[0])))
            pts = list(zip(steps_ms, value.values.tolist(), strict=True))
            return LogQLResult("matrix", series=[SeriesResult((), pts)])
        value = value.compact()
        if len(value.labels) > self.max_series:
            raise self._series_limit_error()
        if instant:
            rows = [
                SeriesResult(lbl, [(steps_ms[0], float(value.values[i, 0]))])
                for i, lbl in enumerate(value.labels)
            ]
            if isinstance(node, ast.VectorAgg) and node.op in ("sort", "sort_desc"):
                rows.sort(key=lambda r: r.points[0][1], reverse=node.op == "sort_desc")
            else:
                rows.sort(key=lambda r: r.labels)
            return LogQLResult("vector", series=rows)
        out: list[SeriesResult] = []
        for i, lbl in enumerate(value.labels):
            idx = np.flatnonzero(value.present[i])
            vals = value.values[i, idx].tolist()
            out.append(SeriesResult(lbl, [(steps_ms[j], v) for j, v in zip(idx.tolist(), vals, strict=True)]))
        out.sort(key=lambda r: r.labels)
        return LogQLResult("matrix", series=out)

    def _eval(self, node: ast.Expr, ctx: _Ctx) -> Value:
        k = ctx.steps.shape[0]
        if isinstance(node, ast.Literal):
            return StepScalar(np.full(k, node.value))
        if isinstance(node, ast.VectorExpr):
            return StepMatrix([()], np.full((1, k), node.value), np.ones((1, k), dtype=bool))
        if isinstance(node, ast.RangeAgg):
            return self._eval_range(node, node.grouping, ctx)
        if isinstance(node, ast.VectorAgg):
            inner = node.expr
            value: Value
            if (
                node.op == "sum"
                and isinstance(inner, ast.RangeAgg)
                and inner.grouping is None
                and inner.op in _INJECTABLE
            ):
                value = self._eval_range(inner, node.grouping or ast.Grouping(()), ctx)
            else:
                value = self._eval(inner, ctx)
            if not isinstance(value, StepMatrix):
                raise LogQLError(f"unexpected scalar argument to {node.op}")
            return eval_vector_agg(node.op, value, node.grouping, node.param)
        if isinstance(node, ast.BinOp):
            return eval_binop(node, self._eval(node.lhs, ctx), self._eval(node.rhs, ctx))
        if isinstance(node, ast.LabelReplace):
            inner_value = self._eval(node.expr, ctx)
            if not isinstance(inner_value, StepMatrix):
                raise LogQLError("label_replace expects a vector")
            return eval_label_replace(node, inner_value)
        raise LogQLError(f"unexpected expression {type(node).__name__} in a metric query")

    def _eval_range(self, node: ast.RangeAgg, grouping: ast.Grouping | None, ctx: _Ctx) -> StepMatrix:
        rng = node.range
        op = node.op
        if op == "absent_over_time":
            series = _SampleExtractor(rng, "count_over_time", None, ctx).series()
            m = eval_range_agg("count_over_time", series, ctx.steps, rng.range_ns, rng.offset_ns, None)
            absent = np.ones(ctx.steps.shape[0], dtype=bool)
            if m.labels:
                absent &= ~m.present.any(axis=0)
            if not absent.any():
                return StepMatrix.empty(ctx.steps.shape[0])
            lbl = absent_labels(rng.selector, node.grouping)
            return StepMatrix([lbl], np.where(absent, 1.0, 0.0)[None, :], absent[None, :])
        series = _SampleExtractor(rng, op, grouping, ctx).series()
        if len(series) * ctx.steps.shape[0] > _MAX_CELLS:
            raise self._series_limit_error()
        ctx.check_deadline()
        return eval_range_agg(op, series, ctx.steps, rng.range_ns, rng.offset_ns, node.param)

    # ------------------------------------------------------------ log queries

    def _run_logs(
        self,
        querier: LogQuerier,
        node: ast.LogSelector,
        start: int,
        end: int,
        limit: int,
        direction: Direction,
        interval_ns: int,
    ) -> LogQLResult:
        t0 = time.perf_counter()
        ctx = self._ctx(querier, start, end, 0)
        with deadline.scope(ctx.deadline, LogQLTimeout):
            streams = _StreamReader(node, ctx, limit, direction, interval_ns).read()
        stats = ctx.stats
        stats.entries_returned = sum(len(s.entries) for s in streams)
        stats.exec_time_s = time.perf_counter() - t0
        return LogQLResult("streams", streams=streams, stats=stats, backward=direction is Direction.BACKWARD)


# ---------------------------------------------------------------- sample extraction


def _unwrap_converter(conversion: str) -> Callable[[str], float]:
    if conversion in ("duration", "duration_seconds"):
        return lambda s: parse_duration_ns(s, go_only=True) / 1e9
    if conversion == "bytes":
        return lambda s: float(parse_bytes(s))
    return parse_go_float


def _required_labels(
    stages: Sequence[ast.Stage], grouping: ast.Grouping | None, unwrap: ast.Unwrap | None
) -> frozenset[str] | None:
    """Labels a metric query can need from parsers (Loki's parser hints); None means all."""
    if grouping is None or grouping.without:
        return None
    names: set[str] = set(grouping.labels)
    filters: list[ast.LabelFilter] = []
    for st in stages:
        if isinstance(st, (ast.LineFormat, ast.LabelFormat, ast.DropLabels, ast.KeepLabels)):
            return None
        if isinstance(
            st,
            (
                ast.StringLabelFilter,
                ast.NumericLabelFilter,
                ast.DurationLabelFilter,
                ast.BytesLabelFilter,
                ast.BinaryLabelFilter,
            ),
        ):
            filters.append(st)
    if unwrap is not None:
        names.add(unwrap.label)
        filters.extend(unwrap.post_filters)
    while filters:
        f = filters.pop()
        if isinstance(f, ast.BinaryLabelFilter):
            filters.extend((f.left, f.right))
        elif isinstance(f, ast.StringLabelFilter):
            names.add(f.matcher.name)
        else:
            names.add(f.name)
    return frozenset(names)


class _SampleExtractor:
    """Turns a log range into per-series sorted samples ``(labels, ts_ns, values)``."""

    def __init__(self, rng: ast.LogRange, op: str, grouping: ast.Grouping | None, ctx: _Ctx) -> None:
        self.rng = rng
        self.op = op
        self.grouping = grouping
        self.ctx = ctx
        self.pushed, self.rest = split_pushdown(rng.selector.stages)
        hints = _required_labels(self.rest, grouping, rng.unwrap)
        self.pipeline = Pipeline.compile(self.rest, required=hints)
        unwrap = rng.unwrap
        self.unwrap_label = unwrap.label if unwrap else None
        self.convert = _unwrap_converter(unwrap.conversion) if unwrap else None
        self.post = [label_filter_predicate(f) for f in unwrap.post_filters] if unwrap else []
        self.key = self._key_fn()
        self.col_filters = self._columnar_plan(hints)

    def _key_fn(self) -> Callable[[dict[str, str]], Labels]:
        """Series labels after extraction: grouped, minus the unwrapped label (Loki's GroupedLabels)."""
        g = self.grouping
        if g is not None and not g.without:
            names = sorted(set(g.labels))
            return lambda d: tuple([(n, d[n]) for n in names if n in d])
        drop = set(g.labels) if g is not None else set()
        if self.unwrap_label is not None:
            drop.add(self.unwrap_label)
        if not drop:
            return lambda d: tuple(sorted(d.items()))
        frozen = frozenset(drop)
        return lambda d: tuple(sorted((k, v) for k, v in d.items() if k not in frozen))

    def series(self) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
        ctx = self.ctx
        rng = self.rng
        lo = ctx.start_ns - rng.range_ns - rng.offset_ns
        hi = ctx.end_ns - rng.offset_ns + 1  # windows are right-closed; the store's end is exclusive
        per_entry = bool(self.rest) or self.unwrap_label is not None
        batch = ctx.querier.scan(
            list(rng.selector.matchers), lo, hi, filters=self.pushed, with_lines=per_entry, with_metadata=True
        )
        ctx.stats.lines_processed += len(batch)
        ctx.stats.bytes_processed += int(batch.line_bytes.sum()) if len(batch) else 0
        has_md = batch.metadata is not None and any(batch.metadata)
        if not per_entry and not has_md:
            ctx.stats.post_filter_lines += len(batch)
            return self._columnar(batch)
        if batch.lines is None:
            batch = ctx.querier.scan(
                list(rng.selector.matchers), lo, hi, filters=self.pushed, with_lines=True, with_metadata=True
            )
        if self.col_filters is not None and len(batch):
            return self._columnar_json(batch, self.col_filters)
        return self._per_entry(batch)

    def _columnar_plan(self, hints: frozenset[str] | None) -> list[ast.LabelFilter] | None:
        """Label filters of a ``| json | <filters>`` pipeline the columnar path can run, or None."""
        if hints is None or not self.rest:
            return None
        filters = filter_prefix(self.rest)
        if filters is None or len(filters) != len(self.rest) - 1:
            return None
        unwrap = self.rng.unwrap
        if unwrap is not None and (unwrap.conversion or unwrap.post_filters):
            return None
        return filters

    def _columnar_json(
        self, batch: LogBatch, filters: list[ast.LabelFilter]
    ) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
        """``| json | filters`` column-wise; entries it cannot decide exactly go through ``_per_entry``."""
        assert batch.lines is not None
        g = self.grouping
        assert g is not None and not g.without
        names = sorted(set(g.labels))
        bases = [dict(lbl) for lbl in batch.streams]
        undecidable = None
        if batch.metadata is not None:
            undecidable = np.fromiter((bool(m) for m in batch.metadata), dtype=bool, count=len(batch))
        needed = set(names) | label_filter_names(filters)
        if self.unwrap_label is not None:
            needed.add(self.unwrap_label)
        cols = JsonColumns(batch.lines, batch.stream_idx, bases, needed, undecidable)
        state = tri_filters(filters, cols)
        values = np.ones(len(batch), dtype=np.float64)
        if self.unwrap_label is not None:
            col = cols.column(self.unwrap_label)
            state[(col.kind == K_MISSING) & (state == TRUE)] = FALSE  # no label: no sample
            state[(col.kind == K_UNKNOWN) & (state == TRUE)] = UNKNOWN
            values = col.num.copy()
            for i in np.flatnonzero((col.kind == K_TEXT) & (state == TRUE)).tolist():
                try:
                    values[i] = parse_go_float(cols.text(self.unwrap_label, i) or "")
                except ValueError:
                    state[i] = UNKNOWN  # SampleExtractionErr: the pipeline reports it
        elif self.op in _BYTES_OPS:
            values = batch.line_bytes.astype(np.float64)
        combined = np.zeros(len(batch), dtype=np.int64)
        vocabs: list[list[str]] = []
        radix = 1
        for name in names:
            codes, vocab, unknown = cols.codes(name)
            if radix * (len(vocab) + 1) >= 2**62:
                return self._per_entry(batch)
            state[unknown & (state == TRUE)] = UNKNOWN
            combined += (codes + 1) * radix
            radix *= len(vocab) + 1
            vocabs.append(vocab)
        keep = np.flatnonzero(state == TRUE)
        uniq, inv = np.unique(combined[keep], return_inverse=True)
        keys: list[Labels] = []
        for code in uniq.tolist():
            pairs = []
            for name, vocab in zip(names, vocabs, strict=True):
                c = code % (len(vocab) + 1)
                code //= len(vocab) + 1
                if c:
                    pairs.append((name, vocab[c - 1]))
            keys.append(tuple(pairs))
        self.ctx.stats.post_filter_lines += len(keep)
        ids = inv.astype(np.int64).reshape(-1)
        idx = keep
        vals = values[keep]
        if (state == UNKNOWN).any():
            e_keys, e_ids, e_idx, e_vals = self._per_entry_rows(batch, np.flatnonzero(state == UNKNOWN))
            pos = {k: j for j, k in enumerate(keys)}
            remap = np.asarray([pos.setdefault(k, len(pos)) for k in e_keys], dtype=np.int64)
            keys = list(pos)
            if len(e_ids):
                ids = np.concatenate([ids, remap[e_ids]])
                idx = np.concatenate([idx, e_idx])
                vals = np.concatenate([vals, e_vals])
        return _series_from_rows(keys, ids, idx, vals, batch.ts_ns)

    def _columnar(self, batch: LogBatch) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
        """No stage needs the line: samples straight from the batch columns."""
        n_streams = len(batch.streams)
        if len(batch) == 0:
            return []
        bounds = np.searchsorted(batch.stream_idx, np.arange(n_streams + 1), side="left")
        values = batch.line_bytes.astype(np.float64) if self.op in _BYTES_OPS else None
        groups: dict[Labels, list[int]] = {}
        for s, lbl in enumerate(batch.streams):
            if bounds[s + 1] > bounds[s]:
                groups.setdefault(self.key(dict(lbl)), []).append(s)
        out: list[tuple[Labels, np.ndarray, np.ndarray]] = []
        for key, members in groups.items():
            ts = np.concatenate([batch.ts_ns[bounds[s] : bounds[s + 1]] for s in members])
            vals = (
                np.concatenate([values[bounds[s] : bounds[s + 1]] for s in members])
                if values is not None
                else np.ones(ts.shape[0])
            )
            if len(members) > 1:
                order = np.argsort(ts, kind="stable")
                ts, vals = ts[order], vals[order]
            out.append((key, ts, vals))
        return out

    def _per_entry(self, batch: LogBatch) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
        """Run the pipeline per entry; samples keyed by their (grouped) labels."""
        keys, ids, idx, values = self._per_entry_rows(batch, None)
        return _series_from_rows(keys, ids, idx, values, batch.ts_ns)

    def _per_entry_rows(
        self, batch: LogBatch, subset: np.ndarray | None
    ) -> tuple[list[Labels], np.ndarray, np.ndarray, np.ndarray]:
        """The pipeline per entry (of ``subset``, default all): series keys, and per sample its key id,
        entry index and value."""
        ctx = self.ctx
        assert batch.lines is not None
        bases = [dict(lbl) for lbl in batch.streams]
        base_names = [frozenset(b) for b in bases]
        lines = batch.lines
        mds = batch.metadata
        sidx = batch.stream_idx.tolist()
        tss = batch.ts_ns.tolist()
        lbytes = batch.line_bytes.tolist()
        process = self.pipeline.process
        key = self.key
        unwrap = self.unwrap_label
        convert = self.convert
        post = self.post
        bytes_op = self.op in _BYTES_OPS
        ids: dict[Labels, int] = {}
        out_id: list[int] = []
        out_ts: list[int] = []
        out_v: list[float] = []
        todo = range(len(lines)) if subset is None else subset.tolist()
        for n_done, i in enumerate(todo):
            if n_done & 0x3FFF == 0:
                ctx.check_deadline()
            s = sidx[i]
            labels = bases[s].copy()
            if mds is not None and mds[i]:
                labels.update(mds[i])
            line = lines[i]
            ts = tss[i]
            new_line = process(ts, line, labels, base_names[s])
            if new_line is None:
                continue
            v = 1.0
            if unwrap is not None:
                raw = labels.get(unwrap)
                if raw is None:
                    continue
                assert convert is not None
                try:
                    v = convert(raw)
                except ValueError as e:
                    v = 0.0
                    labels[ERROR_LABEL] = ERR_SAMPLE
                    labels[ERROR_DETAILS_LABEL] = str(e)
                if post and not all(p(labels) for p in post):
                    continue
            elif bytes_op:
                v = float(lbytes[i]) if new_line is line else float(len(new_line.encode()))
            if ERROR_LABEL in labels:
                full = tuple(sorted(labels.items()))
                raise LogQLPipelineError(labels[ERROR_LABEL], labels_string(full))
            k = key(labels)
            sid = ids.get(k)
            if sid is None:
                sid = ids[k] = len(ids)
            out_id.append(sid)
            out_ts.append(i)
            out_v.append(v)
        ctx.stats.post_filter_lines += len(out_ts)
        return (list(ids), np.asarray(out_id, dtype=np.int64), np.asarray(out_ts, dtype=np.int64),
                np.asarray(out_v, dtype=np.float64))


def _series_from_rows(
    keys: list[Labels], ids: np.ndarray, idx: np.ndarray, values: np.ndarray, ts_ns: np.ndarray
) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
    """Samples (key id, entry index, value) as per-series arrays sorted by time, ties in entry order."""
    if not len(ids):
        return []
    ts = ts_ns[idx]
    order = np.lexsort((idx, ts, ids))
    ids, ts, values = ids[order], ts[order], values[order]
    bounds = np.searchsorted(ids, np.arange(len(keys) + 1), side="left")
    return [
        (keys[j], ts[bounds[j] : bounds[j + 1]], values[bounds[j] : bounds[j + 1]])
        for j in range(len(keys))
        if bounds[j + 1] > bounds[j]
    ]


# ---------------------------------------------------------------- log streams


class _StreamReader:
    """Reads up to ``limit`` entries in direction order, through the pipeline (Loki's readStreams)."""

    def __init__(
        self, node: ast.LogSelector, ctx: _Ctx, limit: int, direction: Direction, interval_ns: int
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
        self.prefilter = _prefilter(rest) if self.batch_filters is None else None
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
            self.ctx.stats.bytes_processed += sum(map(len, s.lines))  # characters: exact for ASCII
        return streams

    def _read_chunked(self) -> None:
        """Walk the range in growing windows from the newest (backward) or oldest (forward) end."""
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
            width *= 2

    def _consume(self, streams: list[LogStream]) -> None:
        if not streams:
            return
        order_s, order_p = _merge_order(streams, self.direction)
        ctx = self.ctx
        process = self.pipeline.process
        bases = [dict(s.labels) for s in streams]
        base_names = [frozenset(b) for b in bases]
        static = self.pipeline.empty
        prefilter = self.prefilter
        chunk = _CHUNK if self.batch_filters is not None else len(order_s)
        lo = 0
        while lo < len(order_s):
            sis = order_s[lo : lo + chunk]
            poss = order_p[lo : lo + chunk]
            lo += chunk
            chunk *= 4  # small first (the limit may come early), then amortize per-batch costs
            state = self._batch_state(streams, bases, sis, poss)
            if state is not None:
                keep = np.flatnonzero(state != FALSE)
                sure = (state[keep] == TRUE).tolist()
                sis, poss = sis[keep], poss[keep]
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
                md = s.metadata[pos] if s.metadata else ()
                line: str | None = s.lines[pos]
                if static and not md:
                    labels_t = s.labels
                    parsed: tuple[tuple[str, str], ...] = ()
                else:
                    assert line is not None
                    if prefilter is not None and not ok:
                        scratch = bases[si].copy()
                        if md:
                            scratch.update(md)
                        if prefilter.process(ts, line, scratch, base_names[si]) is None:
                            continue
                    labels = bases[si].copy()
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
        self, streams: list[LogStream], bases: list[dict[str, str]], sis: np.ndarray, poss: np.ndarray
    ) -> np.ndarray | None:
        """FALSE/TRUE/UNKNOWN per entry for the leading ``| json | <filters>`` stages, or None."""
        filters = self.batch_filters
        if filters is None or not len(sis):
            return None
        pairs = zip(sis.tolist(), poss.tolist(), strict=True)
        lines = [streams[si].lines[pos] for si, pos in pairs]
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
            sub = [lines[i] for i in rest.tolist()] if len(rest) < len(lines) else lines
            cols = JsonColumns(sub, sis[rest], bases, label_filter_names(filters),
                               None if undecidable is None else undecidable[rest])
            state[rest] = tri_filters(filters, cols)
        return state

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


def _prefilter(stages: Sequence[ast.Stage]) -> Pipeline | None:
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
        elif isinstance(f, (ast.NumericLabelFilter, ast.DurationLabelFilter, ast.BytesLabelFilter)):
            names.add(f.name)
    return Pipeline.compile(stages, required=frozenset(names))


_PARSERS = (ast.JsonParser, ast.LogfmtParser, ast.RegexpParser, ast.PatternParser)


def _merge_order(streams: list[LogStream], direction: Direction) -> tuple[np.ndarray, np.ndarray]:
    """(stream, position) arrays of every entry in direction order; ties by stream labels."""
    ranks = {
        i: r
        for r, i in enumerate(sorted(range(len(streams)), key=lambda i: labels_string(streams[i].labels)))
    }
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


def pushed_filters(node: ast.LogSelector) -> list[LineFilter]:
    """The line filters of a log selector the store applies (for callers planning store reads)."""
    return split_pushdown(node.stages)[0]
