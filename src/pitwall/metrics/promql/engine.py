"""The PromQL engine's public interface: ``Engine`` and ``QueryResult``."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from pitwall.core import deadline
from pitwall.core.labels import Labels
from pitwall.metrics.promql.ast import Node, Subquery, parse, walk
from pitwall.metrics.promql.context import EvalContext
from pitwall.metrics.promql.encode import matrix_result_json, values_text
from pitwall.metrics.promql.errors import PromQLEvalError, PromQLParseError, QueryTimeout
from pitwall.metrics.promql.evaluator import Evaluator, finalize
from pitwall.metrics.promql.format import format_float, format_seconds
from pitwall.metrics.promql.values import RangeSamples, Scalar, StepVector, String
from pitwall.metrics.store import Querier

_TYPE_NAMES = {RangeSamples: "range vector", String: "string"}

# Parsed queries are kept (dashboards and rules repeat the same texts); texts
# longer than this are parsed every time, so the cache's memory stays bounded.
PARSE_CACHE_SIZE = 2048
PARSE_CACHE_MAX_TEXT = 4096
# Evaluation small enough for the event loop: more steps, or a subquery, go
# to a worker thread at once; more series or samples abandon the inline try.
INLINE_MAX_STEPS = 256
INLINE_MAX_SERIES = 256
INLINE_MAX_SAMPLES = 50_000


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def _parse_cached(expr: str) -> Node:
    return parse(expr)  # the nodes are frozen, so callers share them; errors are not cached


def _inline_ok(expr: str, span_ms: int, default_step_ms: int) -> bool:
    """No subquery, or one whose inner grid over the query's span has at most ``INLINE_MAX_STEPS`` steps."""
    subs = [n for n in walk(_parse_cached(expr)) if isinstance(n, Subquery)]
    if not subs:
        return True
    if len(subs) > 1:
        return False  # nested or several: their inner grids multiply or add up
    sq = subs[0]
    return (span_ms + sq.range_ms) // (sq.step_ms or default_step_ms) + 1 <= INLINE_MAX_STEPS


@dataclass
class QueryStats:
    """What a query cost, as Prometheus' ``stats`` parameter reports it.

    ``samples`` counts the samples read from storage, each once; Prometheus'
    ``totalQueryableSamples`` counts a sample again at every step whose
    window holds it, so it is larger for range queries over range vectors.
    """

    samples: int
    peak_samples: int
    prepare_s: float  # parsing
    eval_s: float  # evaluation
    result_s: float  # sorting and building the result

    def to_prometheus(self) -> dict[str, Any]:
        """The ``data.stats`` object of Prometheus' query API."""
        total = self.prepare_s + self.eval_s + self.result_s
        return {"timings": {"evalTotalTime": total, "resultSortTime": self.result_s,
                            "queryPreparationTime": self.prepare_s, "innerEvalTime": self.eval_s,
                            "execQueueTime": 0, "execTotalTime": total},
                "samples": {"totalQueryableSamples": self.samples, "peakSamples": self.peak_samples}}


