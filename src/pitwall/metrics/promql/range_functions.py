"""PromQL functions over range vectors (``rate``, ``*_over_time``...), vectorised.

Every function takes a :class:`RangeSamples` (all series' samples flat, plus the
``[lo, hi)`` sample window of every series at every step) and answers one float
per (series, step) at once, as Prometheus 3's ``promql/functions.go`` would
answer step by step.

Three evaluation strategies keep this fast without drifting from Prometheus'
floating-point results:

- Closed forms on window endpoints (``rate``, ``irate``, ``last_over_time``...)
  index the flat arrays with ``lo``/``hi`` directly.
- Counts (``changes``, ``resets``, counter resets) use integer prefix sums,
  which are exact.
- Sequential algorithms whose rounding matters (Kahan sums, incremental means,
  regression, Holt-Winters) run "column by column": windows are sorted by
  sample count, and step ``j`` of the Go loop is applied to all windows that
  have a ``j``-th sample in one numpy operation. This reproduces Prometheus'
  order of operations exactly at the cost of O(samples per window) numpy calls.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from pitwall.core.errors import BadData
from pitwall.core.gofmt import go_quote
from pitwall.core.labels import METRIC_NAME, Labels, metric_name
from pitwall.core.native import optional_module
from pitwall.metrics.promql.values import RangeSamples

WarnFn = Callable[[str], None]
RangeFunction = Callable[[RangeSamples, list[np.ndarray], WarnFn, WarnFn], tuple[np.ndarray, np.ndarray]]

Result = tuple[np.ndarray, np.ndarray]

# Windows x samples handled per chunk when a window's samples must be
# materialised as a padded matrix (quantiles): bounds memory to ~32 MB.
_PAD_CHUNK_ELEMENTS = 4_000_000

# Integer-valued data whose absolute sum stays below this is summed exactly by
# a plain prefix sum, which then equals Prometheus' Kahan result bit for bit.
_EXACT_INT_LIMIT = float(2**53)

# Windows per block in the column-wise evaluation (see _Columns).
_COLUMN_BLOCK = 1 << 15

_COUNTER_SUFFIXES = ("_total", "_sum", "_count", "_bucket")

# Window loops in C (pitwall/_native/metricsc.c); optional: not built without a compiler.
_metricsc: Any = optional_module("pitwall._metricsc")


class FunctionArgError(BadData):
    """A PromQL function argument outside its domain (e.g. a smoothing factor of 1)."""


# --------------------------------------------------------------------------
# Go-compatible formatting for annotation and error texts.


def _decimal_digits(x: float, prec: int | None) -> tuple[str, int]:
    """Significant digits (no trailing zeros) and decimal point position of |x|.

    ``prec`` None gives the shortest round-trip digits, as Go's ``-1`` precision.
    """
    text = repr(abs(x)) if prec is None else f"{abs(x):.{max(prec, 1) - 1}e}"
    mantissa, _, exp_text = text.partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    all_digits = int_part + frac_part
    digits = all_digits.lstrip("0")
    # Go's convention: |x| = 0.<digits> * 10**dp.
    dp = len(int_part) - (len(all_digits) - len(digits)) + (int(exp_text) if exp_text else 0)
    digits = digits.rstrip("0")
    if not digits:
        return "0", 1
    return digits, dp


def go_format_g(x: float, prec: int | None = None) -> str:
    """Go's ``%g`` (``prec`` None) or ``%.<prec>g`` formatting of a float64."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    digits, dp = _decimal_digits(x, prec)
    nd = len(digits)
    p = nd if prec is None else max(prec, 1)
    eprec = p
    if eprec > nd and nd >= dp:
        eprec = nd
    if prec is None:
        eprec = 6
    exp = dp - 1
    if exp < -4 or exp >= eprec:
        frac = digits[1 : min(p, nd)]
        exp_sign = "+" if exp >= 0 else "-"
        return f"{sign}{digits[0]}{'.' + frac if frac else ''}e{exp_sign}{abs(exp):02d}"
    if p > dp:
        p = nd
    decimals = max(p - dp, 0)
    if dp <= 0:
        int_text = "0"
        frac = ("0" * -dp + digits)[:decimals].ljust(decimals, "0")
    else:
        int_text = digits[:dp].ljust(dp, "0")
        frac = digits[dp : dp + decimals].ljust(decimals, "0")
    return f"{sign}{int_text}{'.' + frac if decimals else ''}"


