"""Function calls: argument evaluation and dispatch to the function modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pitwall.core import regex
from pitwall.core.labels import METRIC_NAME, Labels, Matcher, MatchType
from pitwall.metrics.promql import functions as fn
from pitwall.metrics.promql.ast import Call, MatrixSel, Node, Paren, Selector, Subquery, children
from pitwall.metrics.promql.errors import PromQLEvalError
from pitwall.metrics.promql.format import labels_string
from pitwall.metrics.promql.histograms import histogram_fraction, histogram_quantile
from pitwall.metrics.promql.range_functions import RANGE_FUNCTIONS, FunctionArgError
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
    try:
        values, present = impl(rs, extra, ev.ctx.warner(range_node.pos), ev.ctx.informer(range_node.pos))
    except FunctionArgError as ex:
        # Prometheus reports a bad function argument (e.g. a smoothing factor
        # outside (0, 1)) as an ``execution`` error (HTTP 422), not bad_data.
        raise PromQLEvalError(ex.message) from ex
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
    phi = ev.scalar(node.args[0], ts)
    vec = ev.vector(node.args[1], ts)
    phi_pos, vec_pos = node.args[0].pos, node.args[1].pos

    def warn(msg: str) -> None:
        # Prometheus attaches quantile complaints to the first argument, bucket ones to the second.
        ev.ctx.warn(msg, phi_pos if msg.startswith("quantile value") else vec_pos)

    out = histogram_quantile(phi, vec, warn, ev.ctx.informer(vec_pos), step_times=ts)
    return _drop_names(out)


def _histogram_fraction(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
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
    vec = ev.vector(node.args[0], ts)
    label = _string_arg(ev, node.args[1], ts)
    vec_pos = node.args[0].pos
    parts: list[StepVector] = []
    for q_node in node.args[2:]:
        phi = ev.scalar(q_node, ts)

        def warn(msg: str, q_pos: tuple[int, int] = q_node.pos) -> None:
            ev.ctx.warn(msg, q_pos if msg.startswith("quantile value") else vec_pos)

        out = histogram_quantile(phi, vec, warn, ev.ctx.informer(vec_pos), step_times=ts)
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


# -- info() -----------------------------------------------------------------

_INFO_ID_LABELS = ("instance", "job")
_TARGET_INFO = "target_info"


def _selector_path(node: Node) -> list[Node] | None:
    """The nodes from ``node`` down to its first vector selector (pre-order)."""
    if isinstance(node, Selector):
        return [node]
    for child in children(node):
        path = _selector_path(child)
        if path is not None:
            return [node, *path]
    return None


def _info_times(ev: Evaluator, base: Node, ts: np.ndarray) -> np.ndarray:
    """When info series are looked up: the base data's time after its @ and offsets."""
    times = ts
    for n in _selector_path(base) or []:
        if isinstance(n, (Selector, Subquery)):
            times = ev._times(n.at, n.offset_ms, times)
    return times


def _info(ev: Evaluator, node: Call, ts: np.ndarray) -> Value:
    """``info(v, {selector})``: add the data labels of matching info series.

    Info series join on the identifying labels ``instance`` and ``job``; the
    selector picks the info metrics (``__name__``, default ``target_info``)
    and which data labels to add. Series that are themselves selected info
    metrics pass through unchanged.
    """
    from pitwall.metrics.promql.evaluator import dedupe

    base = ev.vector(node.args[0], ts)
    data: dict[str, list[Matcher]] = {}
    if len(node.args) > 1:
        sel = _unwrap(node.args[1])
        assert isinstance(sel, Selector)
        for m in dict.fromkeys(sel.matchers):
            data.setdefault(m.name, []).append(m)
    # The info metrics considered: target_info by default; with only negative
    # __name__ matchers, any *_info metric they do not exclude.
    name_ms = data.pop(METRIC_NAME, [])
    if not name_ms:
        name_ms = [Matcher.of(MatchType.EQUAL, METRIC_NAME, _TARGET_INFO)]
    elif not any(m.type in (MatchType.EQUAL, MatchType.REGEX) for m in name_ms):
        name_ms = [Matcher.of(MatchType.REGEX, METRIC_NAME, ".+_info"), *name_ms]
    ignored = np.array(
        [all(m.matches(dict(lb).get(METRIC_NAME, "")) for m in name_ms) for lb in base.labels], dtype=bool
    )
    id_values: dict[str, set[str]] = {}
    for lb, ign in zip(base.labels, ignored, strict=True):
        if not ign:
            d = dict(lb)
            for k in _INFO_ID_LABELS:
                if d.get(k):
                    id_values.setdefault(k, set()).add(d[k])
    t = ts.shape[0]
    info_labels: list[Labels] = []
    info_present = np.zeros((0, t), dtype=bool)
    info_ts = np.zeros((0, t), dtype=np.int64)
    if id_values:
        ms = [Matcher.of(MatchType.REGEX, k, "|".join(regex.escape(v) for v in sorted(vals)))
              for k, vals in sorted(id_values.items())]
        ms += [m for group in data.values() for m in group] + name_ms
        sel = Selector("", tuple(ms), (), 0, None, "info", pos=node.pos)
        vec, sample_ts = ev.instant_selector(sel, _info_times(ev, node.args[0], ts))
        info_labels, info_present, info_ts = vec.labels, vec.present, sample_ts
    return dedupe(_combine_info(base, ignored, info_labels, info_present, info_ts, data))


