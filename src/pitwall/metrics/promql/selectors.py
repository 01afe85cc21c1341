"""Reading series for selectors, vectorised over all steps.

Samples of all selected series are concatenated into one flat array sorted by
(series, time). Window bounds for every (series, step) pair come from one pass
over the samples: each sample is assigned the first step whose time is at or
after it (arithmetic on a regular step grid, a binary search otherwise), a
per-series histogram of those step indices is accumulated, and its running sum
is the number of samples at or before each step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pitwall.core.labels import Labels, Matcher
from pitwall.core.native import optional_module
from pitwall.metrics.model import stale_mask
from pitwall.metrics.promql.ast import Selector
from pitwall.metrics.promql.context import EvalContext
from pitwall.metrics.promql.values import RangeSamples, StepVector

# instant_from_flat's loop in C (pitwall/_native/metricsc.c); optional: not built without a compiler.
_metricsc: Any = optional_module("pitwall._metricsc")


@dataclass
class Flat:
    """Samples of several series, flat and grouped by series."""

    labels: list[Labels]
    ts: np.ndarray  # int64
    values: np.ndarray  # float64
    offsets: np.ndarray  # int64 (S+1,)


@runtime_checkable
class FlatQuerier(Protocol):
    """A Querier that can hand over samples flat, without per-series objects."""

    def select_flat(
        self,
        matcher_sets: Sequence[Sequence[Matcher]],
        start_ms: int,
        end_ms: int,
        account: Callable[[int], None] | None = None,
    ) -> tuple[list[Labels], np.ndarray, np.ndarray, np.ndarray]:
        """``account(n)`` is called as each part of ``n`` samples is read; it may raise to stop."""
        ...


def fetch(ctx: EvalContext, sel: Selector, mint: int, maxt: int) -> Flat:
    """Select the samples of ``sel`` in [mint, maxt], series sorted by labels."""
    groups: list[tuple[Matcher, ...]] = list(sel.or_matchers) if sel.or_matchers else [sel.matchers]
    q = ctx.querier
    select_flat = getattr(q, "select_flat", None)  # FlatQuerier; isinstance on a Protocol costs ~10 us
    if select_flat is not None:
        # The store accounts as it reads, so the samples limit stops a huge read midway.
        labels, ts, vals, offsets = select_flat([list(m) for m in groups], mint, maxt, ctx.load)
        return Flat(labels, ts.astype(np.int64, copy=False), vals.astype(np.float64, copy=False), offsets)
    found: dict[Labels, tuple[np.ndarray, np.ndarray]] = {}
    for matchers in groups:
        for s in q.select(list(matchers), mint, maxt):
            found.setdefault(s.labels, (s.ts, s.values))
    labels = sorted(found)
    counts = np.array([found[lb][0].shape[0] for lb in labels], dtype=np.int64)
    offsets = np.zeros(len(labels) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if labels:
        ts = np.concatenate([found[lb][0] for lb in labels]).astype(np.int64, copy=False)
        vals = np.concatenate([found[lb][1] for lb in labels]).astype(np.float64, copy=False)
    else:
        ts = np.empty(0, dtype=np.int64)
        vals = np.empty(0, dtype=np.float64)
    ctx.load(int(ts.shape[0]))
    return Flat(labels, ts, vals, offsets)


def _series_index(offsets: np.ndarray) -> np.ndarray:
    counts = np.diff(offsets)
    return np.repeat(np.arange(counts.shape[0], dtype=np.int64), counts)


def _first_step_at_or_after(times: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """For each sample time, the index of the first step time >= it (len(times) if none).

    ``times`` is non-decreasing.
    """
    n = times.shape[0]
    t0 = int(times[0])
    if n == 1 or int(times[-1]) == t0:
        return np.where(ts <= t0, 0, n)
    step = int(times[1]) - t0
    if step > 0 and int(times[-1]) - t0 == step * (n - 1) and bool(np.all(np.diff(times) == step)):
        # Regular grid: ceil((ts - t0) / step), clipped.
        j = (ts - t0) + (step - 1)
        j //= step
        np.maximum(j, 0, out=j)  # np.clip costs 3x as much on small arrays
        np.minimum(j, n, out=j)
        return j
    found: np.ndarray = np.searchsorted(times, ts, side="left")
    return found


def _window_ends(flat: Flat, times: np.ndarray, sidx: np.ndarray) -> np.ndarray:
    """(S, T): one past the flat index of the last sample at or before ``times[t]``."""
    s = len(flat.labels)
    t = times.shape[0]
    if s == 0 or t == 0:
        return np.zeros((s, t), dtype=np.int64)
    if bool(np.any(times[1:] < times[:-1])):
        return _window_ends_search(flat, times, sidx)
    key = sidx * (t + 1)
    key += _first_step_at_or_after(times, flat.ts)
    hist = np.bincount(key, minlength=s * (t + 1)).reshape(s, t + 1)[:, :t]
    out = np.cumsum(hist, axis=1)
    out += flat.offsets[:-1, None]
    return out


def _window_bounds(
    flat: Flat, eff: np.ndarray, range_ms: int, sidx: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) window bounds of ``(t - range, t]`` for every series and step (``sidx``: None or each sample's series).

    When the range is a whole number ``m`` of steps of a regular grid, both
    come from one pass over the grid extended by ``m`` steps to the left:
    ``lo`` at step ``t`` is ``hi`` at step ``t - m``.
    """
    n = eff.shape[0]
    if _metricsc is not None and range_ms >= 0 and not bool(np.any(eff[1:] < eff[:-1])):
        # Two pointers per series in C instead of ~20 numpy calls; the same bounds.
        shape = (len(flat.labels), n)
        lo, hi = np.empty(shape, dtype=np.int64), np.empty(shape, dtype=np.int64)
        _metricsc.window_fill(flat.offsets, flat.ts, np.ascontiguousarray(eff, dtype=np.int64), range_ms, lo, hi)
        return lo, hi
    if sidx is None:
        sidx = _series_index(flat.offsets)
    if n > 1 and range_ms > 0:
        step = int(eff[1]) - int(eff[0])
        m = range_ms // step if step > 0 else 0
        if (
            step > 0
            and m * step == range_ms
            and m <= 4 * n
            and int(eff[-1]) - int(eff[0]) == step * (n - 1)
            and bool(np.all(np.diff(eff) == step))
        ):
            grid = np.arange(int(eff[0]) - m * step, int(eff[-1]) + 1, step, dtype=np.int64)
            ends = _window_ends(flat, grid, sidx)
            return ends[:, :n], ends[:, m:]
    return _window_ends(flat, eff - range_ms, sidx), _window_ends(flat, eff, sidx)


