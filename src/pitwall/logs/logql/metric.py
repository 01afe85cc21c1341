"""Metric evaluation over all steps at once, column-wise with numpy.

A ``StepMatrix`` holds S series by K steps: ``values[S, K]`` and a
``present[S, K]`` mask (a series has no sample at a step where the mask is
False; NaN is a genuine value, as in Loki). Range aggregations turn sorted
per-series samples into a StepMatrix with ``searchsorted`` over the
windows; vector aggregations, binary operations and ``label_replace`` map
StepMatrices to StepMatrices.

Windows follow Loki's ``rangeVectorIterator``: for step time t the window
is ``(t - offset - range, t - offset]``, left-open and right-closed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pitwall.core import regex
from pitwall.core.labels import Labels
from pitwall.logs.logql import ast
from pitwall.logs.logql.errors import LogQLError

__all__ = [
    "StepMatrix",
    "StepScalar",
    "absent_labels",
    "eval_binop",
    "eval_label_replace",
    "eval_range_agg",
    "eval_vector_agg",
    "scalar_binop",
]


@dataclass
class StepMatrix:
    labels: list[Labels]
    values: np.ndarray  # float64 [S, K]
    present: np.ndarray  # bool [S, K]

    @classmethod
    def empty(cls, k: int) -> StepMatrix:
        return cls([], np.zeros((0, k)), np.zeros((0, k), dtype=bool))

    def compact(self) -> StepMatrix:
        """Drop series without any sample."""
        keep = self.present.any(axis=1)
        if keep.all():
            return self
        idx = np.flatnonzero(keep)
        return StepMatrix([self.labels[i] for i in idx], self.values[idx], self.present[idx])


@dataclass
class StepScalar:
    values: np.ndarray  # float64 [K]


Value = StepMatrix | StepScalar


# ---------------------------------------------------------------- range aggregations


def _window_bounds(
    ts: np.ndarray, steps: np.ndarray, range_ns: int, offset_ns: int
) -> tuple[np.ndarray, np.ndarray]:
    ends = steps - offset_ns
    lo = np.searchsorted(ts, ends - range_ns, side="right")
    hi = np.searchsorted(ts, ends, side="right")
    return lo, hi


def _quantile(q: float, vals: np.ndarray) -> float:
    """Prometheus' quantile: linear interpolation between closest ranks."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    s = np.sort(vals)
    n = s.shape[0]
    rank = q * (n - 1)
    lower = max(math.floor(rank), 0)
    upper = min(lower + 1, n - 1)
    weight = rank - math.floor(rank)
    return float(s[lower] * (1 - weight) + s[upper] * weight)


def _counter_rate(ts: np.ndarray, vals: np.ndarray, range_start: int, range_end: int, range_ns: int) -> float:
    """Prometheus' extrapolatedRate for counters (``rate_counter``)."""
    n = vals.shape[0]
    if n < 2:
        return math.nan
    result = float(vals[-1] - vals[0])
    # counter resets: add back the value before each drop
    prev = vals[:-1]
    drops = vals[1:] < prev
    if drops.any():
        result += float(prev[drops].sum())
    duration_to_start = (int(ts[0]) - range_start) / 1e9
    duration_to_end = (range_end - int(ts[-1])) / 1e9
    sampled_interval = (int(ts[-1]) - int(ts[0])) / 1e9
    average_between = sampled_interval / (n - 1)
    if result > 0 and vals[0] >= 0:
        duration_to_zero = sampled_interval * (float(vals[0]) / result)
        duration_to_start = min(duration_to_start, duration_to_zero)
    threshold = average_between * 1.1
    extrapolate_to = sampled_interval
    extrapolate_to += duration_to_start if duration_to_start < threshold else average_between / 2
    extrapolate_to += duration_to_end if duration_to_end < threshold else average_between / 2
    if sampled_interval == 0:
        return math.nan
    return result * (extrapolate_to / sampled_interval) / (range_ns / 1e9)


