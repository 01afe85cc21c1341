"""PromQL's Querier over one tenant of the metrics store, through its public reads.

Contract: ``TenantQuerier`` implements ``select``, ``select_flat``,
``series``, ``label_names`` and ``label_values`` for one tenant. It reads
only through ``SeriesReader``: candidate series ids for matchers and a time
range, their label sets, and their samples as flat columns; it never sees the
store's registry, head or blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pitwall.core.labels import Labels, Matcher
from pitwall.metrics.model import SeriesSamples
from pitwall.metrics.store import WouldBlock

__all__ = ["ReadBudget", "SeriesReader", "TenantQuerier"]


@dataclass
class ReadBudget:
    """What a non-blocking querier may still read; exceeding it raises ``WouldBlock``."""

    series: int
    samples: int

    def take_series(self, n: int) -> None:
        self.series -= n
        if self.series < 0:
            raise WouldBlock("more series than an inline read may select")

    def take_samples(self, n: int) -> None:
        self.samples -= n
        if self.samples < 0:
            raise WouldBlock("more samples than an inline read may hold")


class SeriesReader(Protocol):
    """What a querier needs from a metrics store (``MetricStore`` implements it)."""

    def candidate_sids(self, tenant: str, matchers: Sequence[Matcher], start: int, end: int) -> np.ndarray:
        """Ids of the tenant's series matching ``matchers`` that may have samples in [start, end]."""

    def series_labels(self, sids: Sequence[int]) -> list[Labels]:
        """Label sets of ``sids``, in that order."""

    def read_columns(
        self, sids: np.ndarray, start: int, end: int, account: Callable[[int], None] | None = None,
        nowait: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(counts, ts, values)`` of ``sids`` in [start, end]: series ``sids[i]`` owns the next ``counts[i]``.

        With ``nowait``, raises ``WouldBlock`` rather than wait for the lock or read the disk.
        """


class TenantQuerier:
    """The ``Querier`` protocol over one tenant of a ``MetricStore``.

    With a ``budget`` it is non-blocking (``MetricsBackend.nonblocking_querier``):
    reads raise ``WouldBlock`` instead of waiting or going past the budget.
    """

    def __init__(self, store: SeriesReader, tenant: str, budget: ReadBudget | None = None) -> None:
        self.store = store
        self.tenant = tenant
        self.budget = budget

    def _sids(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> np.ndarray:
        sids = self.store.candidate_sids(self.tenant, matchers, start_ms, end_ms)
        if self.budget is not None:
            self.budget.take_series(len(sids))
        return sids

    def _read(
        self, sids: np.ndarray, start_ms: int, end_ms: int, account: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        budget = self.budget
        if budget is None:
            return self.store.read_columns(sids, start_ms, end_ms, account)

        def charge(n: int) -> None:
            budget.take_samples(n)
            if account is not None:
                account(n)

        return self.store.read_columns(sids, start_ms, end_ms, charge, nowait=True)

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesSamples]:
        st = self.store
        sids = self._sids(matchers, start_ms, end_ms)
        counts, t, v = self._read(sids, start_ms, end_ms)
        ends = np.cumsum(counts)
        labels = st.series_labels(sids.tolist())
        return [
            SeriesSamples(lbl, t[b - n : b], v[b - n : b])
            for lbl, n, b in zip(labels, counts.tolist(), ends.tolist(), strict=True)
            if n
        ]

    def select_flat(
        self,
        matcher_sets: Sequence[Sequence[Matcher]],
        start_ms: int,
        end_ms: int,
        account: Callable[[int], None] | None = None,
    ) -> tuple[list[Labels], np.ndarray, np.ndarray, np.ndarray]:
        """Series matching any of ``matcher_sets``, sorted by labels, with samples flat.

        Returns ``(labels, ts, values, offsets)``: series ``i`` owns
        ``ts[offsets[i]:offsets[i+1]]``. Series without samples are left out.
        ``account`` is as for ``SeriesReader.read_columns``.
        """
        st = self.store
        found = [self._sids(m, start_ms, end_ms) for m in matcher_sets]
        sids = found[0] if len(found) == 1 else np.unique(np.concatenate(found))
        sid_list = sids.tolist()
        labels = st.series_labels(sid_list)
        # Label sets are unique per tenant, so the order of labels is a total order.
        pos = sorted(range(len(sid_list)), key=labels.__getitem__)
        labels = [labels[i] for i in pos]
        ordered = np.array([sid_list[i] for i in pos], dtype=np.int64)
        counts, t, v = self._read(ordered, start_ms, end_ms, account)
        keep = np.flatnonzero(counts)
        if len(keep) < len(counts):
            labels = [labels[i] for i in keep.tolist()]
            counts = counts[keep]
        offsets = np.zeros(len(labels) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return labels, t, v, offsets

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        return self.store.series_labels(self._sids(matchers, start_ms, end_ms).tolist())

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        names: set[str] = set()
        for lbl in self.series(matchers, start_ms, end_ms):
            names.update(k for k, _ in lbl)
        return sorted(names)

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        values: set[str] = set()
        for lbl in self.series(matchers, start_ms, end_ms):
            for k, v in lbl:
                if k == name:
                    values.add(v)
                    break
        return sorted(values)

