"""Aggregation operators over (series, steps) arrays.

Series are assigned a group index once (a dict over label tuples); reductions
then run over all groups and steps together, using a stable sort by group and
``ufunc.reduceat``. Only ``sum``/``avg`` fall back to a per-member loop, and
only for groups where cancellation makes Prometheus' Kahan summation matter.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pitwall.core.labels import METRIC_NAME, Labels, without_name
from pitwall.metrics.promql.errors import PromQLEvalError
from pitwall.metrics.promql.format import format_float
from pitwall.metrics.promql.values import StepVector

Warn = Callable[[str], None]


def group_labels(labels: Labels, grouping: tuple[str, ...], without: bool) -> Labels:
    if without:
        drop = set(grouping)
        drop.add(METRIC_NAME)
        return tuple(p for p in labels if p[0] not in drop)
    keep = set(grouping)
    return tuple(p for p in labels if p[0] in keep)


def assign_groups(keys: list[Labels]) -> tuple[np.ndarray, list[Labels]]:
    """Group index per key, groups numbered in order of first appearance."""
    index: dict[Labels, int] = {}
    out = np.empty(len(keys), dtype=np.int64)
    for i, k in enumerate(keys):
        g = index.get(k)
        if g is None:
            g = index[k] = len(index)
        out[i] = g
    return out, list(index)


class Groups:
    """Series sorted by group, with segment starts for ``reduceat``."""

    def __init__(self, gidx: np.ndarray, ngroups: int) -> None:
        self.gidx = gidx
        self.n = ngroups
        self.order = np.argsort(gidx, kind="stable")
        counts = np.bincount(gidx, minlength=ngroups)
        self.counts = counts
        self.starts = np.zeros(ngroups, dtype=np.int64)
        np.cumsum(counts[:-1], out=self.starts[1:])

    def reduce(self, ufunc: np.ufunc, arr: np.ndarray) -> np.ndarray:
        """Reduce (S, T) rows per group into (G, T); every group has >= 1 member."""
        if self.n == 0:
            return np.zeros((0, *arr.shape[1:]), dtype=arr.dtype)
        out: np.ndarray = ufunc.reduceat(arr[self.order], self.starts, axis=0)
        return out


def _kahan_inc(inc: np.ndarray, s: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``kahanSumInc`` (Neumaier) from Prometheus."""
    t = s + inc
    with np.errstate(invalid="ignore"):
        big = np.abs(s) >= np.abs(inc)
        corr = np.where(big, (s - t) + inc, (inc - t) + s)
    c = np.where(np.isinf(t), 0.0, c + corr)
    return t, c


def kahan_sum(groups: Groups, vals: np.ndarray) -> np.ndarray:
    """Per-group sum; zeros stand for absent points.

    A plain sum is exact enough unless large magnitudes cancel, so the
    sequential Kahan loop only runs for groups where that may have happened.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        plain = groups.reduce(np.add, vals)
        mag = groups.reduce(np.add, np.abs(vals))
        suspect = np.isfinite(mag) & (mag > 1e6 * np.maximum(np.abs(plain), 1e-300)) & (mag > 1e15)
    rows = np.nonzero(suspect.any(axis=1))[0]
    if rows.shape[0] == 0:
        return plain
    sorted_vals = vals[groups.order]
    for g in rows:
        start, n = int(groups.starts[g]), int(groups.counts[g])
        s = np.zeros(vals.shape[1])
        c = np.zeros(vals.shape[1])
        for k in range(n):
            s, c = _kahan_inc(sorted_vals[start + k], s, c)
        plain[g] = np.where(np.isinf(s), s, s + c)
    return plain


def _welford_var(groups: Groups, values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Population variance with Welford's update, member by member like Prometheus.

    The loop runs over member positions (the largest group's size), each
    iteration vectorised over all groups and steps.
    """
    t = values.shape[1]
    n = np.zeros((groups.n, t))
    mean = np.zeros((groups.n, t))
    m2 = np.zeros((groups.n, t))
    sv = values[groups.order]
    sp = present[groups.order]
    for k in range(int(groups.counts.max()) if groups.n else 0):
        g = np.nonzero(groups.counts > k)[0]
        rows = groups.starts[g] + k
        x = sv[rows]
        p = sp[rows]
        n_new = n[g] + p
        delta = x - mean[g]
        mean_new = np.where(p, mean[g] + delta / np.maximum(n_new, 1), mean[g])
        m2[g] = np.where(p, m2[g] + delta * (x - mean_new), m2[g])
        mean[g] = mean_new
        n[g] = n_new
    return np.asarray(m2 / n)