_LOOP_OPS = frozenset(
    {
        "max_over_time",
        "min_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "quantile_over_time",
        "rate_counter",
    }
)


def _range_series(
    op: str,
    ts: np.ndarray,
    vals: np.ndarray,
    steps: np.ndarray,
    range_ns: int,
    offset_ns: int,
    param: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """One series' (values[K], present[K]) for a range aggregation."""
    lo, hi = _window_bounds(ts, steps, range_ns, offset_ns)
    count = hi - lo
    present = count > 0
    range_s = range_ns / 1e9
    if op in ("count_over_time", "rate") and vals.size == 0:
        pass
    out = np.zeros(steps.shape[0])
    if op in _LOOP_OPS:
        for k in np.flatnonzero(present):
            w = vals[lo[k] : hi[k]]
            if op == "max_over_time":
                out[k] = _nan_max(w)
            elif op == "min_over_time":
                out[k] = _nan_min(w)
            elif op == "stdvar_over_time":
                out[k] = float(np.var(w))
            elif op == "stddev_over_time":
                out[k] = float(np.std(w))
            elif op == "quantile_over_time":
                out[k] = _quantile(param if param is not None else math.nan, w)
            else:
                end = int(steps[k]) - offset_ns
                out[k] = _counter_rate(ts[lo[k] : hi[k]], w, end - range_ns, end, range_ns)
        return out, present
    if op in ("first_over_time", "last_over_time"):
        idx = lo if op == "first_over_time" else hi - 1
        out[present] = vals[idx[present]]
        return out, present
    csum = np.concatenate(([0.0], np.cumsum(vals)))
    sums = csum[hi] - csum[lo]
    if op == "count_over_time":
        out = count.astype(np.float64)
    elif op in ("sum_over_time", "bytes_over_time"):
        out = sums
    elif op in ("rate", "bytes_rate"):
        out = sums / range_s
    elif op == "avg_over_time":
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(present, sums / np.maximum(count, 1), 0.0)
    else:
        raise LogQLError(f"unsupported range aggregation {op}")
    return out, present


def _nan_max(w: np.ndarray) -> float:
    # Loki replaces a NaN running value with any later value.
    finite = w[~np.isnan(w)]
    return float(finite.max()) if finite.size else math.nan


def _nan_min(w: np.ndarray) -> float:
    finite = w[~np.isnan(w)]
    return float(finite.min()) if finite.size else math.nan


def eval_range_agg(
    op: str,
    series: Sequence[tuple[Labels, np.ndarray, np.ndarray]],
    steps: np.ndarray,
    range_ns: int,
    offset_ns: int,
    param: float | None,
) -> StepMatrix:
    """Range aggregation of per-series sorted samples ``(labels, ts_ns, values)`` at every step."""
    k = steps.shape[0]
    labels: list[Labels] = []
    vals = np.zeros((len(series), k))
    pres = np.zeros((len(series), k), dtype=bool)
    for i, (lbl, ts, v) in enumerate(series):
        labels.append(lbl)
        vals[i], pres[i] = _range_series(op, ts, v, steps, range_ns, offset_ns, param)
    return StepMatrix(labels, vals, pres).compact()


def absent_labels(selector: ast.LogSelector, grouping: ast.Grouping | None) -> Labels:
    """Labels of ``absent_over_time``'s sample: the selector's equality matchers (once each)."""
    out: dict[str, str] = {}
    seen: set[str] = set()
    for m in selector.matchers:
        if m.name in seen:
            out.pop(m.name, None)
            continue
        seen.add(m.name)
        if m.type.value == "=":
            out[m.name] = m.value
    if grouping is not None:
        names = set(grouping.labels)
        out = {k: v for k, v in out.items() if (k in names) != grouping.without}
    return tuple(sorted(out.items()))


# ---------------------------------------------------------------- vector aggregations


def group_key(labels: Labels, grouping: ast.Grouping | None) -> Labels:
    """The labels a series keeps under ``by``/``without`` (no grouping: none)."""
    if grouping is None:
        return ()
    names = grouping.labels
    if grouping.without:
        return tuple(p for p in labels if p[0] not in names)
    return tuple(p for p in labels if p[0] in names)


def _groups(m: StepMatrix, grouping: ast.Grouping | None) -> dict[Labels, list[int]]:
    groups: dict[Labels, list[int]] = {}
    for i, lbl in enumerate(m.labels):
        groups.setdefault(group_key(lbl, grouping), []).append(i)
    return groups


def eval_vector_agg(op: str, m: StepMatrix, grouping: ast.Grouping | None, param: int | None) -> StepMatrix:
    """``sum/avg/min/max/count/stddev/stdvar/topk/bottomk/sort/sort_desc`` over every step."""
    k = m.values.shape[1]
    if op in ("sort", "sort_desc"):
        return m  # ordering is applied to instant results by the engine
    if op in ("topk", "bottomk"):
        return _topk(m, grouping, param or 0, op == "topk")
    out_labels: list[Labels] = []
    rows_v: list[np.ndarray] = []
    rows_p: list[np.ndarray] = []
    for key, idx in _groups(m, grouping).items():
        v = m.values[idx]
        p = m.present[idx]
        cnt = p.sum(axis=0)
        any_p = cnt > 0
        if not any_p.any():
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            if op == "sum":
                r = np.where(p, v, 0.0).sum(axis=0)
            elif op == "count":
                r = cnt.astype(np.float64)
            elif op == "avg":
                r = np.where(p, v, 0.0).sum(axis=0) / np.maximum(cnt, 1)
            elif op == "max":
                r = np.fmax.reduce(np.where(p, v, np.nan), axis=0)
            elif op == "min":
                r = np.fmin.reduce(np.where(p, v, np.nan), axis=0)
            elif op in ("stddev", "stdvar"):
                mean = np.where(p, v, 0.0).sum(axis=0) / np.maximum(cnt, 1)
                var = (np.where(p, (v - mean) ** 2, 0.0)).sum(axis=0) / np.maximum(cnt, 1)
                r = np.sqrt(var) if op == "stddev" else var
            else:
                raise LogQLError(f"unsupported vector aggregation {op}")
        out_labels.append(key)
        rows_v.append(np.asarray(r, dtype=np.float64))
        rows_p.append(any_p)
    if not out_labels:
        return StepMatrix.empty(k)
    return StepMatrix(out_labels, np.vstack(rows_v), np.vstack(rows_p))


def _topk(m: StepMatrix, grouping: ast.Grouping | None, n: int, top: bool) -> StepMatrix:
    keep = np.zeros_like(m.present)
    if n >= 1:
        for idx in _groups(m, grouping).values():
            v = m.values[idx]
            p = m.present[idx]
            # absent rows sort last; NaN sorts below every number (Loki's heap replaces NaN first)
            fill = -np.inf if top else np.inf
            key = np.where(p, np.where(np.isnan(v), fill, v), fill)
            order = np.argsort(-key if top else key, axis=0, kind="stable")[:n]
            sel = np.zeros_like(p)
            np.put_along_axis(sel, order, True, axis=0)
            keep[idx] = sel & p
    return StepMatrix(m.labels, m.values, keep).compact()


# ---------------------------------------------------------------- binary operations

_ARITH: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": lambda a, b: np.where(b == 0, np.nan, a / np.where(b == 0, 1, b)),
    "%": lambda a, b: np.where(b == 0, np.nan, np.fmod(a, np.where(b == 0, 1, b))),
    "^": np.power,
}
_COMPARE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "==": np.equal,
    "!=": np.not_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "<": np.less,
    "<=": np.less_equal,
}


