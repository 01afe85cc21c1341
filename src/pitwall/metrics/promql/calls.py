"""Function calls: argument evaluation and dispatch to the function modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pitwall.metrics.promql import functions as fn
from pitwall.metrics.promql.ast import Call, MatrixSel, Node, Paren, Selector, Subquery
from pitwall.metrics.promql.errors import PromQLEvalError
from pitwall.metrics.promql.values import RangeSamples, Scalar, StepVector, String, Value

if TYPE_CHECKING:
    from pitwall.metrics.promql.evaluator import Evaluator


def _unwrap(node: Node) -> Node:
    while isinstance(node, Paren):
        node = node.expr
    return node


def _is_range_arg(node: Node) -> bool:
    return isinstance(_unwrap(node), (MatrixSel, Subquery))


def call(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    name = node.func
    if name in _SIMPLE:
        return _SIMPLE[name](ev, node, ts)
    if any(_is_range_arg(a) for a in node.args):
        return _range_call(ev, node, ts)
    raise PromQLEvalError(f"function {name!r} is not supported")


def _range_call(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    from pitwall.metrics.promql.range_functions import RANGE_FUNCTIONS

    name = node.func
    range_node = next(a for a in node.args if _is_range_arg(a))
    rs = ev.range_value(range_node, ts)
    if name == "absent_over_time":
        return _absent_over_time(node, rs)
    if name == "present_over_time" and name not in RANGE_FUNCTIONS:
        present = rs.hi > rs.lo
        return StepVector(rs.labels, np.ones(present.shape), present, np.ones(rs.num_series, dtype=bool))
    impl = RANGE_FUNCTIONS.get(name)
    if impl is None:
        raise PromQLEvalError(f"function {name!r} is not supported")
    extra = [ev.scalar(a, ts) for a in node.args if a is not range_node]
    if name == "predict_linear":
        extra[0] = extra[0] + _prediction_shift(rs, ts)
    values, present = impl(rs, extra, ev.ctx.warner(range_node.pos), ev.ctx.informer(range_node.pos))
    if name in ("last_over_time", "first_over_time"):
        drop = rs.drop_name
    else:
        drop = np.ones(rs.num_series, dtype=bool)
    return StepVector(list(rs.labels), values, present, drop)


def _prediction_shift(rs: RangeSamples, ts: np.ndarray) -> np.ndarray:
    """Seconds between the evaluation time and the window end (offset, @).

    Prometheus centres predict_linear's regression on the evaluation time,
    not on the (offset or @-moved) window end; range_functions centres it on
    ``rs.step_times``, so the prediction horizon is shifted by the difference.
    """
    return np.asarray((ts - rs.step_times) / 1000.0)


def _absent_over_time(node: Call, rs: RangeSamples) -> StepVector:
    any_present = np.zeros(rs.step_times.shape[0], dtype=bool)
    if rs.num_series:
        any_present = np.asarray((rs.hi > rs.lo).any(axis=0))
    labels = fn.absent_labels(node.args[0])
    return StepVector([labels], np.ones((1, any_present.shape[0])), ~any_present[None, :])


def _math(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    return fn.math_func(node.func, ev.vector(node.args[0], ts))


def _round(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    vec = ev.vector(node.args[0], ts)
    to = ev.scalar(node.args[1], ts) if len(node.args) > 1 else None
    return fn.round_func(vec, to)


def _clamp(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    vec = ev.vector(node.args[0], ts)
    if node.func == "clamp":
        return fn.clamp(vec, ev.scalar(node.args[1], ts), ev.scalar(node.args[2], ts))
    bound = ev.scalar(node.args[1], ts)
    return fn.clamp(
        vec, bound if node.func == "clamp_min" else None, bound if node.func == "clamp_max" else None
    )


def _date(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    if node.args:
        vec = ev.vector(node.args[0], ts)
    else:
        vec = StepVector([()], (ts / 1000.0)[None, :], np.ones((1, ts.shape[0]), dtype=bool))
    return fn.date_func(node.func, vec)


def _time(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    return Scalar(ts / 1000.0)


def _pi(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    return Scalar(np.full(ts.shape[0], np.pi))


def _vector(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    s = ev.scalar(node.args[0], ts)
    return StepVector([()], s[None, :].copy(), np.ones((1, ts.shape[0]), dtype=bool))


def _scalar(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    vec = ev.vector(node.args[0], ts)
    n = vec.present.sum(axis=0)
    vals = np.where(vec.present, vec.values, 0.0).sum(axis=0) if vec.num_series else np.zeros(ts.shape[0])
    return Scalar(np.where(n == 1, vals, np.nan))


def _timestamp(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    arg = _unwrap(node.args[0])
    if isinstance(arg, Selector):
        vec, sample_ts = ev.instant_selector(arg, ts)
        return fn.drop_all(vec, sample_ts / 1000.0)
    vec = ev.vector(arg, ts)
    return fn.drop_all(vec, np.broadcast_to(ts / 1000.0, vec.values.shape).copy())


def _absent(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    vec = ev.vector(node.args[0], ts)
    any_present = np.zeros(ts.shape[0], dtype=bool)
    if vec.num_series:
        any_present = np.asarray(vec.present.any(axis=0))
    labels = fn.absent_labels(node.args[0])
    return StepVector([labels], np.ones((1, ts.shape[0])), ~any_present[None, :])


def _string_arg(ev: Evaluator, node: Node, ts: np.ndarray) -> str:
    v = ev.eval(node, ts)
    if not isinstance(v, String):
        raise PromQLEvalError("expected string argument")
    return v.value


def _label_replace(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    from pitwall.metrics.promql.evaluator import dedupe

    vec = ev.vector(node.args[0], ts)
    dst, repl, src, regex = (_string_arg(ev, a, ts) for a in node.args[1:5])
    return dedupe(fn.label_replace(vec, dst, repl, src, regex))


def _label_join(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    from pitwall.metrics.promql.evaluator import dedupe

    vec = ev.vector(node.args[0], ts)
    dst = _string_arg(ev, node.args[1], ts)
    sep = _string_arg(ev, node.args[2], ts)
    srcs = [_string_arg(ev, a, ts) for a in node.args[3:]]
    return dedupe(fn.label_join(vec, dst, sep, srcs))


def _sort_warning(ev: Evaluator, node: Call) -> None:
    if ev.ctx.is_range:
        ev.ctx.warn(
            "sort is ineffective for range queries since results are always ordered by labels", node.pos
        )


def _sort(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    _sort_warning(ev, node)
    return fn.sort_by_value(ev.vector(node.args[0], ts), desc=node.func == "sort_desc")


def _sort_by_label(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    _sort_warning(ev, node)
    vec = ev.vector(node.args[0], ts)
    names = [_string_arg(ev, a, ts) for a in node.args[1:]]
    return fn.sort_by_label(vec, names, desc=node.func == "sort_by_label_desc")


def _histogram_quantile(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    from pitwall.metrics.promql.histograms import histogram_quantile

    phi = ev.scalar(node.args[0], ts)
    vec = ev.vector(node.args[1], ts)
    phi_pos, vec_pos = node.args[0].pos, node.args[1].pos

    def warn(msg: str) -> None:
        # Prometheus attaches quantile complaints to the first argument, bucket ones to the second.
        ev.ctx.warn(msg, phi_pos if msg.startswith("quantile value") else vec_pos)

    out = histogram_quantile(phi, vec, warn, ev.ctx.informer(vec_pos))
    return _drop_names(out)


def _histogram_fraction(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    from pitwall.metrics.promql.histograms import histogram_fraction

    lower = ev.scalar(node.args[0], ts)
    upper = ev.scalar(node.args[1], ts)
    vec = ev.vector(node.args[2], ts)
    out = histogram_fraction(
        lower, upper, vec, ev.ctx.warner(node.args[2].pos), ev.ctx.informer(node.args[2].pos)
    )
    return _drop_names(out)


def _histogram_quantiles(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    """``histogram_quantiles(v, "label", q1, q2, ...)``: one result per quantile, labelled."""
    from pitwall.metrics.promql.evaluator import dedupe
    from pitwall.metrics.promql.histograms import histogram_quantile

    vec = ev.vector(node.args[0], ts)
    label = _string_arg(ev, node.args[1], ts)
    vec_pos = node.args[0].pos
    parts: list[StepVector] = []
    for q_node in node.args[2:]:
        phi = ev.scalar(q_node, ts)

        def warn(msg: str, q_pos: tuple[int, int] = q_node.pos) -> None:
            ev.ctx.warn(msg, q_pos if msg.startswith("quantile value") else vec_pos)

        out = histogram_quantile(phi, vec, warn, ev.ctx.informer(vec_pos))
        text = fn.quantile_label(float(phi[0]))
        labels = [tuple(sorted({**dict(lb), label: text}.items())) for lb in out.labels]
        parts.append(StepVector(labels, out.values, out.present, np.ones(len(labels), dtype=bool)))
    t = ts.shape[0]
    merged = StepVector(
        [lb for p in parts for lb in p.labels],
        np.concatenate([p.values for p in parts]) if parts else np.zeros((0, t)),
        np.concatenate([p.present for p in parts]) if parts else np.zeros((0, t), dtype=bool),
        np.ones(sum(p.num_series for p in parts), dtype=bool),
    )
    return dedupe(merged)


def _step(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    return Scalar(np.full(ts.shape[0], ev.ctx.step_ms / 1000.0))


def _range_fn(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    return Scalar(np.full(ts.shape[0], (ev.ctx.end_ms - ev.ctx.start_ms) / 1000.0))


def _start(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    return Scalar(np.full(ts.shape[0], ev.ctx.start_ms / 1000.0))


def _end(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    return Scalar(np.full(ts.shape[0], ev.ctx.end_ms / 1000.0))


def _min_max_of(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    a = ev.scalar(node.args[0], ts)
    b = ev.scalar(node.args[1], ts)
    # Go's math.Min/Max: NaN wins.
    return Scalar(np.minimum(a, b) if node.func == "min_of" else np.maximum(a, b))


def _drop_names(vec: StepVector) -> StepVector:
    return StepVector(vec.labels, vec.values, vec.present, np.ones(vec.num_series, dtype=bool))


def _native_only(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    # These read native histogram samples only and ignore float samples, as
    # Prometheus does; this engine stores no native histograms, so the result
    # is always empty.
    ev.vector(node.args[0], ts)
    return StepVector([], np.zeros((0, ts.shape[0])), np.zeros((0, ts.shape[0]), dtype=bool))


_Impl = Callable[["Evaluator", Call, np.ndarray], Value]
_SIMPLE: dict[str, _Impl] = {
    **{name: _math for name in fn.MATH_FUNCTIONS},
    **{name: _date for name in fn.DATE_FUNCTIONS},
    "round": _round,
    "clamp": _clamp,
    "clamp_min": _clamp,
    "clamp_max": _clamp,
    "time": _time,
    "pi": _pi,
    "vector": _vector,
    "scalar": _scalar,
    "timestamp": _timestamp,
    "absent": _absent,
    "label_replace": _label_replace,
    "label_join": _label_join,
    "sort": _sort,
    "sort_desc": _sort,
    "sort_by_label": _sort_by_label,
    "sort_by_label_desc": _sort_by_label,
    "histogram_quantile": _histogram_quantile,
    "histogram_fraction": _histogram_fraction,
    "histogram_quantiles": _histogram_quantiles,
    "step": _step,
    "range": _range_fn,
    "start": _start,
    "end": _end,
    "min_of": _min_max_of,
    "max_of": _min_max_of,
    **{
        name: _native_only
        for name in (
            "histogram_count",
            "histogram_sum",
            "histogram_avg",
            "histogram_stddev",
            "histogram_stdvar",
        )
    },
}