def _info_sig(name: str, labels: Labels) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(p for p in labels if p[0] in _INFO_ID_LABELS)


def _combine_info(
    base: StepVector,
    ignored: np.ndarray,
    info_labels: list[Labels],
    info_present: np.ndarray,
    info_ts: np.ndarray,
    data: dict[str, list[Matcher]],
) -> StepVector:
    names = sorted({dict(lb)[METRIC_NAME] for lb in info_labels})
    info_sigs = [_info_sig(dict(lb)[METRIC_NAME], lb) for lb in info_labels]
    need_match = any(not m.matches("") for group in data.values() for m in group)
    drops = base.drop_name if base.drop_name is not None else np.zeros(base.num_series, dtype=bool)
    t = base.present.shape[1]
    out_index: dict[Labels, int] = {}
    out_drop: list[bool] = []
    cells: list[tuple[int, int, float]] = []
    for c in range(t):
        rows = np.flatnonzero(base.present[:, c])
        if not rows.shape[0]:
            continue
        best: dict[tuple[str, Labels], int] = {}
        for i in np.flatnonzero(info_present[:, c]).tolist():
            j = best.get(info_sigs[i])
            if j is None or info_ts[i, c] > info_ts[j, c]:
                best[info_sigs[i]] = i
            elif info_ts[i, c] == info_ts[j, c]:
                raise PromQLEvalError(
                    f"found duplicate series for info metric: existing {labels_string(info_labels[j])} "
                    f"@ {int(info_ts[j, c])}, new {labels_string(info_labels[i])} @ {int(info_ts[i, c])}"
                )
        for r in rows.tolist():
            lb = base.labels[r]
            if not ignored[r]:
                added = _info_labels_for(lb, names, best, info_labels, data)
                if added is None:
                    if need_match:
                        continue
                    added = {}
                if added:
                    lb = tuple(sorted({**dict(lb), **added}.items()))
            k = out_index.setdefault(lb, len(out_index))
            if k == len(out_drop):
                out_drop.append(bool(drops[r]))
            cells.append((k, c, float(base.values[r, c])))
    n = len(out_index)
    values = np.zeros((n, t))
    present = np.zeros((n, t), dtype=bool)
    for k, c, v in cells:
        if present[k, c]:
            raise PromQLEvalError("vector cannot contain metrics with the same labelset")
        values[k, c] = v
        present[k, c] = True
    return StepVector(list(out_index), values, present, np.array(out_drop, dtype=bool))


def _info_labels_for(
    lb: Labels,
    names: list[str],
    best: dict[tuple[str, Labels], int],
    info_labels: list[Labels],
    data: dict[str, list[Matcher]],
) -> dict[str, str] | None:
    """Data labels the info series matching ``lb`` add, or None when none matches."""
    base = dict(lb)
    added: dict[str, str] = {}
    seen = False
    for name in names:
        i = best.get(_info_sig(name, lb))
        if i is None:
            continue
        seen = True
        for k, v in info_labels[i]:
            if k == METRIC_NAME or (data and k not in data):
                continue
            if added.get(k, v) != v:
                raise PromQLEvalError(f"conflicting label: {k}")
            if k not in base:
                added[k] = v
    return added if seen else None


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
    "info": _info,
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