@dataclass
class QueryResult:
    """A query's answer.

    ``vector``/``matrix``: ``series[i]`` has points ``timestamps[i]`` (int64 ms)
    and ``values[i]`` (float64); a vector has one point per series, in the
    engine's output order (which matters after ``sort``/``topk``); a matrix is
    sorted by labels. ``scalar``: one series with empty labels and one point.
    ``string``: ``string_value`` at ``timestamps[0][0]``.
    """

    result_type: str  # "vector" | "matrix" | "scalar" | "string"
    series: list[Labels] = field(default_factory=list)
    timestamps: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    string_value: str = ""
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)
    stats: QueryStats | None = None  # None when the answer came from elsewhere (a remote backend)

    def to_prometheus_data(self) -> dict[str, Any]:
        """The ``data`` object of Prometheus' /api/v1/query(_range) response."""
        return self._data(list)

    def _data(self, pair: Callable[[Iterable[Any]], Sequence[Any]]) -> dict[str, Any]:
        # ``pair`` builds each [time, "value"] point of a matrix: the encoder
        # passes ``tuple``, as a matrix of lists wakes the garbage collector
        # every 700 allocations (more than doubling a 100k-point encode).
        rt = self.result_type
        if rt == "string":
            return {
                "resultType": rt,
                "result": [format_seconds(int(self.timestamps[0][0])), self.string_value],
            }
        if rt == "scalar":
            t, v = int(self.timestamps[0][0]), float(self.values[0][0])
            return {"resultType": rt, "result": [format_seconds(t), format_float(v)]}
        out: list[dict[str, Any]] = []
        fmt, secs = format_float, format_seconds
        if rt == "vector":
            for lb, ts, vals in zip(self.series, self.timestamps, self.values, strict=True):
                out.append({"metric": dict(lb), "value": [secs(int(ts[0])), fmt(float(vals[0]))]})
            return {"resultType": rt, "result": out}
        for lb, ts, vals in zip(self.series, self.timestamps, self.values, strict=True):
            points = list(map(pair, zip(_seconds(ts), _values_text(vals), strict=True)))
            out.append({"metric": dict(lb), "values": points})
        return {"resultType": rt, "result": out}


def _values_text(vals: np.ndarray) -> list[str]:
    """``format_float`` of every value (see ``encode.values_text``)."""
    if not len(vals):
        return []
    return values_text(vals)[:-1].split(",")


