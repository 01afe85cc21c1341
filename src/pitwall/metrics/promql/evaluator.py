"""The PromQL tree walker: every node is evaluated for all steps at once."""

from __future__ import annotations

import numpy as np

from pitwall.core.labels import without_name
from pitwall.metrics.promql import aggregations as agg
from pitwall.metrics.promql import binops, functions
from pitwall.metrics.promql.ast import (
    Aggregate,
    At,
    Binary,
    Call,
    MatrixSel,
    Node,
    NumberLit,
    Paren,
    Selector,
    StringLit,
    Subquery,
    Unary,
)
from pitwall.metrics.promql.context import EvalContext
from pitwall.metrics.promql.errors import PromQLEvalError
from pitwall.metrics.promql.selectors import fetch, instant_from_flat, range_from_flat, step_vector_to_flat
from pitwall.metrics.promql.values import RangeSamples, Scalar, StepVector, String, Value

SAME_LABELSET = "vector cannot contain metrics with the same labelset"
# Range functions whose result keeps the metric name (all others drop it).
_KEEP_NAME_RANGE = frozenset(["last_over_time", "first_over_time"])
_HISTOGRAM_NATIVE_ONLY = frozenset(
    ["histogram_count", "histogram_sum", "histogram_avg", "histogram_stddev", "histogram_stdvar"]
)


def empty_vector(t: int) -> StepVector:
    return StepVector([], np.zeros((0, t)), np.zeros((0, t), dtype=bool))


def dedupe(vec: StepVector, message: str = SAME_LABELSET) -> StepVector:
    """Merge rows with equal label sets; points of two rows at one step are an error."""
    if len(dict.fromkeys(vec.labels)) == vec.num_series:
        return vec  # the usual case, found without a Python loop
    index: dict[tuple[tuple[str, str], ...], int] = {}
    rows = np.empty(vec.num_series, dtype=np.int64)
    for i, lb in enumerate(vec.labels):
        j = index.get(lb)
        if j is None:
            j = index[lb] = len(index)
        rows[i] = j
    n = len(index)
    t = vec.present.shape[1]
    cnt = np.zeros((n, t), dtype=np.int64)
    np.add.at(cnt, rows, vec.present.astype(np.int64))
    if (cnt > 1).any():
        raise PromQLEvalError(message)
    values = np.zeros((n, t))
    present = np.zeros((n, t), dtype=bool)
    r, c = np.nonzero(vec.present)
    values[rows[r], c] = vec.values[r, c]
    present[rows[r], c] = True
    drop = None
    if vec.drop_name is not None:
        drop = np.zeros(n, dtype=bool)
        np.logical_or.at(drop, rows, vec.drop_name)
    return StepVector(list(index), values, present, drop)


def finalize(vec: StepVector) -> StepVector:
    """Apply delayed ``__name__`` removal, then reject colliding series."""
    if vec.drop_name is not None and vec.drop_name.any():
        labels = [_without_name(lb) if d else lb for lb, d in zip(vec.labels, vec.drop_name, strict=True)]
        vec = StepVector(labels, vec.values, vec.present, None)
    return dedupe(vec)


