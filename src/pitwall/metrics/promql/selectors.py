"""Reading series for selectors, vectorised over all steps.

Samples of all selected series are concatenated into one flat array sorted by
(series, time). A composite key ``series * K + (t - base)`` is then sorted as a
whole, so one ``np.searchsorted`` finds, for every (series, step) pair at once,
the latest sample at or before the step (instant selectors) or the window
bounds (range selectors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pitwall.metrics.model import Labels, Matcher, stale_mask
from pitwall.metrics.promql.ast import Selector
from pitwall.metrics.promql.context import EvalContext
from pitwall.metrics.promql.values import RangeSamples, StepVector


@dataclass
class Flat:
    """Samples of several series, flat and grouped by series."""

    labels: list[Labels]
    ts: np.ndarray  # int64
    values: np.ndarray  # float64
    offsets: np.ndarray  # int64 (S+1,)


def fetch(ctx: EvalContext, sel: Selector, mint: int, maxt: int) -> Flat:
    """Select the samples of ``sel`` in [mint, maxt], series sorted by labels."""
    groups: list[tuple[Matcher, ...]] = list(sel.or_matchers) if sel.or_matchers else [sel.matchers]
    found: dict[Labels, tuple[np.ndarray, np.ndarray]] = {}
    for matchers in groups:
        for s in ctx.querier.select(list(matchers), mint, maxt):
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


class _Keys:
    """Composite (series, time) keys for vectorised lookups."""

    def __init__(self, flat: Flat, mint: int, maxt: int) -> None:
        self.base = mint - 1
        self.k = maxt - self.base + 2
        self.keys = _series_index(flat.offsets) * self.k + (flat.ts - self.base)

    def search(self, s: int, times: np.ndarray) -> np.ndarray:
        """(S, T) indices: ``searchsorted(..., 'right')`` of each series/time pair."""
        q = np.arange(s, dtype=np.int64)[:, None] * self.k + (times[None, :] - self.base)
        found: np.ndarray = np.searchsorted(self.keys, q.ravel(), side="right")
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
    keys = _Keys(flat, mint, maxt)
    idx = keys.search(s, eff) - 1
    safe = np.maximum(idx, 0)
    sample_ts = flat.ts[safe]
    present = (idx >= flat.offsets[:-1, None]) & (sample_ts > eff[None, :] - lookback_ms)
    vals = flat.values[safe]
    present &= ~stale_mask(vals)
    return StepVector(list(flat.labels), vals, present), sample_ts


def range_from_flat(
    flat: Flat, eff: np.ndarray, range_ms: int, mint: int, maxt: int, drop_stale: bool = True
) -> RangeSamples:
    """Window bounds of ``(t - range, t]`` for each series and step."""
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
    keys = _Keys(flat, mint, maxt)
    hi = keys.search(s, eff)
    lo = keys.search(s, eff - range_ms)
    return RangeSamples(list(flat.labels), flat.ts, flat.values, flat.offsets, lo, hi, eff, range_ms)


def step_vector_to_flat(vec: StepVector, step_times: np.ndarray) -> Flat:
    """A subquery's inner result as flat samples (one per present point)."""
    counts = vec.present.sum(axis=1).astype(np.int64)
    offsets = np.zeros(vec.num_series + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    rows, cols = np.nonzero(vec.present)
    return Flat(list(vec.labels), step_times[cols].astype(np.int64), vec.values[rows, cols], offsets)
