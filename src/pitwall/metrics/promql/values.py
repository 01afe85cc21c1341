"""Values the PromQL evaluator passes between nodes.

Evaluation runs over all steps of a query at once (an instant query is a range
query with one step), so every node yields arrays shaped (series, steps):

- ``StepVector``: an instant vector at every step; ``present[s, t]`` says
  whether series ``s`` has a value at step ``t``.
- ``RangeSamples``: the raw samples of a range-vector selector (or a
  subquery), flat and grouped by series, plus for each step the half-open
  index window ``[lo, hi)`` of samples inside ``(t - range, t]``.
- ``Scalar``: one float per step.
- ``String``: a string literal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pitwall.core.labels import Labels


@dataclass
class StepVector:
    labels: list[Labels]
    values: np.ndarray  # float64 (S, T)
    present: np.ndarray  # bool (S, T)
    # Per series: the metric name is to be dropped when the result is
    # returned (Prometheus 3 "delayed name removal").
    drop_name: np.ndarray | None = None  # bool (S,) or None for all False

    @property
    def num_series(self) -> int:
        return len(self.labels)


@dataclass
class RangeSamples:
    labels: list[Labels]
    ts: np.ndarray  # int64 ms, flat over all series, sorted within each series
    values: np.ndarray  # float64, flat (no staleness markers: they are removed on load)
    offsets: np.ndarray  # int64 (S + 1,): series s owns ts[offsets[s]:offsets[s+1]]
    lo: np.ndarray  # int64 (S, T): first flat index in step t's window
    hi: np.ndarray  # int64 (S, T): one past the last flat index in the window
    step_times: np.ndarray  # int64 (T,) ms: evaluation time of each step (after @/offset)
    range_ms: int
    drop_name: np.ndarray | None = None

    @property
    def num_series(self) -> int:
        return len(self.labels)


@dataclass
class Scalar:
    values: np.ndarray  # float64 (T,)


@dataclass
class String:
    value: str


Value = StepVector | RangeSamples | Scalar | String