def _without_name(lb: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    # Label sets are sorted by name, so ``__name__`` is usually the first pair.
    return lb[1:] if lb and lb[0][0] == "__name__" else without_name(lb)


def fill_missing(node: Binary, lhs: StepVector, rhs: StepVector) -> tuple[StepVector, StepVector]:
    """Apply ``fill``/``fill_left``/``fill_right``: add the missing side's series.

    Where one side has a match group at a step and the other has none, a
    series carrying only the group's matching labels, valued at the fill
    value, is added to the other side, so ordinary matching pairs it up. With
    ``group_right`` Prometheus applies the two fill values the other way
    round (its one-to-many evaluation swaps the operands).
    """
    fill_l, fill_r = node.fill_lhs, node.fill_rhs
    if node.card == "one-to-many":
        fill_l, fill_r = fill_r, fill_l
    index: dict[tuple[tuple[str, str], ...], int] = {}

    def ids(vec: StepVector) -> np.ndarray:
        out = np.empty(vec.num_series, dtype=np.int64)
        for i, lb in enumerate(vec.labels):
            out[i] = index.setdefault(binops.signature(lb, node.on, node.matching), len(index))
        return out

    lsig, rsig = ids(lhs), ids(rhs)
    sigs = list(index)
    t = lhs.present.shape[1]

    def presence(sig: np.ndarray, vec: StepVector) -> np.ndarray:
        p = np.zeros((len(sigs), t), dtype=bool)
        if vec.num_series:
            np.logical_or.at(p, sig, vec.present)
        return p

    lp, rp = presence(lsig, lhs), presence(rsig, rhs)

    def add(vec: StepVector, need: np.ndarray, value: float) -> StepVector:
        rows = np.flatnonzero(need.any(axis=1))
        if not rows.shape[0]:
            return vec
        drop = vec.drop_name if vec.drop_name is not None else np.zeros(vec.num_series, dtype=bool)
        return StepVector(
            vec.labels + [sigs[int(g)] for g in rows],
            np.concatenate([vec.values, np.full((rows.shape[0], t), value)]),
            np.concatenate([vec.present, need[rows]]),
            np.concatenate([drop, np.zeros(rows.shape[0], dtype=bool)]),
        )

    new_lhs = add(lhs, rp & ~lp, fill_l) if fill_l is not None else lhs
    new_rhs = add(rhs, lp & ~rp, fill_r) if fill_r is not None else rhs
    return new_lhs, new_rhs


class Evaluator:
    """Evaluates parsed nodes over a vector of step times (int64 ms)."""

    def __init__(self, ctx: EvalContext) -> None:
        self.ctx = ctx

    # -- dispatch -------------------------------------------------------

    def eval(self, node: Node, ts: np.ndarray) -> Value:
        self.ctx.check_timeout()
        out = self._eval(node, ts)
        if isinstance(out, StepVector):
            self.ctx.hold(int(np.count_nonzero(out.present)))
        return out

    def _eval(self, node: Node, ts: np.ndarray) -> Value:
        if isinstance(node, NumberLit):
            return Scalar(np.full(ts.shape[0], node.value))
        if isinstance(node, StringLit):
            return String(node.value)
        if isinstance(node, Paren):
            return self.eval(node.expr, ts)
        if isinstance(node, Selector):
            return self.instant_selector(node, ts)[0]
        if isinstance(node, MatrixSel):
            return self.matrix_selector(node, ts)
        if isinstance(node, Subquery):
            return self.subquery(node, ts)
        if isinstance(node, Unary):
            return self.unary(node, ts)
        if isinstance(node, Binary):
            return self.binary(node, ts)
        if isinstance(node, Aggregate):
            return self.aggregate(node, ts)
        if isinstance(node, Call):
            from pitwall.metrics.promql.calls import call

            return call(self, node, ts)
        raise PromQLEvalError(f"unexpected expression {type(node).__name__}")

    def vector(self, node: Node, ts: np.ndarray) -> StepVector:
        v = self.eval(node, ts)
        if isinstance(v, Scalar):
            return StepVector([()], v.values[None, :].copy(), np.ones((1, ts.shape[0]), dtype=bool))
        if not isinstance(v, StepVector):
            raise PromQLEvalError(f"expected instant vector, got {type(v).__name__}")
        return v

    def scalar(self, node: Node, ts: np.ndarray) -> np.ndarray:
        v = self.eval(node, ts)
        if not isinstance(v, Scalar):
            raise PromQLEvalError(f"expected scalar, got {type(v).__name__}")
        return v.values

    def range_value(self, node: Node, ts: np.ndarray) -> RangeSamples:
        v = self.eval(node, ts)
        if not isinstance(v, RangeSamples):
            raise PromQLEvalError(f"expected range vector, got {type(v).__name__}")
        return v

    # -- selectors ------------------------------------------------------

    def _times(self, at: At | None, offset_ms: int, ts: np.ndarray) -> np.ndarray:
        if at is None:
            base = ts
        else:
            at_ms = {"start": self.ctx.start_ms, "end": self.ctx.end_ms}.get(at.kind, at.ms)
            base = np.full_like(ts, at_ms)
        return (base - offset_ms).astype(np.int64)

    def instant_selector(self, sel: Selector, ts: np.ndarray) -> tuple[StepVector, np.ndarray]:
        """The vector at every step, plus each point's sample timestamp."""
        eff = self._times(sel.at, sel.offset_ms, ts)
        lookback = self.ctx.lookback_ms
        mint = int(eff.min()) - lookback + 1
        maxt = int(eff.max())
        flat = fetch(self.ctx, sel, mint, maxt)
        self.ctx.grid(len(flat.labels), eff.shape[0])
        return instant_from_flat(flat, eff, lookback, mint, maxt)

    def matrix_selector(self, node: MatrixSel, ts: np.ndarray) -> RangeSamples:
        eff = self._times(node.sel.at, node.sel.offset_ms, ts)
        mint = int(eff.min()) - node.range_ms + 1
        maxt = int(eff.max())
        flat = fetch(self.ctx, node.sel, mint, maxt)
        self.ctx.grid(len(flat.labels), eff.shape[0])
        return range_from_flat(flat, eff, node.range_ms, mint, maxt)

    def subquery(self, node: Subquery, ts: np.ndarray) -> RangeSamples:
        step = node.step_ms or self.ctx.default_step_ms
        eff = self._times(node.at, node.offset_ms, ts)
        lo = int(eff.min()) - node.range_ms
        # Inner steps sit on absolute multiples of the step, strictly after lo.
        first = (lo // step) * step
        if first <= lo:
            first += step
        maxt = int(eff.max())
        # Refuse before allocating: `x[30d:1ms]` would be 2.6e9 inner steps.
        self.ctx.grid(1, max(0, (maxt - first) // step + 1))
        inner_ts = np.arange(first, maxt + 1, step, dtype=np.int64)
        if inner_ts.shape[0] == 0:
            inner = empty_vector(0)
        else:
            inner = self.vector(node.expr, inner_ts)
        flat = step_vector_to_flat(inner, inner_ts)
        self.ctx.grid(len(flat.labels), eff.shape[0])
        rs = range_from_flat(flat, eff, node.range_ms, lo, max(maxt, first), drop_stale=False)
        rs.drop_name = inner.drop_name
        return rs

    # -- operators ------------------------------------------------------

    def unary(self, node: Unary, ts: np.ndarray) -> Value:
        v = self.eval(node.expr, ts)
        if isinstance(v, Scalar):
            return Scalar(-v.values)
        if isinstance(v, StepVector):
            return StepVector(v.labels, -v.values, v.present, np.ones(v.num_series, dtype=bool))
        raise PromQLEvalError("unary expression only allowed on expressions of type scalar or instant vector")

    def binary(self, node: Binary, ts: np.ndarray) -> Value:
        lhs = self.eval(node.lhs, ts)
        rhs = self.eval(node.rhs, ts)
        if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
            return Scalar(binops.scalar_scalar(node, lhs.values, rhs.values))
        if isinstance(lhs, StepVector) and isinstance(rhs, Scalar):
            return binops.vector_scalar(node, lhs, rhs.values, swap=False)
        if isinstance(lhs, Scalar) and isinstance(rhs, StepVector):
            return binops.vector_scalar(node, rhs, lhs.values, swap=True)
        if isinstance(lhs, StepVector) and isinstance(rhs, StepVector):
            if node.op in binops.SET_OPS:
                return binops.set_op(node, lhs, rhs)
            if node.fill_lhs is not None or node.fill_rhs is not None:
                lhs, rhs = fill_missing(node, lhs, rhs)
            return binops.vector_vector(node, lhs, rhs)
        raise PromQLEvalError("binary expression must contain only scalar and instant vector types")

    def aggregate(self, node: Aggregate, ts: np.ndarray) -> Value:
        op = node.op
        param_s: np.ndarray | None = None
        label = ""
        if node.param is not None:
            if op == "count_values":
                p = self.eval(node.param, ts)
                if not isinstance(p, String):
                    raise PromQLEvalError("expected string parameter for count_values")
                label = p.value
            else:
                param_s = self.scalar(node.param, ts)
        vec = self.vector(node.expr, ts)
        g, w = node.grouping, node.without
        pos = node.param.pos if node.param is not None else node.pos
        if op in ("topk", "bottomk"):
            assert param_s is not None
            return agg.topk(op, vec, param_s, g, w)
        if op == "quantile":
            assert param_s is not None
            return agg.quantile(vec, param_s, g, w, self.ctx.warner(pos))
        if op == "count_values":
            if not functions._LABEL_NAME.match(label):
                raise PromQLEvalError(f'invalid label name "{label}"')
            return agg.count_values(vec, label, g, w)
        if op == "limitk":
            assert param_s is not None
            return agg.limitk(vec, param_s, g, w)
        if op == "limit_ratio":
            assert param_s is not None
            return agg.limit_ratio(vec, param_s, self.ctx.warner(pos))
        return agg.simple_aggregate(op, vec, g, w)