def _window_ends_search(flat: Flat, times: np.ndarray, sidx: np.ndarray) -> np.ndarray:
    """``_window_ends`` for unsorted times: binary search on (series, time) keys."""
    s = len(flat.labels)
    base = min(int(flat.ts.min()) if flat.ts.shape[0] else 0, int(times.min())) - 1
    k = max(int(flat.ts.max()) if flat.ts.shape[0] else 0, int(times.max())) - base + 2
    keys = sidx * k + (flat.ts - base)
    q = np.arange(s, dtype=np.int64)[:, None] * k + (times[None, :] - base)
    found: np.ndarray = np.searchsorted(keys, q.ravel(), side="right")
    return found.reshape(q.shape)


def instant_from_flat(
    flat: Flat, eff: np.ndarray, lookback_ms: int, mint: int, maxt: int
) -> tuple[StepVector, np.ndarray]:
    """Latest sample in ``(t - lookback, t]`` for each series and step; also its timestamp."""
    s = len(flat.labels)
    t = eff.shape[0]
    if s == 0:
        empty = np.zeros((0, t))
        return StepVector([], empty, np.zeros((0, t), dtype=bool)), empty.astype(np.int64)
    if _metricsc is not None and not bool(np.any(eff[1:] < eff[:-1])):
        # One merge pass per series in C instead of ~15 numpy calls; the same arrays.
        vals, present, sample_ts = np.empty((s, t)), np.empty((s, t), dtype=bool), np.empty((s, t), dtype=np.int64)
        _metricsc.instant_fill(flat.offsets, flat.ts, flat.values, np.ascontiguousarray(eff, dtype=np.int64),
                               lookback_ms, vals, present, sample_ts)
        return StepVector(list(flat.labels), vals, present), sample_ts
    idx = _window_ends(flat, eff, _series_index(flat.offsets))
    idx -= 1
    present = idx >= flat.offsets[:-1, None]
    np.maximum(idx, 0, out=idx)
    sample_ts = flat.ts[idx]
    present &= sample_ts > eff[None, :] - lookback_ms
    vals = flat.values[idx]
    present &= ~stale_mask(vals)
    return StepVector(list(flat.labels), vals, present), sample_ts


def range_from_flat(
    flat: Flat, eff: np.ndarray, range_ms: int, mint: int, maxt: int, drop_stale: bool = True
) -> RangeSamples:
    """Window bounds of ``(t - range, t]`` for each series and step."""
    sidx: np.ndarray | None = None
    if drop_stale and flat.values.shape[0]:
        keep = ~stale_mask(flat.values)
        if not keep.all():
            sidx = _series_index(flat.offsets)[keep]
            counts = np.bincount(sidx, minlength=len(flat.labels))
            offsets = np.zeros(len(flat.labels) + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            flat = Flat(flat.labels, flat.ts[keep], flat.values[keep], offsets)
    s = len(flat.labels)
    if s == 0:
        z = np.zeros((0, eff.shape[0]), dtype=np.int64)
        return RangeSamples([], flat.ts, flat.values, flat.offsets, z, z, eff, range_ms)
    lo, hi = _window_bounds(flat, eff, range_ms, sidx)
    return RangeSamples(list(flat.labels), flat.ts, flat.values, flat.offsets, lo, hi, eff, range_ms)


def step_vector_to_flat(vec: StepVector, step_times: np.ndarray) -> Flat:
    """A subquery's inner result as flat samples (one per present point)."""
    counts = vec.present.sum(axis=1).astype(np.int64)
    offsets = np.zeros(vec.num_series + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    rows, cols = np.nonzero(vec.present)
    return Flat(list(vec.labels), step_times[cols].astype(np.int64), vec.values[rows, cols], offsets)
