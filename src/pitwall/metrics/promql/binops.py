"""Binary operators: arithmetic, comparison and set operators with vector matching.

Vector matching computes a signature per series (a dict from label tuple to
index), a per-(signature, step) table of the matching "one"-side row, then
pairs every "many"-side point with its match by fancy indexing.
"""

from __future__ import annotations

import numpy as np

from pitwall.core.labels import METRIC_NAME, Labels
from pitwall.metrics.promql.ast import Binary
from pitwall.metrics.promql.errors import PromQLEvalError
from pitwall.metrics.promql.format import labels_string
from pitwall.metrics.promql.values import StepVector

COMPARISONS = ("==", "!=", ">", "<", ">=", "<=")
SET_OPS = ("and", "or", "unless")


_ARITH: dict[str, np.ufunc] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "%": np.fmod,  # Go's math.Mod: the result takes the sign of the dividend
    "^": np.power,
    "atan2": np.arctan2,
}


def arith(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise arithmetic with Go float semantics."""
    f = _ARITH.get(op)
    if f is None:
        raise PromQLEvalError(f"operator {op!r} not allowed for operations between vectors")
    with np.errstate(all="ignore"):
        out: np.ndarray = np.asarray(f(a, b))
    return out


def compare(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        if op == "==":
            return np.asarray(a == b)
        if op == "!=":
            return np.asarray(a != b)
        if op == ">":
            return np.asarray(a > b)
        if op == "<":
            return np.asarray(a < b)
        if op == ">=":
            return np.asarray(a >= b)
        if op == "<=":
            return np.asarray(a <= b)
    raise PromQLEvalError(f"unknown comparison operator {op!r}")


def scalar_scalar(node: Binary, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if node.op in COMPARISONS:
        return compare(node.op, a, b).astype(np.float64)
    return arith(node.op, a, b)


def vector_scalar(node: Binary, vec: StepVector, s: np.ndarray, swap: bool) -> StepVector:
    """``vec op scalar`` (or ``scalar op vec`` when ``swap``)."""
    a, b = (s[None, :], vec.values) if swap else (vec.values, s[None, :])
    if node.op in COMPARISONS:
        ok = compare(node.op, a, b)
        if node.return_bool:
            return StepVector(vec.labels, ok.astype(np.float64), vec.present.copy(), _all_drop(vec))
        # The vector's own value is kept even when it is the right operand.
        return StepVector(vec.labels, vec.values, vec.present & ok, vec.drop_name)
    vals = arith(node.op, a, b)
    return StepVector(
        vec.labels, np.broadcast_to(vals, vec.values.shape).copy(), vec.present.copy(), _all_drop(vec)
    )


def _all_drop(vec: StepVector) -> np.ndarray:
    return np.ones(vec.num_series, dtype=bool)


def signature(labels: Labels, on: bool | None, names: tuple[str, ...]) -> Labels:
    if on:
        keep = set(names)
        return tuple(p for p in labels if p[0] in keep)
    drop = set(names)
    drop.add(METRIC_NAME)
    return tuple(p for p in labels if p[0] not in drop)


def _sig_ids(lhs: StepVector, rhs: StepVector, node: Binary) -> tuple[np.ndarray, np.ndarray, list[Labels]]:
    index: dict[Labels, int] = {}

    def ids(labels: list[Labels]) -> np.ndarray:
        out = np.empty(len(labels), dtype=np.int64)
        for i, lb in enumerate(labels):
            sig = signature(lb, node.on, node.matching)
            j = index.get(sig)
            if j is None:
                j = index[sig] = len(index)
            out[i] = j
        return out

    lsig = ids(lhs.labels)
    rsig = ids(rhs.labels)
    return lsig, rsig, list(index)


def _sig_presence(sig: np.ndarray, present: np.ndarray, n: int) -> np.ndarray:
    cnt = np.zeros((n, present.shape[1]), dtype=np.int64)
    if sig.shape[0]:
        np.add.at(cnt, sig, present.astype(np.int64))
    return cnt


def set_op(node: Binary, lhs: StepVector, rhs: StepVector) -> StepVector:
    lsig, rsig, sigs = _sig_ids(lhs, rhs, node)
    n = len(sigs)
    if node.op == "and":
        rp = _sig_presence(rsig, rhs.present, n) > 0
        return StepVector(lhs.labels, lhs.values, lhs.present & rp[lsig], lhs.drop_name)
    if node.op == "unless":
        rp = _sig_presence(rsig, rhs.present, n) > 0
        return StepVector(lhs.labels, lhs.values, lhs.present & ~rp[lsig], lhs.drop_name)
    lp = _sig_presence(lsig, lhs.present, n) > 0
    rpres = rhs.present & ~lp[rsig]
    drop = np.concatenate([_drops(lhs), _drops(rhs)])
    return StepVector(
        lhs.labels + rhs.labels,
        np.concatenate([lhs.values, rhs.values]),
        np.concatenate([lhs.present, rpres]),
        drop,
    )


def _drops(vec: StepVector) -> np.ndarray:
    return vec.drop_name if vec.drop_name is not None else np.zeros(vec.num_series, dtype=bool)


def _dup_error(sig_labels: Labels, side: str, a: Labels, b: Labels) -> PromQLEvalError:
    x, y = sorted([a, b])
    return PromQLEvalError(
        f"found duplicate series for the match group {labels_string(sig_labels)} on the {side} "
        f"hand-side of the operation: [{labels_string(x)}, {labels_string(y)}]"
        ";many-to-many matching not allowed: matching labels must be unique on one side"
    )


def _one_side_rows(one: StepVector, osig: np.ndarray, sigs: list[Labels], side: str) -> np.ndarray:
    """(sigs, T) table: the row of the 'one' side holding each signature at each step, or -1."""
    n = len(sigs)
    t = one.present.shape[1]
    cnt = _sig_presence(osig, one.present, n)
    if (cnt > 1).any():
        g, col = np.argwhere(cnt > 1)[0]
        dups = [i for i in range(one.num_series) if osig[i] == g and one.present[i, col]]
        raise _dup_error(sigs[g], side, one.labels[dups[0]], one.labels[dups[1]])
    table = np.full((n, t), -1, dtype=np.int64)
    rows, cols = np.nonzero(one.present)
    table[osig[rows], cols] = rows
    return table


def vector_vector(node: Binary, lhs: StepVector, rhs: StepVector) -> StepVector:
    """Arithmetic and comparison between two vectors, one-to-one or grouped."""
    lsig, rsig, sigs = _sig_ids(lhs, rhs, node)
    one_to_many = node.card == "one-to-many"
    many, one = (rhs, lhs) if one_to_many else (lhs, rhs)
    msig, osig = (rsig, lsig) if one_to_many else (lsig, rsig)
    table = _one_side_rows(one, osig, sigs, "left" if one_to_many else "right")
    t = many.present.shape[1]
    match = table[msig]  # (M, T)
    matched = many.present & (match >= 0)
    mrows, cols = np.nonzero(matched)
    orows = match[mrows, cols]
    mv = many.values[mrows, cols]
    ov = one.values[orows, cols]
    lv, rv = (ov, mv) if one_to_many else (mv, ov)
    if node.card == "one-to-one" and mrows.shape[0]:
        # Checked before comparison filtering, as Prometheus 3 does.
        per_sig = np.zeros((len(sigs), t), dtype=np.int64)
        np.add.at(per_sig, (msig[mrows], cols), 1)
        if (per_sig > 1).any():
            raise PromQLEvalError(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
            )
    is_cmp = node.op in COMPARISONS
    if is_cmp:
        ok = compare(node.op, lv, rv)
        if node.return_bool:
            vals = ok.astype(np.float64)
        else:
            vals = lv
            mrows, cols, orows, vals = mrows[ok], cols[ok], orows[ok], vals[ok]
    else:
        vals = arith(node.op, lv, rv)
    return _assemble(node, many, one, mrows, orows, cols, vals, t, is_cmp)


def _result_labels(node: Binary, many: Labels, one: Labels, is_cmp: bool) -> Labels:
    d = dict(many)
    if not is_cmp:
        d.pop(METRIC_NAME, None)
    if node.card == "one-to-one":
        if node.on:
            keep = set(node.matching)
            d = {k: v for k, v in d.items() if k in keep}
        else:
            for name in node.matching:
                d.pop(name, None)
    if node.include:
        od = dict(one)
        for name in node.include:
            if od.get(name, ""):
                d[name] = od[name]
            else:
                d.pop(name, None)
    return tuple(sorted(d.items()))


def _assemble(
    node: Binary,
    many: StepVector,
    one: StepVector,
    mrows: np.ndarray,
    orows: np.ndarray,
    cols: np.ndarray,
    vals: np.ndarray,
    t: int,
    is_cmp: bool,
) -> StepVector:
    """One output row per distinct result label set; overlapping points are errors."""
    grouped = bool(node.include) or node.card != "one-to-one"
    # Result labels depend on the 'one' row only when group_x copies labels from it.
    pair = mrows * (one.num_series + 1) + (orows if node.include else 0)
    upair, inv = np.unique(pair, return_inverse=True)
    inv = inv.ravel()
    index: dict[Labels, int] = {}
    row_of_pair = np.empty(upair.shape[0], dtype=np.int64)
    drops: list[bool] = []
    many_drop = _drops(many)
    for i, p in enumerate(upair):
        m, o = divmod(int(p), one.num_series + 1)
        lb = _result_labels(node, many.labels[m], one.labels[o] if node.include else (), is_cmp)
        j = index.get(lb)
        if j is None:
            j = index[lb] = len(index)
            drops.append(bool(node.return_bool or many_drop[m]))
        row_of_pair[i] = j
    out_rows = row_of_pair[inv]
    n = len(index)
    cnt = np.zeros((n, t), dtype=np.int64)
    np.add.at(cnt, (out_rows, cols), 1)
    if (cnt > 1).any():
        if grouped:
            raise PromQLEvalError("multiple matches for labels: grouping labels must ensure unique matches")
        raise PromQLEvalError(
            "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
        )
    values = np.zeros((n, t))
    present = np.zeros((n, t), dtype=bool)
    values[out_rows, cols] = vals
    present[out_rows, cols] = True
    return StepVector(list(index), values, present, np.array(drops, dtype=bool))
