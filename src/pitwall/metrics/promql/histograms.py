"""``histogram_quantile`` and ``histogram_fraction`` over classic histograms.

A classic histogram is a set of float series that differ only in their ``le``
(upper bound) label and carry cumulative counts. Series are grouped by all
labels except ``le``; for every (group, step) the buckets present at that step
are evaluated as Prometheus 3's ``BucketQuantile`` / ``BucketFraction``
(promql/quantile.go) would: sort by upper bound, merge equal bounds, require a
``+Inf`` bucket, fix non-monotonic counts (quantile only), interpolate linearly.

The work is vectorised over groups and steps: each (group, step) is a row of a
(rows, buckets) matrix whose present buckets are compacted to the left, and the
per-bucket loops of the Go code run column by column over all rows at once.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from pitwall.core.gofmt import go_quote
from pitwall.core.labels import METRIC_NAME, Labels, labels_get, metric_name
from pitwall.metrics.promql.range_functions import WarnFn, go_format_g
from pitwall.metrics.promql.values import StepVector

BUCKET_LABEL = "le"

# Relative difference between neighbouring buckets below which Prometheus
# treats it as floating-point noise rather than non-monotonicity.
SMALL_DELTA_TOLERANCE = 1e-12

_MIN_NORMAL = sys.float_info.min  # smallest positive normal float64, as Go's almost.Equal
_MAX_FLOAT = sys.float_info.max

# Rows x buckets evaluated per chunk, to bound memory on very large inputs.
_CHUNK_ELEMENTS = 4_000_000

_MONOTONICITY_INFO = (
    "input to histogram_quantile needed to be fixed for monotonicity "
    "(see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile)"
)


# --------------------------------------------------------------------------
# Grouping series into histograms.


def parse_go_float(text: str) -> float | None:
    """Go's ``strconv.ParseFloat(text, 64)``; None where Go returns an error."""
    if not text or text != text.strip() or "_" in text:
        return None
    lowered = text.lower().lstrip("+-")
    try:
        value = float(text)
    except ValueError:
        if not lowered.startswith("0x"):
            return None
        try:
            value = float.fromhex(text)
        except ValueError:
            return None
    # Go reports overflow ("1e400") as an error rather than returning Inf.
    if math.isinf(value) and lowered not in ("inf", "infinity"):
        return None
    return value


@dataclass
class _Buckets:
    """Classic histograms of one input vector, buckets sorted and de-duplicated."""

    labels: list[Labels]  # output labels per group (no ``le``, no ``__name__``)
    names: list[str]  # metric name per group, for annotations
    group: np.ndarray  # int (B,): group of each bucket row, ascending
    upper: np.ndarray  # float (B,): upper bound, ascending within a group
    counts: np.ndarray  # float (B, T): cumulative count (0 where absent)
    present: np.ndarray  # bool (B, T)


def _bad_bucket_warning(labels: Labels) -> str:
    name = metric_name(labels)
    text = f'bucket label "le" is missing or has a malformed value of {go_quote(labels_get(labels, BUCKET_LABEL))}'
    return f"{text} for metric name {go_quote(name)}" if name else text


def _group_buckets(vec: StepVector, warn: WarnFn) -> _Buckets:
    """Group series by labels without ``le``; warn about unusable ``le`` values."""
    keys: dict[Labels, int] = {}
    out_labels: list[Labels] = []
    names: list[str] = []
    rows: list[int] = []
    groups: list[int] = []
    uppers: list[float] = []
    warned: set[str] = set()
    for s, labels in enumerate(vec.labels):
        upper = parse_go_float(labels_get(labels, BUCKET_LABEL))
        if upper is None:
            message = _bad_bucket_warning(labels)
            if vec.present[s].any() and message not in warned:
                warned.add(message)
                warn(message)
            continue
        key = tuple(p for p in labels if p[0] != BUCKET_LABEL)
        gid = keys.setdefault(key, len(keys))
        if gid == len(out_labels):
            out_labels.append(tuple(p for p in key if p[0] != METRIC_NAME))
            names.append(metric_name(key))
        rows.append(s)
        groups.append(gid)
        uppers.append(upper)
    return _coalesce(vec, out_labels, names, np.array(rows, dtype=np.int64), groups, uppers)


