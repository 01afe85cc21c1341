"""Metric data model: samples, batches, exemplars, metadata, staleness. Pure data, no I/O.

Label sets and matchers are shared by every signal: ``pitwall.core.labels``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from pitwall.core.labels import Labels

# Prometheus' staleness marker: a NaN with a specific bit pattern, distinct
# from ordinary NaNs produced by arithmetic.
STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]


def is_stale(value: float) -> bool:
    """True when ``value`` is the staleness marker NaN (not any NaN)."""
    return math.isnan(value) and struct.pack("<d", value) == struct.pack("<Q", STALE_NAN_BITS)


def stale_mask(values: np.ndarray) -> np.ndarray:
    """Boolean mask of staleness markers in a float64 array."""
    mask: np.ndarray = values.view(np.uint64) == np.uint64(STALE_NAN_BITS)
    return mask


@dataclass(frozen=True)
class SeriesSamples:
    """One series' samples in a time range, sorted by timestamp.

    ``ts`` is int64 milliseconds, ``values`` float64 (may hold STALE_NAN).
    """

    labels: Labels
    ts: np.ndarray
    values: np.ndarray


@dataclass
class SampleBatch:
    """Samples to append, column-wise: one row per sample.

    ``series`` lists each distinct label set once; ``series_idx`` points into it.
    Ingest paths build this without per-sample Python objects where they can.
    """

    series: list[Labels]
    series_idx: np.ndarray  # int64, index into ``series``
    ts: np.ndarray  # int64 ms
    values: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def from_rows(cls, rows: list[tuple[Labels, int, float]]) -> SampleBatch:
        """Convenience constructor for small batches (scrapes, tests)."""
        index: dict[Labels, int] = {}
        series: list[Labels] = []
        idx = np.empty(len(rows), dtype=np.int64)
        ts = np.empty(len(rows), dtype=np.int64)
        vals = np.empty(len(rows), dtype=np.float64)
        for i, (lbl, t, v) in enumerate(rows):
            j = index.get(lbl)
            if j is None:
                j = index[lbl] = len(series)
                series.append(lbl)
            idx[i] = j
            ts[i] = t
            vals[i] = v
        return cls(series, idx, ts, vals)


@dataclass(frozen=True)
class MetricMetadata:
    """Type/help/unit of a metric family, as /api/v1/metadata reports it."""

    metric: str
    type: str  # counter, gauge, histogram, summary, unknown...
    help: str = ""
    unit: str = ""


@dataclass(frozen=True)
class Exemplar:
    labels: Labels  # the series the exemplar belongs to
    exemplar_labels: Labels  # e.g. trace_id
    ts: int
    value: float