def _seconds(ts: np.ndarray) -> list[float | int]:
    """``format_seconds`` of every timestamp (ms), vectorised when all or none are whole seconds."""
    whole = ts % 1000 == 0
    if whole.all():
        out: list[float | int] = (ts // 1000).tolist()
        return out
    if not whole.any():
        return (ts / 1000).tolist()  # type: ignore[no-any-return]
    return [format_seconds(t) for t in ts.tolist()]


def encode_response_body(res: QueryResult, *, stats: bool = False) -> bytes:
    """The JSON body of Prometheus' /api/v1/query(_range) success response for ``res``.

    ``stats`` adds ``data.stats`` (Prometheus' ``stats`` parameter), when the engine measured them.
    """
    if res.result_type == "matrix":
        return _matrix_body(res, stats=stats)
    body: dict[str, Any] = {"status": "success", "data": res._data(tuple)}
    if stats and res.stats is not None:
        body["data"]["stats"] = res.stats.to_prometheus()
    if res.warnings:
        body["warnings"] = res.warnings
    if res.infos:
        body["infos"] = res.infos
    return orjson.dumps(body)


def _matrix_body(res: QueryResult, *, stats: bool) -> bytes:
    """``encode_response_body`` of a matrix: its points as text, never one Python object per point."""
    tail = ""
    if stats and res.stats is not None:
        tail = ',"stats":' + orjson.dumps(res.stats.to_prometheus()).decode()
    tail += "}"
    if res.warnings:
        tail += ',"warnings":' + orjson.dumps(res.warnings).decode()
    if res.infos:
        tail += ',"infos":' + orjson.dumps(res.infos).decode()
    result = matrix_result_json(res.series, res.timestamps, res.values)
    return b'{"status":"success","data":{"resultType":"matrix","result":' + result + (tail + "}").encode()


class Engine:
    """Evaluates PromQL over a Querier with Prometheus 3 semantics."""

    def __init__(
        self,
        *,
        lookback_delta_ms: int = 300_000,
        max_samples: int = 50_000_000,
        timeout_s: float = 120.0,
        default_subquery_step_ms: int = 60_000,
    ) -> None:
        self.lookback_delta_ms = lookback_delta_ms
        self.max_samples = max_samples
        self.timeout_s = timeout_s
        self.default_subquery_step_ms = default_subquery_step_ms

    def _context(self, querier: Querier, start_ms: int, end_ms: int, step_ms: int = 0) -> EvalContext:
        return EvalContext(
            querier=querier,
            lookback_ms=self.lookback_delta_ms,
            max_samples=self.max_samples,
            deadline=time.monotonic() + self.timeout_s,
            default_step_ms=self.default_subquery_step_ms,
            start_ms=start_ms,
            end_ms=end_ms,
            step_ms=step_ms,
            is_range=step_ms > 0,
        )

    def parse(self, expr: str) -> Node:
        """``expr`` as the engine's AST; syntax errors raise PromQLParseError.

        Parsed texts are cached (the tree is immutable and shared).
        """
        if len(expr) > PARSE_CACHE_MAX_TEXT:
            return parse(expr)
        return _parse_cached(expr)

    def may_run_inline(self, expr: str, steps: int, step_ms: int = 0) -> bool:
        """Whether to try ``expr`` on the caller's thread (an event loop) first.

        True for at most ``INLINE_MAX_STEPS`` steps (``step_ms`` apart) and at
        most one subquery, whose inner grid has at most as many steps, and for
        text that does not parse (its error is as quick). Pass such a try
        a ``MetricsBackend.nonblocking_querier`` with the ``INLINE_MAX_*``
        budget: it raises ``WouldBlock`` as soon as the query proves bigger.
        """
        if steps > INLINE_MAX_STEPS or len(expr) > PARSE_CACHE_MAX_TEXT:
            return False
        try:
            return _inline_ok(expr, max(steps - 1, 0) * step_ms, self.default_subquery_step_ms)
        except PromQLParseError:
            return True

    def instant(self, querier: Querier, expr: str, time_ms: int) -> QueryResult:
        """Evaluate ``expr`` at one instant."""
        t0 = time.perf_counter()
        node = self.parse(expr)
        ctx = self._context(querier, time_ms, time_ms)
        ts = np.array([time_ms], dtype=np.int64)
        t1 = time.perf_counter()
        with deadline.scope(ctx.deadline, QueryTimeout):
            value = Evaluator(ctx).eval(node, ts)
        t2 = time.perf_counter()
        result = _instant_result(value, time_ms)
        return _annotated(result, ctx, t0, t1, t2)

    def range(self, querier: Querier, expr: str, start_ms: int, end_ms: int, step_ms: int) -> QueryResult:
        """Evaluate ``expr`` at every step from ``start_ms`` to ``end_ms`` inclusive."""
        if step_ms <= 0:
            raise PromQLEvalError("zero or negative query resolution step widths are not accepted")
        if end_ms < start_ms:
            raise PromQLEvalError("end timestamp must not be before start time")
        t0 = time.perf_counter()
        node = self.parse(expr)
        ctx = self._context(querier, start_ms, end_ms, step_ms)
        ts = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        t1 = time.perf_counter()
        with deadline.scope(ctx.deadline, QueryTimeout):
            value = Evaluator(ctx).eval(node, ts)
        t2 = time.perf_counter()
        if isinstance(value, (RangeSamples, String)):
            raise PromQLEvalError(
                f'invalid expression type "{_TYPE_NAMES[type(value)]}" for range query, '
                "must be Scalar or instant Vector"
            )
        if isinstance(value, Scalar):
            value = StepVector([()], value.values[None, :], np.ones((1, ts.shape[0]), dtype=bool))
        return _annotated(_matrix_result(finalize(value), ts), ctx, t0, t1, t2)


def _annotated(result: QueryResult, ctx: EvalContext, t0: float, t1: float, t2: float) -> QueryResult:
    """``result`` with the context's annotations and the query's cost (``t0``-``t2``: start, eval, end of eval)."""
    result.warnings = list(ctx.warnings)
    result.infos = list(ctx.infos)
    result.stats = QueryStats(ctx.loaded, max(ctx.peak, ctx.loaded), t1 - t0, t2 - t1,
                              time.perf_counter() - t2)
    return result


def _instant_result(value: object, time_ms: int) -> QueryResult:
    if isinstance(value, String):
        return QueryResult("string", timestamps=[np.array([time_ms])], string_value=value.value)
    if isinstance(value, Scalar):
        return QueryResult("scalar", [()], [np.array([time_ms])], [value.values[:1].copy()])
    if isinstance(value, RangeSamples):
        return _range_vector_result(value)
    assert isinstance(value, StepVector)
    vec = finalize(value)
    rows = np.flatnonzero(vec.present[:, 0])
    at = np.array([time_ms], dtype=np.int64)  # every row shares it, so nobody may write it
    at.flags.writeable = False
    col = vec.values[rows, 0]  # a copy: the result owns its values
    labels = vec.labels
    return QueryResult("vector", [labels[i] for i in rows.tolist()], [at] * len(rows),
                       [col[i : i + 1] for i in range(len(rows))])


def _range_vector_result(rs: RangeSamples) -> QueryResult:
    series: list[Labels] = []
    ts: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    lbl = rs.labels
    if rs.drop_name is not None:
        from pitwall.core.labels import without_name

        lbl = [without_name(lb) if d else lb for lb, d in zip(rs.labels, rs.drop_name, strict=True)]
    for i in sorted(range(rs.num_series), key=lambda i: lbl[i]):
        lo, hi = int(rs.lo[i, 0]), int(rs.hi[i, 0])
        if hi > lo:
            series.append(lbl[i])
            ts.append(rs.ts[lo:hi].copy())
            vals.append(rs.values[lo:hi].copy())
    return QueryResult("matrix", series, ts, vals)


# Up to this many series, a matrix result is cut series by series (fewer numpy calls than the flat cut).
_FEW_SERIES = 8


def _matrix_result(vec: StepVector, ts: np.ndarray) -> QueryResult:
    """Series with a point, sorted by labels; their points cut from one flat copy (no per-series masking).

    When every series has a point at the same steps (a selector over live
    data), they share one read-only grid and each owns a row of one copy.
    """
    labels = vec.labels
    if vec.num_series <= _FEW_SERIES:
        return _few_series_matrix(vec, ts)
    order = sorted(range(vec.num_series), key=labels.__getitem__)
    first = vec.present[0]
    if (vec.present == first).all():
        # The same steps for all (a selector's usual answer): one read-only grid, rows of one copy.
        if not first.any():
            return QueryResult("matrix")
        grid = ts[first]
        grid.flags.writeable = False
        rows = vec.values[order] if first.all() else vec.values[order][:, first]
        return QueryResult("matrix", [labels[i] for i in order], [grid] * len(order), list(rows))
    rank = np.array(order, dtype=np.int64)
    present = vec.present[rank]
    keep = present.any(axis=1)
    rank, present = rank[keep], present[keep]
    if not len(rank):
        return QueryResult("matrix")
    counts = present.sum(axis=1)
    flat_vals = vec.values[rank][present]
    flat_ts = ts[np.nonzero(present)[1]]
    ends = np.cumsum(counts).tolist()
    starts = [0, *ends[:-1]]
    # Plain slices: np.split costs ~10 us a piece.
    return QueryResult("matrix", [labels[i] for i in rank.tolist()],
                       [flat_ts[a:b] for a, b in zip(starts, ends, strict=True)],
                       [flat_vals[a:b] for a, b in zip(starts, ends, strict=True)])


def _few_series_matrix(vec: StepVector, ts: np.ndarray) -> QueryResult:
    """``_matrix_result`` of a few series: a series with a point at every step shares one read-only grid."""
    labels, present, values = vec.labels, vec.present, vec.values
    grid = ts.view()
    grid.flags.writeable = False
    out = QueryResult("matrix")
    for i in sorted(range(vec.num_series), key=labels.__getitem__):
        p = present[i]
        if p.all():
            out.timestamps.append(grid)
            out.values.append(values[i].copy())  # the result owns its values
        elif p.any():
            out.timestamps.append(ts[p])
            out.values.append(values[i][p])
        else:
            continue
        out.series.append(labels[i])
    return out