def _coalesce(
    vec: StepVector,
    labels: list[Labels],
    names: list[str],
    rows: np.ndarray,
    groups: list[int],
    uppers: list[float],
) -> _Buckets:
    """Sort buckets by (group, upper bound) and merge equal bounds (``coalesceBuckets``)."""
    group = np.array(groups, dtype=np.int64)
    upper = np.array(uppers, dtype=np.float64)
    order = np.lexsort((upper, group))
    group, upper, rows = group[order], upper[order], rows[order]
    present = vec.present[rows]
    counts = np.where(present, vec.values[rows], 0.0)
    if len(rows):
        new_run = np.ones(len(rows), dtype=bool)
        new_run[1:] = (group[1:] != group[:-1]) | (upper[1:] != upper[:-1])
        starts = np.flatnonzero(new_run)
        counts = np.add.reduceat(counts, starts, axis=0)
        present = np.logical_or.reduceat(present, starts, axis=0)
        group, upper = group[starts], upper[starts]
    return _Buckets(labels, names, group, upper, counts, present)


# --------------------------------------------------------------------------
# Rows: one (group, step) each, present buckets compacted to the left.


@dataclass
class _Rows:
    group: np.ndarray  # int (R,)
    step: np.ndarray  # int (R,)
    n: np.ndarray  # int (R,): number of present buckets
    upper: np.ndarray  # float (R, K)
    counts: np.ndarray  # float (R, K)

    def at(self, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Upper bound and count of bucket ``col[r]`` of each row (clipped to range)."""
        idx = np.clip(col, 0, self.upper.shape[1] - 1)[:, None]
        return (
            np.take_along_axis(self.upper, idx, axis=1)[:, 0],
            np.take_along_axis(self.counts, idx, axis=1)[:, 0],
        )


def _iter_rows(b: _Buckets, num_steps: int) -> Iterator[_Rows]:
    """Chunks of (group, step) rows that have at least one bucket present."""
    num_groups = len(b.labels)
    if not num_groups or not num_steps:
        return
    first = np.searchsorted(b.group, np.arange(num_groups))
    sizes = np.bincount(b.group, minlength=num_groups)
    width = int(sizes.max())
    col = np.arange(width)
    inside = col[None, :] < sizes[:, None]
    bucket_idx = np.where(inside, first[:, None] + col[None, :], 0)  # (G, K)
    per_chunk = max(1, _CHUNK_ELEMENTS // (width * num_steps))
    for start in range(0, num_groups, per_chunk):
        g = slice(start, min(num_groups, start + per_chunk))
        yield from _chunk_rows(b, bucket_idx[g], inside[g], start)


def _chunk_rows(b: _Buckets, bucket_idx: np.ndarray, inside: np.ndarray, g0: int) -> Iterator[_Rows]:
    # (G, K, T) -> (G, T, K): one row per (group, step).
    present = (b.present[bucket_idx] & inside[:, :, None]).transpose(0, 2, 1)
    counts = b.counts[bucket_idx].transpose(0, 2, 1)
    upper = np.broadcast_to(b.upper[bucket_idx][:, None, :], counts.shape)
    _, num_t, width = counts.shape
    present = present.reshape(-1, width)
    n = present.sum(axis=1)
    keep = np.flatnonzero(n > 0)
    if not len(keep):
        return
    # Stable sort puts present buckets first, keeping ascending upper bounds.
    order = np.argsort(~present[keep], axis=1, kind="stable")
    yield _Rows(
        group=g0 + keep // num_t,
        step=keep % num_t,
        n=n[keep],
        upper=np.take_along_axis(upper.reshape(-1, width)[keep], order, axis=1),
        counts=np.take_along_axis(counts.reshape(-1, width)[keep], order, axis=1),
    )


# --------------------------------------------------------------------------
# BucketQuantile.


def _almost_equal(a: np.ndarray, b: np.ndarray, epsilon: float) -> np.ndarray:
    """Prometheus' ``almost.Equal`` (relative tolerance), element-wise."""
    abs_sum = np.abs(a) + np.abs(b)
    diff = np.abs(a - b)
    tiny = (a == 0) | (b == 0) | (abs_sum < _MIN_NORMAL)
    close = np.where(tiny, diff < epsilon * _MIN_NORMAL, diff / np.minimum(abs_sum, _MAX_FLOAT) < epsilon)
    equal: np.ndarray = (np.isnan(a) & np.isnan(b)) | (a == b) | close
    return equal


@dataclass
class _Monotonicity:
    forced: np.ndarray  # bool (R,)
    min_bucket: np.ndarray  # float (R,)
    max_bucket: np.ndarray  # float (R,)
    max_diff: np.ndarray  # float (R,)


def _ensure_monotonic(rows: _Rows, active: np.ndarray) -> _Monotonicity:
    """``ensureMonotonicAndIgnoreSmallDeltas`` on the active rows, in place."""
    r = len(rows.n)
    fix = _Monotonicity(np.zeros(r, bool), np.full(r, np.inf), np.full(r, -np.inf), np.zeros(r))
    counts = rows.counts
    prev = counts[:, 0].copy()
    for j in range(1, counts.shape[1]):
        curr = counts[:, j]
        live = active & (j < rows.n) & (curr != prev)
        small = live & _almost_equal(prev, curr, SMALL_DELTA_TOLERANCE)
        drop = live & ~small & (curr < prev)
        ub = rows.upper[:, j]
        fix.min_bucket = np.where(drop, np.minimum(fix.min_bucket, ub), fix.min_bucket)
        fix.max_bucket = np.where(drop, np.maximum(fix.max_bucket, ub), fix.max_bucket)
        fix.max_diff = np.where(drop & (prev - curr > fix.max_diff), prev - curr, fix.max_diff)
        fix.forced |= drop
        # Neither a noise-level nor a decreasing count moves the envelope.
        counts[:, j] = np.where(small | drop, prev, curr)
        prev = np.where(live & ~small & ~drop, curr, prev)
    return fix


def _search(rows: _Rows, rank: np.ndarray) -> np.ndarray:
    """Go's ``sort.Search(n-1, counts[i] >= rank)``, row-wise (binary search, same probes)."""
    lo = np.zeros(len(rows.n), dtype=np.int64)
    hi = np.maximum(rows.n - 1, 0)
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo
        mid = (lo + hi) // 2
        _, c = rows.at(mid)
        ok = c >= rank
        hi = np.where(open_ & ok, mid, hi)
        lo = np.where(open_ & ~ok, mid + 1, lo)


def _bucket_quantile(q: np.ndarray, rows: _Rows) -> tuple[np.ndarray, _Monotonicity]:
    """``BucketQuantile`` for every row; q per row."""
    last_ub, _ = rows.at(rows.n - 1)
    valid_q = (q >= 0) & (q <= 1)
    active = valid_q & (last_ub == np.inf)
    fix = _ensure_monotonic(rows, active)
    _, observations = rows.at(rows.n - 1)
    rank = q * observations
    b = _search(rows, rank)
    ub_b, c_b = rows.at(b)
    ub_prev, c_prev = rows.at(b - 1)
    ub_second, _ = rows.at(rows.n - 2)
    ub_first, _ = rows.at(np.zeros_like(b))
    has_prev = b > 0
    start = np.where(has_prev, ub_prev, 0.0)
    count = c_b - np.where(has_prev, c_prev, 0.0)
    in_rank = rank - np.where(has_prev, c_prev, 0.0)
    result = start + (ub_b - start) * (in_rank / count)
    result = np.where((b == 0) & (ub_first <= 0), ub_first, result)
    result = np.where(b == rows.n - 1, ub_second, result)
    result = np.where((rows.n < 2) | (observations == 0), np.nan, result)
    result = np.where(active, result, np.nan)
    result = np.where(q < 0, -np.inf, np.where(q > 1, np.inf, result))
    return result, fix


@dataclass
class _ForcedStats:
    """What Prometheus' merged monotonicity info reports for one metric name."""

    min_ts: int
    max_ts: int
    min_bucket: float
    max_bucket: float
    max_diff: float
    count: int

    def merge(self, other: _ForcedStats) -> None:
        self.min_ts, self.max_ts = min(self.min_ts, other.min_ts), max(self.max_ts, other.max_ts)
        self.min_bucket = min(self.min_bucket, other.min_bucket)
        self.max_bucket = max(self.max_bucket, other.max_bucket)
        self.max_diff = max(self.max_diff, other.max_diff)
        self.count += other.count


def _collect_forced(
    rows: _Rows,
    fix: _Monotonicity,
    names: list[str],
    step_times: np.ndarray | None,
    into: dict[str, _ForcedStats],
) -> None:
    """Fold the rows whose monotonicity was forced into per-metric-name statistics."""
    forced = np.flatnonzero(fix.forced)
    if not len(forced):
        return
    ts = step_times[rows.step[forced]] if step_times is not None else np.zeros(len(forced), np.int64)
    row_names = np.array([names[int(g)] for g in rows.group[forced]], dtype=object)
    for name in dict.fromkeys(row_names.tolist()):
        sel = row_names == name
        stats = _ForcedStats(
            min_ts=int(ts[sel].min()),
            max_ts=int(ts[sel].max()),
            min_bucket=float(fix.min_bucket[forced][sel].min()),
            max_bucket=float(fix.max_bucket[forced][sel].max()),
            max_diff=float(fix.max_diff[forced][sel].max()),
            count=int(sel.sum()),
        )
        if name in into:
            into[name].merge(stats)
        else:
            into[name] = stats


def _rfc3339(ms: int) -> str:
    # Go divides the millisecond timestamp by 1000, truncating toward zero.
    seconds = -((-ms) // 1000) if ms < 0 else ms // 1000
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _emit_monotonicity(stats: dict[str, _ForcedStats], with_stats: bool, info: WarnFn) -> None:
    for name, st in stats.items():
        text = _MONOTONICITY_INFO + (f" for metric name {go_quote(name)}" if name else "")
        if with_stats:
            text += (
                f", from buckets {go_format_g(st.min_bucket)} to {go_format_g(st.max_bucket)}, "
                f"with a max diff of {go_format_g(st.max_diff, 2)}, over {st.count} samples "
                f"from {_rfc3339(st.min_ts)} to {_rfc3339(st.max_ts)}"
            )
        info(text)


def _warn_invalid_quantiles(phi: np.ndarray, warn: WarnFn) -> None:
    seen: set[str] = set()
    for q in phi[np.isnan(phi) | (phi < 0) | (phi > 1)]:
        text = go_format_g(float(q))
        if text not in seen:
            seen.add(text)
            warn(f"quantile value should be between 0 and 1, got {text}")


def histogram_quantile(
    phi: np.ndarray,
    vec: StepVector,
    warn: WarnFn,
    info: WarnFn,
    step_times: np.ndarray | None = None,
) -> StepVector:
    """φ-quantile of each classic histogram in ``vec`` at every step.

    ``phi`` has one value per step. ``step_times`` (ms, per step) only feeds
    the monotonicity info's time range; without it the info omits its
    statistics suffix.
    """
    phi = np.asarray(phi, dtype=np.float64)
    _warn_invalid_quantiles(phi, warn)
    b = _group_buckets(vec, warn)
    values, present = _output_arrays(len(b.labels), vec.values.shape[1])
    stats: dict[str, _ForcedStats] = {}
    with np.errstate(all="ignore"):
        for rows in _iter_rows(b, vec.values.shape[1]):
            result, fix = _bucket_quantile(phi[rows.step], rows)
            values[rows.group, rows.step] = result
            present[rows.group, rows.step] = True
            _collect_forced(rows, fix, b.names, step_times, stats)
    _emit_monotonicity(stats, step_times is not None, info)
    return StepVector(labels=b.labels, values=values, present=present)


def _output_arrays(num_groups: int, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((num_groups, num_steps), np.nan), np.zeros((num_groups, num_steps), dtype=bool)


# --------------------------------------------------------------------------
# BucketFraction.


def _bucket_fraction(lower: np.ndarray, upper: np.ndarray, rows: _Rows) -> np.ndarray:
    """``BucketFraction`` for every row: share of observations in (lower, upper]."""
    last_ub, count = rows.at(rows.n - 1)
    r = len(rows.n)
    lower_rank, upper_rank = np.zeros(r), np.zeros(r)
    lower_set, upper_set = np.zeros(r, bool), np.zeros(r, bool)
    first_lower = np.where(rows.upper[:, 0] <= 0, -np.inf, 0.0)
    rank = np.zeros(r)
    for j in range(rows.upper.shape[1]):
        live = j < rows.n
        lb = first_lower if j == 0 else rows.upper[:, j - 1]
        ub, c = rows.upper[:, j], rows.counts[:, j]
        hit = live & ~lower_set & (lb >= lower)
        lower_rank, lower_set = np.where(hit, rank, lower_rank), lower_set | hit
        hit = live & ~upper_set & (lb >= upper)
        upper_rank, upper_set = np.where(hit, rank, upper_rank), upper_set | hit
        # Linear interpolation inside the bucket; counts are cumulative.
        hit = live & ~lower_set & (lb < lower) & (ub > lower)
        lower_rank, lower_set = (
            np.where(hit, _interpolate(lower, lb, ub, rank, c), lower_rank),
            lower_set | hit,
        )
        hit = live & ~upper_set & (lb < upper) & (ub > upper)
        upper_rank, upper_set = (
            np.where(hit, _interpolate(upper, lb, ub, rank, c), upper_rank),
            upper_set | hit,
        )
        rank = np.where(live, c, rank)
    lower_rank = np.where(~lower_set | (lower_rank > count), count, lower_rank)
    upper_rank = np.where(~upper_set | (upper_rank > count), count, upper_rank)
    result = (upper_rank - lower_rank) / count
    result = np.where(lower >= upper, 0.0, result)
    invalid = (last_ub != np.inf) | (count == 0) | np.isnan(lower) | np.isnan(upper)
    return np.where(invalid, np.nan, result)


def _interpolate(
    v: np.ndarray, lb: np.ndarray, ub: np.ndarray, rank: np.ndarray, count: np.ndarray
) -> np.ndarray:
    # The lowest bucket of a histogram reaching below zero has no lower bound
    # to interpolate from: it contributes its whole count.
    return np.where(lb == -np.inf, count, rank + (count - rank) * (v - lb) / (ub - lb))


def histogram_fraction(
    lower: np.ndarray, upper: np.ndarray, vec: StepVector, warn: WarnFn, info: WarnFn
) -> StepVector:
    """Estimated share of observations between ``lower`` and ``upper`` (per step)."""
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    b = _group_buckets(vec, warn)
    values, present = _output_arrays(len(b.labels), vec.values.shape[1])
    with np.errstate(all="ignore"):
        for rows in _iter_rows(b, vec.values.shape[1]):
            values[rows.group, rows.step] = _bucket_fraction(lower[rows.step], upper[rows.step], rows)
            present[rows.group, rows.step] = True
    return StepVector(labels=b.labels, values=values, present=present)
