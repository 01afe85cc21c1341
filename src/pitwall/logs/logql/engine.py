"""The LogQL engine: parses, checks limits, fetches through a ``LogQuerier`` and evaluates.

Contract: ``LogQLEngine.query_range``/``query_instant`` answer Loki's
``/query_range`` and ``/query``. Log queries read streams (``streams.py``:
direction order, pipeline, ``limit``). Metric queries turn entries into
samples (``extract.py``) and evaluate every step at once with numpy
(``metric.py``); ``sum`` over a countable range aggregation pushes its
grouping into extraction, as Loki does. Limits (entries, series, query
length, resolution, time) raise Loki's errors.
"""

from __future__ import annotations

import time

import numpy as np

from pitwall.core import deadline
from pitwall.core.durations import NS_PER_MS
from pitwall.logs.logql import ast
from pitwall.logs.logql.context import QueryContext
from pitwall.logs.logql.errors import LogQLError, LogQLLimitError, LogQLTimeout
from pitwall.logs.logql.extract import SampleExtractor
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
from pitwall.logs.logql.result import (
    LogQLResult,
    SeriesResult,
)
from pitwall.logs.logql.streams import StreamReader
from pitwall.logs.model import Direction
from pitwall.logs.store import LogQuerier

__all__ = ["LogQLEngine"]

DEFAULT_MAX_QUERY_LENGTH_NS = 721 * 3600 * 1_000_000_000  # Loki's max_query_length default
INSTANT_LOOKBACK_NS = 30 * 1_000_000_000  # Loki's querier.engine.max-lookback-period
MAX_POINTS = 11_000  # Loki/Prometheus resolution limit per series
# Sum over these range aggregations commutes with merging series, so Loki
# pushes the outer ``sum by`` grouping into sample extraction.
_INJECTABLE = frozenset({"bytes_over_time", "bytes_rate", "sum_over_time", "rate", "count_over_time"})
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
        align_step: bool = False,
    ) -> LogQLResult:
        """Loki's ``/query_range``: streams for log expressions, a matrix for metric ones.

        ``align_step``: round a metric query's start down and end up to multiples of the step,
        as Loki's query frontend does before splitting (``metricQuerySplitter.alignStartEnd``).
        """
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
        if align_step:
            start_ns -= start_ns % step_ns
            end_ns += -end_ns % step_ns
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

    def _ctx(self, querier: LogQuerier, start: int, end: int, step: int) -> QueryContext:
        steps = (
            np.array([start], dtype=np.int64)
            if step == 0
            else np.arange(start, end + 1, step, dtype=np.int64)
        )
        return QueryContext(querier, start, end, step, steps, time.monotonic() + self.timeout_s)

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

    def _metric_result(self, node: ast.Expr, value: Value, ctx: QueryContext, instant: bool) -> LogQLResult:
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

    def _eval(self, node: ast.Expr, ctx: QueryContext) -> Value:
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

    def _eval_range(self, node: ast.RangeAgg, grouping: ast.Grouping | None, ctx: QueryContext) -> StepMatrix:
        rng = node.range
        op = node.op
        if op == "absent_over_time":
            series = SampleExtractor(rng, "count_over_time", None, ctx).series()
            m = eval_range_agg("count_over_time", series, ctx.steps, rng.range_ns, rng.offset_ns, None)
            absent = np.ones(ctx.steps.shape[0], dtype=bool)
            if m.labels:
                absent &= ~m.present.any(axis=0)
            if not absent.any():
                return StepMatrix.empty(ctx.steps.shape[0])
            lbl = absent_labels(rng.selector, node.grouping)
            return StepMatrix([lbl], np.where(absent, 1.0, 0.0)[None, :], absent[None, :])
        series = SampleExtractor(rng, op, grouping, ctx).series()
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
            streams = StreamReader(node, ctx, limit, direction, interval_ns).read()
        stats = ctx.stats
        stats.entries_returned = sum(len(s.entries) for s in streams)
        stats.exec_time_s = time.perf_counter() - t0
        return LogQLResult("streams", streams=streams, stats=stats, backward=direction is Direction.BACKWARD)