def scalar_binop(op: str, a: float, b: float, return_bool: bool) -> float:
    """Fold two literals (division by zero is NaN, as in Loki)."""
    r = _apply(op, np.array([a]), np.array([b]))
    if op in _COMPARE:
        return float(r[0]) if return_bool else (a if r[0] else math.nan)
    return float(r[0])


def _apply(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if op in _ARITH:
            return np.asarray(_ARITH[op](a, b), dtype=np.float64)
        return np.asarray(_COMPARE[op](a, b), dtype=np.float64)


def eval_binop(node: ast.BinOp, lhs: Value, rhs: Value) -> Value:
    """Apply a binary operator between scalars and/or step matrices."""
    op = node.op
    if isinstance(lhs, StepScalar) and isinstance(rhs, StepScalar):
        return StepScalar(_apply(op, lhs.values, rhs.values))
    if isinstance(lhs, StepMatrix) and isinstance(rhs, StepScalar):
        return _vector_scalar(op, lhs, rhs.values[None, :], node.return_bool, scalar_left=False)
    if isinstance(lhs, StepScalar) and isinstance(rhs, StepMatrix):
        return _vector_scalar(op, rhs, lhs.values[None, :], node.return_bool, scalar_left=True)
    assert isinstance(lhs, StepMatrix) and isinstance(rhs, StepMatrix)
    if op in ("and", "or", "unless"):
        return _set_op(op, lhs, rhs, node.matching)
    return _vector_vector(node, lhs, rhs)


def _vector_scalar(
    op: str, m: StepMatrix, s: np.ndarray, return_bool: bool, *, scalar_left: bool
) -> StepMatrix:
    a, b = (s, m.values) if scalar_left else (m.values, s)
    r = _apply(op, np.broadcast_to(a, m.values.shape), np.broadcast_to(b, m.values.shape))
    if op in _COMPARE:
        if return_bool:
            return StepMatrix(m.labels, r, m.present.copy())
        return StepMatrix(m.labels, m.values.copy(), m.present & (r == 1.0)).compact()
    return StepMatrix(m.labels, r, m.present.copy())


def _signature(labels: Labels, matching: ast.VectorMatching | None) -> Labels:
    if matching is None:
        return labels
    if matching.on:
        return tuple(p for p in labels if p[0] in matching.labels)
    return tuple(p for p in labels if p[0] not in matching.labels)


def _sig_presence(m: StepMatrix, matching: ast.VectorMatching | None) -> dict[Labels, np.ndarray]:
    out: dict[Labels, np.ndarray] = {}
    for i, lbl in enumerate(m.labels):
        sig = _signature(lbl, matching)
        cur = out.get(sig)
        out[sig] = m.present[i].copy() if cur is None else (cur | m.present[i])
    return out


def _set_op(op: str, lhs: StepMatrix, rhs: StepMatrix, matching: ast.VectorMatching | None) -> StepMatrix:
    k = lhs.values.shape[1]
    rsig = _sig_presence(rhs, matching)
    none = np.zeros(k, dtype=bool)
    lp = lhs.present.copy()
    for i, lbl in enumerate(lhs.labels):
        other = rsig.get(_signature(lbl, matching), none)
        lp[i] &= other if op == "and" else (~other if op == "unless" else True)
    if op != "or":
        return StepMatrix(lhs.labels, lhs.values, lp).compact()
    lsig = _sig_presence(lhs, matching)
    rp = rhs.present.copy()
    for i, lbl in enumerate(rhs.labels):
        rp[i] &= ~lsig.get(_signature(lbl, matching), none)
    return _merge_rows(lhs.labels + rhs.labels, np.vstack([lhs.values, rhs.values]), np.vstack([lp, rp]))


def _merge_rows(labels: list[Labels], values: np.ndarray, present: np.ndarray) -> StepMatrix:
    """Combine rows that ended up with the same labels; overlapping samples are an error."""
    index: dict[Labels, int] = {}
    out_l: list[Labels] = []
    rows_v: list[np.ndarray] = []
    rows_p: list[np.ndarray] = []
    for i, lbl in enumerate(labels):
        j = index.get(lbl)
        if j is None:
            index[lbl] = len(out_l)
            out_l.append(lbl)
            rows_v.append(values[i].copy())
            rows_p.append(present[i].copy())
            continue
        if (rows_p[j] & present[i]).any():
            raise LogQLError("vector cannot contain metrics with the same labelset")
        rows_v[j] = np.where(present[i], values[i], rows_v[j])
        rows_p[j] |= present[i]
    if not out_l:
        return StepMatrix.empty(values.shape[1] if values.ndim == 2 else 0)
    return StepMatrix(out_l, np.vstack(rows_v), np.vstack(rows_p)).compact()


def _result_labels(lbl: Labels, other: Labels, matching: ast.VectorMatching | None) -> Labels:
    if matching is None:
        return lbl
    d = dict(lbl)
    if matching.card == "one-to-one":
        if matching.on:
            d = {k: v for k, v in d.items() if k in matching.labels}
        else:
            d = {k: v for k, v in d.items() if k not in matching.labels}
    if matching.include:
        od = dict(other)
        for name in matching.include:
            if name in od and od[name] != "":
                d[name] = od[name]
            else:
                d.pop(name, None)
    return tuple(sorted(d.items()))


def _vector_vector(node: ast.BinOp, lhs: StepMatrix, rhs: StepMatrix) -> StepMatrix:
    matching = node.matching
    card = matching.card if matching else "one-to-one"
    # "one" side: the side whose signatures must be unique per step
    many, one = (rhs, lhs) if card == "one-to-many" else (lhs, rhs)
    one_rows: dict[Labels, list[int]] = {}
    for i, lbl in enumerate(one.labels):
        one_rows.setdefault(_signature(lbl, matching), []).append(i)
    for rows in one_rows.values():
        if len(rows) > 1 and (one.present[rows].sum(axis=0) > 1).any():
            side = "right" if one is rhs else "left"
            raise LogQLError(
                f"found duplicate series for the match group on the {side} hand-side of the operation; "
                "many-to-many matching not allowed: matching labels must be unique on one side"
            )
    if card == "one-to-one":
        many_rows: dict[Labels, list[int]] = {}
        for i, lbl in enumerate(many.labels):
            many_rows.setdefault(_signature(lbl, matching), []).append(i)
        for rows in many_rows.values():
            if len(rows) > 1 and (many.present[rows].sum(axis=0) > 1).any():
                raise LogQLError(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                )
    out_l: list[Labels] = []
    out_v: list[np.ndarray] = []
    out_p: list[np.ndarray] = []
    for i, lbl in enumerate(many.labels):
        for j in one_rows.get(_signature(lbl, matching), ()):
            p = many.present[i] & one.present[j]
            if not p.any():
                continue
            lv, rv = (one.values[j], many.values[i]) if many is rhs else (many.values[i], one.values[j])
            ll, rl = (one.labels[j], many.labels[i]) if many is rhs else (many.labels[i], one.labels[j])
            r = _apply(node.op, lv, rv)
            if node.op in _COMPARE:
                if node.return_bool:
                    vals = r
                else:
                    p = p & (r == 1.0)
                    vals = lv.copy()
            else:
                vals = r
            res_l = (
                _result_labels(ll, rl, matching)
                if card != "one-to-many"
                else _result_labels(rl, ll, matching)
            )
            out_l.append(res_l)
            out_v.append(vals)
            out_p.append(p)
    k = lhs.values.shape[1]
    if not out_l:
        return StepMatrix.empty(k)
    return _merge_rows(out_l, np.vstack(out_v), np.vstack(out_p))


# ---------------------------------------------------------------- label_replace


def eval_label_replace(node: ast.LabelReplace, m: StepMatrix) -> StepMatrix:
    """Prometheus' ``label_replace`` with a fully anchored regex and ``$1``/``${name}`` expansion."""
    rx = regex.compile(node.regex, anchored=True, dot_nl=True)
    labels: list[Labels] = []
    for lbl in m.labels:
        d = dict(lbl)
        mt = rx.search(d.get(node.src, ""))
        if mt is not None:
            value = mt.expand(node.replacement)
            if value:
                d[node.dst] = value
            else:
                d.pop(node.dst, None)
        labels.append(tuple(sorted(d.items())))
    return _merge_rows(labels, m.values, m.present)
