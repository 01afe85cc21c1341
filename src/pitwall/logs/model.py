"""Log data model: streams (label sets) of timestamped lines. Pure data, no I/O.

Stream labels reuse the metrics pillar's ``Labels`` shape (sorted tuple of
pairs) and ``Matcher`` semantics, as Loki's stream selectors are Prometheus
matchers. Timestamps are int64 nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from pitwall.core.labels import Labels, Matcher

__all__ = [
    "Direction",
    "Labels",
    "LineFilter",
    "LineFilterOp",
    "LogBatch",
    "LogEntry",
    "LogStream",
    "Matcher",
    "PushStream",
]


class Direction(StrEnum):
    FORWARD = "forward"
    BACKWARD = "backward"


class LineFilterOp(StrEnum):
    CONTAINS = "|="
    NOT_CONTAINS = "!="
    REGEX = "|~"
    NOT_REGEX = "!~"


@dataclass(frozen=True)
class LineFilter:
    """A line filter the store may apply while scanning (pushdown)."""

    op: LineFilterOp
    pattern: str


@dataclass(frozen=True)
class LogEntry:
    ts_ns: int
    line: str
    # Loki's structured metadata (non-indexed key/values), e.g. trace_id from OTLP.
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass
class PushStream:
    """What an ingest path hands to the store: one stream and its entries."""

    labels: Labels
    entries: list[LogEntry]


@dataclass
class LogStream:
    """A query result stream, column-wise; entries sorted by time in the requested direction."""

    labels: Labels
    ts_ns: np.ndarray  # int64
    lines: list[str]
    metadata: list[tuple[tuple[str, str], ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])


@dataclass
class LogBatch:
    """Entries of many streams column-wise, sorted by (stream, ts ascending).

    What metric queries and parser stages scan: no per-entry objects, and
    ``lines`` only when the caller asked for them.
    """

    streams: list[Labels]
    stream_idx: np.ndarray  # int64 per entry, index into ``streams``
    ts_ns: np.ndarray  # int64 per entry
    line_bytes: np.ndarray  # int64 per entry: the line's length in UTF-8 bytes
    lines: list[str] | None = None
    metadata: list[tuple[tuple[str, str], ...]] | None = None

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])