def _avg(groups: Groups, v0: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    total = kahan_sum(groups, v0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = total / cnt
        overflow = np.isinf(total)
        if overflow.any():
            # Prometheus switches to an incremental mean when the sum overflows.
            per = v0 / np.maximum(cnt, 1)[groups.gidx]
            alt = groups.reduce(np.add, per)
            mean = np.where(overflow, alt, mean)
    return np.asarray(mean)


def simple_aggregate(op: str, vec: StepVector, grouping: tuple[str, ...], without: bool) -> StepVector:
    """sum, avg, min, max, count, group, stddev, stdvar."""
    keys = [group_labels(lb, grouping, without) for lb in vec.labels]
    gidx, out_labels = assign_groups(keys)
    groups = Groups(gidx, len(out_labels))
    present = vec.present
    cnt = groups.reduce(np.add, present.astype(np.int64))
    v0 = np.where(present, vec.values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if op == "sum":
            res = kahan_sum(groups, v0)
        elif op == "avg":
            res = _avg(groups, v0, cnt)
        elif op == "count":
            res = cnt.astype(np.float64)
        elif op == "group":
            res = np.ones(cnt.shape)
        elif op in ("min", "max"):
            vn = np.where(present, vec.values, np.nan)
            res = groups.reduce(np.fmin if op == "min" else np.fmax, vn)
        elif op in ("stddev", "stdvar"):
            var = _welford_var(groups, vec.values, present)
            res = np.sqrt(var) if op == "stddev" else var
        else:
            raise PromQLEvalError(f"unknown aggregation {op}")
    drop = _group_drop_name(vec, gidx, len(out_labels))
    return StepVector(out_labels, np.asarray(res, dtype=np.float64), cnt > 0, drop)


def _group_drop_name(vec: StepVector, gidx: np.ndarray, n: int) -> np.ndarray | None:
    """A kept ``__name__`` is still dropped later if any member series drops it."""
    if vec.drop_name is None or n == 0:
        return None
    out = np.zeros(n, dtype=bool)
    np.logical_or.at(out, gidx, vec.drop_name)
    return out


def _sorted_ranks(
    vec: StepVector, gidx: np.ndarray, primary: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Present points sorted by (step, group, primary...); rank within (step, group)."""
    rows, cols = np.nonzero(vec.present)
    g = gidx[rows]
    order = np.lexsort((*[p[rows, cols] for p in primary], g, cols))
    rows, cols, g = rows[order], cols[order], g[order]
    n = rows.shape[0]
    if n == 0:
        return rows, cols, g, np.zeros(0, dtype=np.int64)
    new_seg = np.ones(n, dtype=bool)
    new_seg[1:] = (cols[1:] != cols[:-1]) | (g[1:] != g[:-1])
    seg_start = np.maximum.accumulate(np.where(new_seg, np.arange(n), 0))
    rank = np.arange(n) - seg_start
    return rows, cols, g, rank


def _int_param(k: np.ndarray, name: str) -> np.ndarray:
    if np.isnan(k).any():
        raise PromQLEvalError(f"{name} value is NaN")
    with np.errstate(invalid="ignore"):
        clipped = np.clip(k, -(2.0**62), 2.0**62)
    return np.asarray(clipped).astype(np.int64)


def topk(op: str, vec: StepVector, k: np.ndarray, grouping: tuple[str, ...], without: bool) -> StepVector:
    """topk / bottomk: keeps the input series; instant results ordered by rank."""
    ks = _int_param(k, "Parameter")
    keys = [group_labels(lb, grouping, without) for lb in vec.labels]
    gidx, _ = assign_groups(keys)
    v = vec.values
    isnan = np.isnan(v)
    # NaN always ranks last; lexsort takes the last key as primary.
    key = np.where(isnan, 0.0, -v if op == "topk" else v)
    rows, cols, g, rank = _sorted_ranks(vec, gidx, np.stack([key, isnan.astype(np.float64)]))
    keep = rank < ks[cols]
    present = np.zeros_like(vec.present)
    present[rows[keep], cols[keep]] = True
    return _ordered_subset(vec, present, rows[keep], cols[keep], g[keep], rank[keep])


def _ordered_subset(
    vec: StepVector, present: np.ndarray, rows: np.ndarray, cols: np.ndarray, g: np.ndarray, rank: np.ndarray
) -> StepVector:
    """Series that are selected at some step, ordered by (group, rank) of their first step."""
    used = present.any(axis=1)
    first_col = np.where(present, np.arange(present.shape[1])[None, :], present.shape[1]).min(axis=1)
    pos_g = np.zeros(vec.num_series, dtype=np.int64)
    pos_r = np.zeros(vec.num_series, dtype=np.int64)
    at_first = cols == first_col[rows]
    pos_g[rows[at_first]] = g[at_first]
    pos_r[rows[at_first]] = rank[at_first]
    idx = np.nonzero(used)[0]
    idx = idx[np.lexsort((pos_r[idx], pos_g[idx]))]
    drop = vec.drop_name[idx] if vec.drop_name is not None else None
    return StepVector([vec.labels[i] for i in idx], vec.values[idx], present[idx], drop)


def quantile(
    vec: StepVector, q: np.ndarray, grouping: tuple[str, ...], without: bool, warn: Warn
) -> StepVector:
    """``quantile(q, v)``: linear interpolation between closest ranks, as Prometheus."""
    keys = [group_labels(lb, grouping, without) for lb in vec.labels]
    gidx, out_labels = assign_groups(keys)
    ng = len(out_labels)
    t = vec.present.shape[1]
    for qv in np.unique(q):
        if np.isnan(qv) or qv < 0 or qv > 1:
            warn(f"quantile value should be between 0 and 1, got {format_float(float(qv))}")
    v = vec.values
    isnan = np.isnan(v)
    key = np.where(isnan, -np.inf, v)
    # NaN sorts first, like Go's sort.Float64s.
    rows, cols, g, rank = _sorted_ranks(vec, gidx, np.stack([key, (~isnan).astype(np.float64)]))
    cnt = np.zeros((ng, t), dtype=np.int64)
    np.add.at(cnt, (g, cols), 1)
    seg_start = np.zeros((ng, t), dtype=np.int64)
    seg_start[g[rank == 0], cols[rank == 0]] = np.nonzero(rank == 0)[0]
    sorted_vals = v[rows, cols]
    out = np.full((ng, t), np.nan)
    present = cnt > 0
    gg, tt = np.nonzero(present)
    qq = q[tt]
    n = cnt[gg, tt]
    with np.errstate(invalid="ignore"):
        r = qq * (n - 1)
        lower = np.clip(np.floor(np.nan_to_num(r)), 0, n - 1).astype(np.int64)
        upper = np.minimum(lower + 1, n - 1)
        weight = r - np.floor(r)
        base = seg_start[gg, tt]
        lv = sorted_vals[base + lower] if sorted_vals.shape[0] else np.zeros(0)
        uv = sorted_vals[base + upper] if sorted_vals.shape[0] else np.zeros(0)
        res = lv * (1 - weight) + uv * weight
    res = np.where(np.isnan(qq), np.nan, np.where(qq < 0, -np.inf, np.where(qq > 1, np.inf, res)))
    out[gg, tt] = res
    drop = _group_drop_name(vec, gidx, ng)
    return StepVector(out_labels, out, present, drop)


def count_values(vec: StepVector, label: str, grouping: tuple[str, ...], without: bool) -> StepVector:
    """``count_values("l", v)``: one output series per group and distinct value."""
    rows, cols = np.nonzero(vec.present)
    keys = [group_labels(lb, grouping, without) for lb in vec.labels]
    gidx, glabels = assign_groups(keys)
    vals = vec.values[rows, cols]
    uniq, inv = np.unique(vals, return_inverse=True)
    texts = [format_float(float(u)) for u in uniq]
    combo = gidx[rows] * max(len(uniq), 1) + inv.ravel()
    ucombo, cinv = np.unique(combo, return_inverse=True)
    t = vec.present.shape[1]
    counts = np.zeros((ucombo.shape[0], t))
    np.add.at(counts, (cinv.ravel(), cols), 1.0)
    labels: list[Labels] = []
    for c in ucombo:
        g, u = divmod(int(c), max(len(uniq), 1))
        d = dict(glabels[g])
        d[label] = texts[u]
        labels.append(tuple(sorted(d.items())))
    return StepVector(labels, counts, counts > 0)


def limitk(vec: StepVector, k: np.ndarray, grouping: tuple[str, ...], without: bool) -> StepVector:
    """``limitk(k, v)``: the first k series of each group (in input order) at each step."""
    ks = _int_param(k, "Parameter")
    keys = [group_labels(lb, grouping, without) for lb in vec.labels]
    gidx, _ = assign_groups(keys)
    order_key = np.broadcast_to(np.arange(vec.num_series, dtype=np.float64)[:, None], vec.present.shape)
    rows, cols, g, rank = _sorted_ranks(vec, gidx, np.stack([order_key]))
    keep = rank < ks[cols]
    present = np.zeros_like(vec.present)
    present[rows[keep], cols[keep]] = True
    return _ordered_subset(vec, present, rows[keep], cols[keep], g[keep], rank[keep])


def limit_ratio(vec: StepVector, ratio: np.ndarray, warn: Warn) -> StepVector:
    """``limit_ratio(r, v)``: a deterministic sample of series by label hash.

    As Prometheus' ``HashRatioSampler``: a series' offset is its labels' hash
    (``labels.Hash()``, XXH64) over the largest uint64; it is kept where the
    offset is below ``r`` (or, for negative ``r``, at least ``1 + r``).
    """
    if np.isnan(ratio).any():
        raise PromQLEvalError("Ratio value is NaN")
    for r in np.unique(ratio):
        if r < -1 or r > 1:
            warn(
                f"ratio value should be between -1 and 1, got {format_float(float(r))}, capping to {1 if r > 0 else -1}"
            )
    r = np.clip(ratio, -1.0, 1.0)
    drops = vec.drop_name if vec.drop_name is not None else np.zeros(vec.num_series, dtype=bool)
    sample = np.array(
        [_ratio_of(without_name(lb) if d else lb) for lb, d in zip(vec.labels, drops.tolist(), strict=True)],
        dtype=np.float64,
    ).reshape(-1, 1)
    keep = np.where(r[None, :] >= 0, sample < r[None, :], sample >= 1.0 + r[None, :])
    present = vec.present & keep
    return StepVector(vec.labels, vec.values, present, vec.drop_name)


def _ratio_of(labels: Labels) -> float:
    data = b"".join(k.encode() + b"\xff" + v.encode() + b"\xff" for k, v in labels)
    return float(xxh64(data)) / float(_U64)


_U64 = 1 << 64
_M64 = _U64 - 1
_P1 = 11400714785074694791
_P2 = 14029467366897019727
_P3 = 1609587929392839161
_P4 = 9650029242287828579
_P5 = 2870177450012600261


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * _P2) & _M64, 31) * _P1) & _M64


def xxh64(data: bytes, seed: int = 0) -> int:
    """XXH64 of ``data`` (Go's ``xxhash.Sum64`` with seed 0), as Prometheus hashes labels."""
    n = len(data)
    i = 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _M64, (seed + _P2) & _M64, seed & _M64, (seed - _P1) & _M64]
        while i + 32 <= n:
            for j in range(4):
                v[j] = _round(v[j], int.from_bytes(data[i + 8 * j : i + 8 * j + 8], "little"))
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M64
        for lane in v:
            h = ((h ^ _round(0, lane)) * _P1 + _P4) & _M64
    else:
        h = (seed + _P5) & _M64
    h = (h + n) & _M64
    while i + 8 <= n:
        h ^= _round(0, int.from_bytes(data[i : i + 8], "little"))
        h = (_rotl(h, 27) * _P1 + _P4) & _M64
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(data[i : i + 4], "little") * _P1) & _M64
        h = (_rotl(h, 23) * _P2 + _P3) & _M64
        i += 4
    while i < n:
        h ^= (data[i] * _P5) & _M64
        h = (_rotl(h, 11) * _P1) & _M64
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    h = (h * _P3) & _M64
    h ^= h >> 32
    return h
