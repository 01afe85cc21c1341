"""An in-memory Querier, for tests and the promqltest conformance runner."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pitwall.core.labels import Labels, Matcher, labels_get
from pitwall.metrics.model import SeriesSamples


class MemoryQuerier:
    """Series kept in Python lists until queried, then frozen into sorted arrays.

    ``add`` may be called in any time order; a later sample with the same
    timestamp replaces the earlier one.
    """

    def __init__(self) -> None:
        self._pending: dict[Labels, dict[int, float]] = {}
        self._frozen: dict[Labels, tuple[np.ndarray, np.ndarray]] | None = None

    def add(self, labels: Labels, ts_ms: int, value: float) -> None:
        """Store one sample (``labels`` must be sorted by name)."""
        self._pending.setdefault(labels, {})[int(ts_ms)] = float(value)
        self._frozen = None

    def clear(self) -> None:
        self._pending.clear()
        self._frozen = None

    def _series(self) -> dict[Labels, tuple[np.ndarray, np.ndarray]]:
        if self._frozen is None:
            frozen: dict[Labels, tuple[np.ndarray, np.ndarray]] = {}
            for lbl, points in self._pending.items():
                ts = np.fromiter(points.keys(), dtype=np.int64, count=len(points))
                vals = np.fromiter(points.values(), dtype=np.float64, count=len(points))
                order = np.argsort(ts, kind="stable")
                frozen[lbl] = (ts[order], vals[order])
            self._frozen = frozen
        return self._frozen

    def _matching(self, matchers: Sequence[Matcher]) -> list[Labels]:
        return [lbl for lbl in self._series() if all(m.matches(labels_get(lbl, m.name)) for m in matchers)]

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesSamples]:
        out: list[SeriesSamples] = []
        series = self._series()
        for lbl in self._matching(matchers):
            ts, vals = series[lbl]
            lo = int(np.searchsorted(ts, start_ms, "left"))
            hi = int(np.searchsorted(ts, end_ms, "right"))
            if hi > lo:
                out.append(SeriesSamples(lbl, ts[lo:hi], vals[lo:hi]))
        return out

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        return [s.labels for s in self.select(matchers, start_ms, end_ms)]

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        names = {k for lbl in self.series(matchers, start_ms, end_ms) for k, _ in lbl}
        return sorted(names)

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        values = {labels_get(lbl, name) for lbl in self.series(matchers, start_ms, end_ms)}
        values.discard("")
        return sorted(values)