def go_format_f(x: float) -> str:
    """Go's ``%f`` (six decimals; ``NaN``/``+Inf``/``-Inf`` spelled as Go does)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return f"{x:.6f}"


# --------------------------------------------------------------------------
# Shared machinery.

_F = TypeVar("_F", bound=Callable[..., Any])


def _quiet(fn: _F) -> _F:
    """Run ``fn`` with numpy float warnings off: NaN/Inf results are intended."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _empty(rs: RangeSamples) -> Result:
    shape = rs.lo.shape
    return np.full(shape, np.nan), np.zeros(shape, dtype=bool)


def _scatter(rs: RangeSamples, windows: np.ndarray, values: np.ndarray) -> Result:
    """(S, T) result arrays with ``values`` at the flat window indices ``windows``."""
    out, present = _empty(rs)
    out.ravel()[windows] = values
    present.ravel()[windows] = True
    return out, present


def _windows(rs: RangeSamples, min_count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices, first sample and sample count of windows with >= min_count samples."""
    lo = rs.lo.ravel()
    cnt = rs.hi.ravel() - lo
    win = np.flatnonzero(cnt >= min_count)
    return win, lo[win], cnt[win]


def _step_of(rs: RangeSamples, windows: np.ndarray) -> np.ndarray:
    """Step index of each flat window index."""
    steps: np.ndarray = windows % max(rs.lo.shape[1], 1)
    return steps


class _Columns:
    """Windows sorted by sample count, walked sample position by sample position.

    Iterating yields ``(j, sl, idx)``: the windows ``sl`` (a slice of the
    count-sorted order) have a ``j``-th sample, whose flat index is ``idx``.
    State arrays in that order are updated in place on ``[sl]``; blocks of
    windows are walked one after the other.
    """

    def __init__(self, rs: RangeSamples, min_count: int = 1) -> None:
        win, lo, cnt = _windows(rs, min_count)
        order = np.argsort(-cnt, kind="stable")
        self.windows = win[order]
        self.lo = lo[order]
        self.cnt = cnt[order]
        self.size = len(self.windows)
        self.max_count = int(self.cnt[0]) if self.size else 0

    def __iter__(self) -> Iterator[tuple[int, slice, np.ndarray]]:
        # Blocks of windows keep each column's temporaries in cache.
        for b0 in range(0, self.size, _COLUMN_BLOCK):
            block_cnt = self.cnt[b0 : b0 + _COLUMN_BLOCK]
            active = np.searchsorted(-block_cnt, -np.arange(int(block_cnt[0])), side="left")
            for j, k in enumerate(active.tolist()):
                yield j, slice(b0, b0 + k), self.lo[b0 : b0 + k] + j


def _kahan_inc(inc: np.ndarray, s: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prometheus' ``kahansum.Inc`` (Neumaier variant), element-wise."""
    t = s + inc
    big = np.abs(s) >= np.abs(inc)
    # (s - t) + inc where |s| >= |inc|, else (inc - t) + s: the same operations, fewer numpy calls.
    comp = np.where(big, s, inc)
    comp -= t
    comp += np.where(big, inc, s)
    comp += c
    inf = np.isinf(t)
    if inf.any():
        comp[inf] = 0.0
    return t, comp


def _exact_integer_sums(values: np.ndarray) -> bool:
    """True when a plain prefix sum over ``values`` is exact (finite integers, small)."""
    if values.size == 0:
        return True
    if not np.all(np.isfinite(values)):
        return False
    return bool(np.all(values == np.round(values))) and float(np.abs(values).sum()) < _EXACT_INT_LIMIT


def _prefix(x: np.ndarray) -> np.ndarray:
    """Prefix sums with a leading zero: sum of x[a:b] is P[b] - P[a]."""
    out = np.zeros(len(x) + 1, dtype=np.result_type(x.dtype, np.int64))
    np.cumsum(x, out=out[1:])
    return out


def _pair_flags(rs: RangeSamples, flags: np.ndarray) -> np.ndarray:
    """Clear flags of the pair (i-1, i) where i starts a new series."""
    starts = rs.offsets[1:-1]
    starts = starts[(starts > 0) & (starts < len(flags))]
    flags[starts] = False
    return flags


# --------------------------------------------------------------------------
# rate, increase, delta.


def _reset_flags(rs: RangeSamples) -> np.ndarray:
    """flags[i]: sample i is lower than sample i-1 of the same series."""
    v = rs.values
    flags = np.zeros(len(v), dtype=bool)
    flags[1:] = v[1:] < v[:-1]
    return _pair_flags(rs, flags)


class _ResetCorrection:
    """Counter-reset corrections: the pre-reset value of each reset in a window.

    Windows with resets are found with an exact integer prefix sum; only those
    are summed sequentially, in the same order as Prometheus adds them.
    """

    def __init__(self, rs: RangeSamples) -> None:
        flags = _reset_flags(rs)
        self.any = bool(flags.any())
        if self.any:
            self.resets = _prefix(flags.astype(np.int64))
            self.corr = np.zeros(len(rs.values))
            self.corr[1:] = np.where(flags[1:], rs.values[:-1], 0.0)
            self.exact = _prefix(self.corr) if _exact_integer_sums(self.corr[flags]) else None

    def apply(self, result: np.ndarray, first: np.ndarray, last: np.ndarray, valid: np.ndarray) -> None:
        """Add the corrections to ``result`` in place (all arrays of one shape)."""
        if not self.any:
            return
        n_resets = self.resets.take(last + 1, mode="clip") - self.resets.take(first + 1, mode="clip")
        sel = np.flatnonzero(valid & (n_resets > 0))
        if not len(sel):
            return
        f, lst = first.ravel()[sel], last.ravel()[sel]
        acc = result.ravel()[sel]
        if self.exact is not None:
            # Integer corrections: the prefix sum is exact, so equals Go's loop.
            result.ravel()[sel] = acc + (self.exact[lst + 1] - self.exact[f + 1])
            return
        for j in range(1, int((lst - f).max()) + 1):
            acc = acc + np.where(f + j <= lst, self.corr[np.minimum(f + j, lst)], 0.0)
        result.ravel()[sel] = acc


def _metric_names(labels: list[Labels]) -> list[str]:
    # "__name__" is usually the first label of a sorted label set.
    return [ls[0][1] if ls and ls[0][0] == METRIC_NAME else metric_name(ls) for ls in labels]


def _possible_non_counter_info(rs: RangeSamples, present: np.ndarray, info: WarnFn) -> None:
    """Prometheus' info for rate/increase over series not named like a counter."""
    names = _metric_names(rs.labels)
    suspicious = {n for n in set(names) if n and not n.endswith(_COUNTER_SUFFIXES)}
    if not suspicious:
        return
    emitted: set[str] = set()
    for s in np.flatnonzero(present.any(axis=1)).tolist():
        name = names[s]
        if name in suspicious and name not in emitted:
            emitted.add(name)
            info(
                "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: "
                + go_quote(name)
            )


# Grid cells per block in rate(): small enough for the temporaries to stay in cache.
_RATE_BLOCK = 1 << 15


@_quiet
def _extrapolated_rate(rs: RangeSamples, is_counter: bool, is_rate: bool) -> Result:
    """``extrapolatedRate`` of promql/functions.go for float samples."""
    out, present = _empty(rs)
    num_series, num_steps = rs.lo.shape
    if not rs.values.size or not num_steps:
        return out, present
    resets = _ResetCorrection(rs) if is_counter else None
    rows = max(1, _RATE_BLOCK // num_steps)
    for start in range(0, num_series, rows):
        block = slice(start, start + rows)
        out[block], present[block] = _rate_block(rs, rs.lo[block], rs.hi[block], resets, is_rate)
    return out, present


def _rate_block(
    rs: RangeSamples, first: np.ndarray, hi: np.ndarray, resets: _ResetCorrection | None, is_rate: bool
) -> Result:
    """One block of series: computed on the whole grid, absent cells masked at the end."""
    cnt = hi - first
    present = cnt >= 2
    last = np.maximum(hi - 1, first)
    v, ts = rs.values, rs.ts
    v_first = v.take(first, mode="clip")
    result = v.take(last, mode="clip") - v_first
    if resets is not None:
        resets.apply(result, first, last, present)
    range_end = rs.step_times[None, :]
    t_first, t_last = ts.take(first, mode="clip"), ts.take(last, mode="clip")
    to_start = (t_first - (range_end - rs.range_ms)) / 1000
    to_end = (range_end - t_last) / 1000
    sampled = (t_last - t_first) / 1000
    average = sampled / (cnt - 1)
    threshold = average * 1.1
    half = average / 2
    np.copyto(to_start, half, where=to_start >= threshold)
    if resets is not None:
        # A counter cannot go below zero: do not extrapolate past its zero point.
        to_zero = sampled * (v_first / result)
        np.copyto(to_start, to_zero, where=(result > 0) & (v_first >= 0) & (to_zero < to_start))
    np.copyto(to_end, half, where=to_end >= threshold)
    factor = sampled + to_start
    factor += to_end
    factor /= sampled
    if is_rate:
        factor /= rs.range_ms / 1000
    result *= factor
    result[~present] = np.nan
    return result, present


def rate(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Per-second increase of counters, extrapolated to the window edges."""
    out = _extrapolated_rate(rs, is_counter=True, is_rate=True)
    _possible_non_counter_info(rs, out[1], info)
    return out


def increase(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Increase of counters over the window, extrapolated to the window edges."""
    out = _extrapolated_rate(rs, is_counter=True, is_rate=False)
    _possible_non_counter_info(rs, out[1], info)
    return out


def delta(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Difference of gauges between window edges, extrapolated."""
    return _extrapolated_rate(rs, is_counter=False, is_rate=False)


@_quiet
def _instant_value(rs: RangeSamples, is_rate: bool) -> Result:
    """``instantValue``: irate/idelta from the last two samples of each window."""
    win, first, cnt = _windows(rs, 2)
    last = first + cnt - 1
    v1, v0 = rs.values[last], rs.values[last - 1]
    interval = rs.ts[last] - rs.ts[last - 1]
    if is_rate:
        # After a counter reset the last value is the whole increase.
        result = np.where(v1 < v0, v1, v1 - v0) / (interval / 1000)
    else:
        result = v1 - v0
    return _scatter(rs, win, result)


def irate(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Per-second rate from the last two samples of the window."""
    return _instant_value(rs, is_rate=True)


def idelta(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Difference of the last two samples of the window."""
    return _instant_value(rs, is_rate=False)


# --------------------------------------------------------------------------
# changes, resets.


def _count_pairs(rs: RangeSamples, flags: np.ndarray) -> Result:
    """Per window, the number of flagged consecutive pairs (i-1, i) inside it."""
    win, first, cnt = _windows(rs, 1)
    pref = _prefix(_pair_flags(rs, flags).astype(np.int64))
    counts = pref[first + cnt] - pref[first + 1]
    return _scatter(rs, win, counts.astype(np.float64))


def changes(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Number of value changes in the window (NaN to NaN is no change)."""
    v = rs.values
    flags = np.zeros(len(v), dtype=bool)
    flags[1:] = (v[1:] != v[:-1]) & ~(np.isnan(v[1:]) & np.isnan(v[:-1]))
    return _count_pairs(rs, flags)


def resets(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Number of counter resets (decreases) in the window."""
    return _count_pairs(rs, _reset_flags(rs))


# --------------------------------------------------------------------------
# Simple *_over_time functions.


def count_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Number of samples in the window."""
    win, _, cnt = _windows(rs, 1)
    return _scatter(rs, win, cnt.astype(np.float64))


def present_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """1 for every window with at least one sample."""
    win, _, _ = _windows(rs, 1)
    return _scatter(rs, win, np.ones(len(win)))


def last_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Most recent sample value in the window."""
    win, first, cnt = _windows(rs, 1)
    return _scatter(rs, win, rs.values[first + cnt - 1])


def first_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Oldest sample value in the window."""
    win, first, _ = _windows(rs, 1)
    return _scatter(rs, win, rs.values[first])


def ts_of_last_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Timestamp (seconds) of the most recent sample in the window."""
    win, first, cnt = _windows(rs, 1)
    return _scatter(rs, win, rs.ts[first + cnt - 1] / 1000)


def ts_of_first_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Timestamp (seconds) of the oldest sample in the window."""
    win, first, _ = _windows(rs, 1)
    return _scatter(rs, win, rs.ts[first] / 1000)


def _reduce_windows(ufunc: np.ufunc, rs: RangeSamples) -> Result:
    """``ufunc.reduceat`` over every non-empty window (overlapping windows allowed)."""
    win, first, cnt = _windows(rs, 1)
    if not len(win):
        return _empty(rs)
    if _metricsc is not None and ufunc in (np.fmax, np.fmin):
        # Prometheus' loop in C: the same comparisons, ~6x faster than reduceat's segments.
        out = np.empty(len(win))
        _metricsc.window_extreme(np.ascontiguousarray(rs.values, dtype=np.float64), first, cnt, out,
                                 ufunc is np.fmax)
        return _scatter(rs, win, out)
    padded = np.append(rs.values, np.nan)  # so that an end index of N is valid
    bounds = np.empty(2 * len(win), dtype=np.int64)
    bounds[0::2] = first
    bounds[1::2] = first + cnt
    return _scatter(rs, win, ufunc.reduceat(padded, bounds)[0::2])


@_quiet
def max_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Largest value in the window; NaN only when every value is NaN (as Prometheus)."""
    return _reduce_windows(np.fmax, rs)


@_quiet
def min_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Smallest value in the window; NaN only when every value is NaN (as Prometheus)."""
    return _reduce_windows(np.fmin, rs)


@_quiet
def _ts_of_extreme(rs: RangeSamples, want_max: bool) -> Result:
    """``compareOverTime`` with timestamps: the last sample reaching the extreme."""
    cols = _Columns(rs)
    best = np.full(cols.size, np.nan)
    best_ts = np.zeros(cols.size, dtype=np.int64)
    for _, sl, idx in cols:
        x, m = rs.values[idx], best[sl]
        better = (x >= m) if want_max else (x <= m)
        take = better | np.isnan(m)
        best[sl] = np.where(take, x, m)
        best_ts[sl] = np.where(take, rs.ts[idx], best_ts[sl])
    return _scatter(rs, cols.windows, best_ts / 1000)


def ts_of_max_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Timestamp (seconds) of the last sample holding the window's maximum."""
    return _ts_of_extreme(rs, want_max=True)


def ts_of_min_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Timestamp (seconds) of the last sample holding the window's minimum."""
    return _ts_of_extreme(rs, want_max=False)


# --------------------------------------------------------------------------
# Sums, means, variances.


@_quiet
def sum_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Kahan-compensated sum of the window's values."""
    if _exact_integer_sums(rs.values):
        win, first, cnt = _windows(rs, 1)
        pref = _prefix(rs.values)
        return _scatter(rs, win, pref[first + cnt] - pref[first])
    if _metricsc is not None:
        return _window_sums(rs, mean=False)
    cols = _Columns(rs)
    s, c = np.zeros(cols.size), np.zeros(cols.size)
    for _, sl, idx in cols:
        s[sl], c[sl] = _kahan_inc(rs.values[idx], s[sl], c[sl])
    return _scatter(rs, cols.windows, np.where(np.isinf(s), s, s + c))


@_quiet
def avg_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Mean of the window: Kahan sum, switching to an incremental mean on overflow."""
    if _exact_integer_sums(rs.values):
        win, first, cnt = _windows(rs, 1)
        pref = _prefix(rs.values)
        return _scatter(rs, win, (pref[first + cnt] - pref[first]) / cnt)
    if _metricsc is not None:
        return _window_sums(rs, mean=True)
    cols = _Columns(rs)
    total = rs.values[cols.lo] if cols.size else np.zeros(0)
    comp, mean = np.zeros(cols.size), np.zeros(cols.size)
    incremental = np.zeros(cols.size, dtype=bool)
    for j, sl, idx in cols:
        if j == 0:
            continue
        _avg_step(rs.values[idx], float(j + 1), total[sl], comp[sl], mean[sl], incremental[sl])
    direct = total / cols.cnt + comp / cols.cnt
    return _scatter(rs, cols.windows, np.where(incremental, mean + comp, direct))


def _window_sums(rs: RangeSamples, mean: bool) -> Result:
    """sum_over_time or avg_over_time window by window in C: Prometheus' loop, not a numpy call per position."""
    win, first, cnt = _windows(rs, 1)
    out = np.empty(len(win))
    _metricsc.window_sum(np.ascontiguousarray(rs.values, dtype=np.float64), first, cnt, out, mean)
    return _scatter(rs, win, out)


def _avg_step(
    x: np.ndarray, count: float, total: np.ndarray, comp: np.ndarray, mean: np.ndarray, inc: np.ndarray
) -> None:
    """One loop iteration of Prometheus' avg_over_time, in place on the active prefix."""
    new_sum, new_comp = _kahan_inc(x, total, comp)
    overflow = ~inc & np.isinf(new_sum)
    if not overflow.any() and not inc.any():
        # The common case: no running sum has overflowed.
        total[:], comp[:] = new_sum, new_comp
        return
    direct = ~inc & ~overflow
    total[direct], comp[direct] = new_sum[direct], new_comp[direct]
    # Switching to the incremental mean: rescale what the direct sum has so far.
    mean[overflow] = total[overflow] / (count - 1)
    comp[overflow] = comp[overflow] / (count - 1)
    inc |= overflow
    q = (count - 1) / count
    new_mean, new_c = _kahan_inc(x / count, q * mean, q * comp)
    mean[inc], comp[inc] = new_mean[inc], new_c[inc]


@_quiet
def _variance_over_time(rs: RangeSamples) -> tuple[np.ndarray, np.ndarray]:
    """Windows and population variance, with Prometheus' Kahan-compensated Welford."""
    if _metricsc is not None:
        win, first, cnt = _windows(rs, 1)
        var = np.empty(len(win))
        _metricsc.window_variance(np.ascontiguousarray(rs.values, dtype=np.float64), first, cnt, var)
        return win, var
    cols = _Columns(rs)
    mean, c_mean = np.zeros(cols.size), np.zeros(cols.size)
    aux, c_aux = np.zeros(cols.size), np.zeros(cols.size)
    for j, sl, idx in cols:
        x = rs.values[idx]
        d = x - (mean[sl] + c_mean[sl])
        mean[sl], c_mean[sl] = _kahan_inc(d / (j + 1), mean[sl], c_mean[sl])
        aux[sl], c_aux[sl] = _kahan_inc(d * (x - (mean[sl] + c_mean[sl])), aux[sl], c_aux[sl])
    return cols.windows, (aux + c_aux) / cols.cnt


def stdvar_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Population variance of the window's values."""
    win, var = _variance_over_time(rs)
    return _scatter(rs, win, var)


def stddev_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Population standard deviation of the window's values."""
    win, var = _variance_over_time(rs)
    with np.errstate(all="ignore"):
        return _scatter(rs, win, np.sqrt(var))


# --------------------------------------------------------------------------
# Quantiles.


def _padded_sorted(values: np.ndarray, lo: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """Each window's values as a row, sorted ascending, NaN (and padding) last."""
    width = int(cnt.max())
    col = np.arange(width)
    idx = lo[:, None] + col[None, :]
    inside = col[None, :] < cnt[:, None]
    rows = np.where(inside, values[np.where(inside, idx, 0)], np.nan)
    return np.sort(rows, axis=1)


def _pick(sorted_rows: np.ndarray, n_nan: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Element ``pos`` of each row in Prometheus' order: NaNs first, then ascending."""
    src = np.clip(pos - n_nan, 0, sorted_rows.shape[1] - 1)
    picked = np.take_along_axis(sorted_rows, src[:, None], axis=1)[:, 0]
    return np.where(pos < n_nan, np.nan, picked)


def _quantile_rows(q: np.ndarray, sorted_rows: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """Prometheus' ``quantile`` (linear interpolation, rank q*(n-1)) per row."""
    n = cnt.astype(np.float64)
    n_nan = cnt - np.count_nonzero(~np.isnan(sorted_rows), axis=1)
    safe_q = np.where(np.isnan(q), 0.0, np.clip(q, 0.0, 1.0))
    rank = safe_q * (n - 1)
    lower = np.maximum(0.0, np.floor(rank))
    upper = np.minimum(n - 1, lower + 1)
    weight = rank - np.floor(rank)
    lo_val = _pick(sorted_rows, n_nan, lower.astype(np.int64))
    hi_val = _pick(sorted_rows, n_nan, upper.astype(np.int64))
    out = lo_val * (1 - weight) + hi_val * weight
    out = np.where(q < 0, -np.inf, np.where(q > 1, np.inf, out))
    return np.where(np.isnan(q), np.nan, out)


def _chunks(cols: _Columns) -> Iterator[slice]:
    """Slices of the (count-sorted) windows whose padded matrices stay small."""
    start = 0
    while start < cols.size:
        per_chunk = max(1, _PAD_CHUNK_ELEMENTS // max(int(cols.cnt[start]), 1))
        yield slice(start, min(cols.size, start + per_chunk))
        start += per_chunk


def _warn_invalid_quantiles(q: np.ndarray, used_steps: np.ndarray, warn: WarnFn) -> None:
    """Prometheus' warning for each distinct invalid quantile actually used."""
    qs = q[np.unique(used_steps)]
    bad = qs[np.isnan(qs) | (qs < 0) | (qs > 1)]
    seen: set[str] = set()
    for value in bad:
        text = go_format_g(float(value))
        if text not in seen:
            seen.add(text)
            warn(f"quantile value should be between 0 and 1, got {text}")


@_quiet
def quantile_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """φ-quantile of the window's values; args = [φ per step]."""
    q_steps = np.asarray(args[0], dtype=np.float64)
    if _metricsc is not None:
        win, first, cnt = _windows(rs, 1)
        steps = _step_of(rs, win)
        _warn_invalid_quantiles(q_steps, steps, warn)
        out = np.empty(len(win))
        values = np.ascontiguousarray(rs.values, dtype=np.float64)
        _metricsc.window_quantile(values, first, cnt, np.ascontiguousarray(q_steps[steps]), out)
        return _scatter(rs, win, out)
    cols = _Columns(rs)
    steps = _step_of(rs, cols.windows)
    _warn_invalid_quantiles(q_steps, steps, warn)
    out = np.empty(cols.size)
    for part in _chunks(cols):
        rows = _padded_sorted(rs.values, cols.lo[part], cols.cnt[part])
        out[part] = _quantile_rows(q_steps[steps[part]], rows, cols.cnt[part])
    return _scatter(rs, cols.windows, out)


@_quiet
def mad_over_time(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Median absolute deviation from the median of the window's values.

    A NaN sample makes the window's result NaN (Prometheus 3 propagates it
    rather than letting it sort to one end).
    """
    cols = _Columns(rs)
    out = np.empty(cols.size)
    nan_before = _prefix(np.isnan(rs.values).astype(np.int64))
    has_nan = nan_before[cols.lo + cols.cnt] > nan_before[cols.lo]
    for part in _chunks(cols):
        cnt = cols.cnt[part]
        half = np.full(len(cnt), 0.5)
        rows = _padded_sorted(rs.values, cols.lo[part], cnt)
        median = _quantile_rows(half, rows, cnt)
        # Deviations of the real samples only: padding must stay NaN-and-last.
        inside = np.arange(rows.shape[1])[None, :] < cnt[:, None]
        raw = _padded_raw(rs.values, cols.lo[part], cnt)
        dev = np.sort(np.where(inside, np.abs(raw - median[:, None]), np.nan), axis=1)
        out[part] = _quantile_rows(half, dev, cnt)
    out[has_nan] = np.nan
    return _scatter(rs, cols.windows, out)


def _padded_raw(values: np.ndarray, lo: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """Each window's values as a row in sample order, NaN-padded."""
    width = int(cnt.max())
    col = np.arange(width)
    inside = col[None, :] < cnt[:, None]
    return np.where(inside, values[np.where(inside, lo[:, None] + col[None, :], 0)], np.nan)


# --------------------------------------------------------------------------
# Linear regression: deriv, predict_linear.


@_quiet
def _linear_regression(rs: RangeSamples, intercept_ms: np.ndarray, cols: _Columns) -> Result:
    """Prometheus' ``linearRegression`` for every window: (slope, intercept)."""
    n = cols.size
    # The four sums (x, y, xy, x^2) as rows of one array: one element-wise Kahan step per
    # sample position instead of four (the same operations on each element).
    sums, comps = np.zeros((4, n)), np.zeros((4, n))
    init_y = rs.values[cols.lo] if n else np.zeros(0)
    const_y = np.ones(n, dtype=bool)
    for j, sl, idx in cols:
        y = rs.values[idx]
        if j > 0:
            # NaN != NaN, so a NaN sample makes the series non-constant, as in Go.
            const_y[sl] &= ~(y != init_y[sl])
        x = (rs.ts[idx] - intercept_ms[sl]) / 1e3
        sums[:, sl], comps[:, sl] = _kahan_inc(np.stack([x, y, x * y, x * x]), sums[:, sl], comps[:, sl])
    count = cols.cnt.astype(np.float64)
    sx, sy, sxy, sx2 = sums + comps
    cov_xy = sxy - sx * sy / count
    var_x = sx2 - sx * sx / count
    slope = cov_xy / var_x
    intercept = sy / count - slope * sx / count
    # A constant series has slope 0 (NaN when the constant is infinite).
    inf_y = np.isinf(init_y)
    slope = np.where(const_y, np.where(inf_y, np.nan, 0.0), slope)
    intercept = np.where(const_y, np.where(inf_y, np.nan, init_y), intercept)
    return slope, intercept


def _native_regression(rs: RangeSamples, intercept_ms: np.ndarray, first: np.ndarray, cnt: np.ndarray) -> Result:
    """``_linear_regression`` window by window in C: the same operations, not a numpy call per position."""
    slope, intercept = np.empty(len(first)), np.empty(len(first))
    _metricsc.window_regression(
        np.ascontiguousarray(rs.values, dtype=np.float64), np.ascontiguousarray(rs.ts, dtype=np.int64), first, cnt,
        np.ascontiguousarray(intercept_ms, dtype=np.int64), slope, intercept,
    )
    return slope, intercept


def deriv(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Per-second derivative by least squares over the window (>= 2 samples)."""
    if _metricsc is not None:
        win, first, cnt = _windows(rs, 2)
        # Regress around the first sample's time to keep x small (Prometheus #2674).
        slope, _ = _native_regression(rs, rs.ts[first], first, cnt)
        return _scatter(rs, win, slope)
    cols = _Columns(rs, min_count=2)
    slope, _ = _linear_regression(rs, rs.ts[cols.lo], cols)
    return _scatter(rs, cols.windows, slope)


def predict_linear(rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn) -> Result:
    """Value predicted ``t`` seconds after the evaluation time; args = [t per step].

    The regression's intercept is taken at ``rs.step_times``.
    """
    if _metricsc is not None:
        win, first, cnt = _windows(rs, 2)
        steps = _step_of(rs, win)
        slope, intercept = _native_regression(rs, rs.step_times[steps], first, cnt)
    else:
        cols = _Columns(rs, min_count=2)
        win, steps = cols.windows, _step_of(rs, cols.windows)
        slope, intercept = _linear_regression(rs, rs.step_times[steps], cols)
    with np.errstate(all="ignore"):
        value = slope * np.asarray(args[0], dtype=np.float64)[steps] + intercept
    return _scatter(rs, win, value)


# --------------------------------------------------------------------------
# Double exponential smoothing (formerly holt_winters).


def _check_factor(values: np.ndarray, used_steps: np.ndarray, what: str, short: str) -> None:
    used = values[np.unique(used_steps)]
    bad = used[~((used > 0) & (used < 1))]
    if len(bad):
        raise FunctionArgError(
            f"invalid {what} factor. Expected: 0 < {short} < 1, got: {go_format_f(float(bad[0]))}"
        )


@_quiet
def double_exponential_smoothing(
    rs: RangeSamples, args: list[np.ndarray], warn: WarnFn, info: WarnFn
) -> Result:
    """Smoothed value of the window; args = [smoothing factor, trend factor] per step."""
    sf_steps = np.asarray(args[0], dtype=np.float64)
    tf_steps = np.asarray(args[1], dtype=np.float64)
    # Prometheus validates at every step where the series has any sample.
    any_win, _, _ = _windows(rs, 1)
    any_steps = _step_of(rs, any_win)
    _check_factor(sf_steps, any_steps, "smoothing", "sf")
    _check_factor(tf_steps, any_steps, "trend", "tf")
    cols = _Columns(rs, min_count=2)
    steps = _step_of(rs, cols.windows)
    sf, tf = sf_steps[steps], tf_steps[steps]
    v = rs.values
    s0 = np.zeros(cols.size)
    s1 = v[cols.lo] if cols.size else np.zeros(0)
    b = v[cols.lo + 1] - s1 if cols.size else np.zeros(0)
    for j, sl, idx in cols:
        if j == 0:
            continue
        x = sf[sl] * v[idx]
        if j > 1:
            b[sl] = tf[sl] * (s1[sl] - s0[sl]) + (1 - tf[sl]) * b[sl]
        y = (1 - sf[sl]) * (s1[sl] + b[sl])
        s0[sl], s1[sl] = s1[sl], x + y
    return _scatter(rs, cols.windows, s1)


RANGE_FUNCTIONS: dict[str, RangeFunction] = {
    "rate": rate,
    "increase": increase,
    "delta": delta,
    "irate": irate,
    "idelta": idelta,
    "deriv": deriv,
    "predict_linear": predict_linear,
    "holt_winters": double_exponential_smoothing,
    "double_exponential_smoothing": double_exponential_smoothing,
    "changes": changes,
    "resets": resets,
    "avg_over_time": avg_over_time,
    "sum_over_time": sum_over_time,
    "min_over_time": min_over_time,
    "max_over_time": max_over_time,
    "count_over_time": count_over_time,
    "stddev_over_time": stddev_over_time,
    "stdvar_over_time": stdvar_over_time,
    "quantile_over_time": quantile_over_time,
    "last_over_time": last_over_time,
    "first_over_time": first_over_time,
    "mad_over_time": mad_over_time,
    "present_over_time": present_over_time,
    "ts_of_min_over_time": ts_of_min_over_time,
    "ts_of_max_over_time": ts_of_max_over_time,
    "ts_of_last_over_time": ts_of_last_over_time,
    "ts_of_first_over_time": ts_of_first_over_time,
}
