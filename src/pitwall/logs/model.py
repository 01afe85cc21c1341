"""Log data model: streams (label sets) of timestamped lines. Pure data, no I/O.

Stream labels reuse the metrics pillar's ``Labels`` shape (sorted tuple of
pairs) and ``Matcher`` semantics, as Loki's stream selectors are Prometheus
matchers. Timestamps are int64 nanoseconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, overload

import numpy as np

from pitwall.core.labels import Labels, Matcher

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "LEVEL_LABEL",
    "ArrowLines",
    "CommitResult",
    "Direction",
    "EntryColumns",
    "Labels",
    "LineFilter",
    "LineFilterOp",
    "LogBatch",
    "LogEntry",
    "LogStream",
    "Matcher",
    "Metadata",
    "PushStream",
    "decode_metadata",
    "encode_metadata",
    "next_window_width",
    "ns_to_rfc3339",
]

# The structured metadata key Loki's distributor adds to every entry (``discover_log_levels``).
LEVEL_LABEL = "detected_level"

# Loki's structured metadata of one entry: (key, value) pairs, e.g. trace_id from OTLP.
Metadata = tuple[tuple[str, str], ...]


def next_window_width(width: int, need: int, scanned: int, found: int) -> int:
    """The next time window of a read that stops after ``need`` more entries, from the rate seen so far.

    ``found`` entries were kept in ``scanned`` ns: aim at ``need`` with a 25% margin, at least
    doubling; nothing found yet: four times wider. A selective query thus reads the rest of its
    range in one window instead of many growing ones.
    """
    guess = int(need * scanned / found * 1.25) if found else width * 4
    return max(width * 2, guess)


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
    metadata: Metadata = ()


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
    lines: Sequence[str]  # ``ArrowLines`` from the store
    metadata: list[tuple[tuple[str, str], ...]] = field(default_factory=list)
    # Structured metadata every entry of this stream shares, after its own (``detected_level``).
    stream_md: Metadata = ()

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])

    def entry_metadata(self, i: int) -> Metadata:
        """Entry ``i``'s structured metadata as Loki returns it (its own, then the shared)."""
        own = self.metadata[i] if self.metadata else ()
        return own + self.stream_md if self.stream_md else own


class ArrowLines(Sequence[str]):
    """Lines as an Arrow string array, turned into Python strings only when something indexes them.

    What the store hands to metric queries: the column passes (``| json`` and its
    filters) read the Arrow bytes, and only per-entry stages need ``str`` objects.
    """

    __slots__ = ("_arrow", "_list")

    def __init__(self, arrow: pa.Array | None = None, pylist: list[str] | None = None) -> None:
        assert arrow is not None or pylist is not None
        self._arrow = arrow
        self._list = pylist

    @property
    def arrow(self) -> pa.Array:
        if self._arrow is None:
            import pyarrow as pa  # model.py stays importable without pyarrow loaded

            self._arrow = pa.array(self._list, pa.string())
        return self._arrow

    def as_list(self) -> list[str]:
        if self._list is None:
            self._list = self.arrow.to_pylist()
        return self._list

    def take(self, rows: Sequence[int]) -> list[str]:
        """The lines of ``rows``, converting only those when the whole list was never needed."""
        if self._list is not None:
            return [self._list[i] for i in rows]
        import pyarrow as pa

        return self.arrow.take(pa.array(rows, pa.int64())).to_pylist()  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return len(self._list) if self._list is not None else len(self.arrow)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        return self.as_list()[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_list())

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same lines, as the list it stands for."""
        if isinstance(other, ArrowLines):
            other = other.as_list()
        return isinstance(other, Sequence) and not isinstance(other, str) and self.as_list() == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable-list semantics, as list

    def utf8_bytes(self) -> int:
        """The lines' length in UTF-8 bytes; for Arrow lines from the offsets, without reading the text."""
        if self._arrow is None:
            assert self._list is not None
            return sum(map(len, map(str.encode, self._list)))
        import pyarrow as pa

        arr = self._arrow
        if not len(arr):
            return 0
        wide = pa.types.is_large_string(arr.type)
        offs = np.frombuffer(arr.buffers()[1], dtype=np.int64 if wide else np.int32)
        return int(offs[arr.offset + len(arr)]) - int(offs[arr.offset])

    @staticmethod
    def of(lines: Sequence[str]) -> ArrowLines:
        if isinstance(lines, ArrowLines):
            return lines
        return ArrowLines(pylist=lines if isinstance(lines, list) else list(lines))


@dataclass
class LogBatch:
    """Entries of many streams column-wise, each stream's entries by ts ascending.

    What metric queries and parser stages scan: no per-entry objects, and
    ``lines`` only when the caller asked for them. Without lines entries are
    grouped by stream (``stream_idx`` ascending); with lines, streams that
    differ only in ``stream_md`` may interleave (regrouping would copy lines).
    """

    streams: list[Labels]
    stream_idx: np.ndarray  # int64 per entry, index into ``streams``
    ts_ns: np.ndarray  # int64 per entry
    line_bytes: np.ndarray  # int64 per entry: the line's length in UTF-8 bytes
    lines: Sequence[str] | None = None  # ``ArrowLines`` from the store
    metadata: list[tuple[tuple[str, str], ...]] | None = None
    # Per stream: structured metadata all its entries share (``detected_level``); None: none.
    stream_md: list[Metadata] | None = None

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])


@dataclass
class EntryColumns:
    """What ingest paths hand to the store: entries of many streams, column-wise.

    ``streams`` are canonical label sets (sorted, validated); ``stream_idx``
    indexes them per entry. ``metadata`` is None when no entry has any.
    """

    streams: list[Labels]
    stream_idx: np.ndarray
    ts: np.ndarray
    lines: list[str]
    metadata: list[Metadata] | None = None
    line_array: pa.Array | None = None  # ``lines`` as Arrow, when a caller already built it
    levels: pa.Array | None = None  # Loki's ``detected_level`` per entry (string, null: none)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def from_push(cls, streams: Sequence[PushStream]) -> EntryColumns:
        labels = [s.labels for s in streams]
        n = [len(s.entries) for s in streams]
        idx = np.repeat(np.arange(len(streams), dtype=np.int64), n)
        ts = np.fromiter((e.ts_ns for s in streams for e in s.entries), dtype=np.int64, count=sum(n))
        lines = [e.line for s in streams for e in s.entries]
        md: list[Metadata] | None = [e.metadata for s in streams for e in s.entries]
        if md is not None and not any(md):
            md = None
        return cls(labels, idx, ts, lines, md)


@dataclass
class CommitResult:
    """What a ``LogCommitter.commit`` did: how many entries it kept, why it refused the others."""

    accepted: int
    rejected: int
    errors: list[str]
    fsynced: asyncio.Future[None] | None
    keep: np.ndarray | None = None  # per entry: stored (None when all were)


def encode_metadata(md: Metadata) -> str | None:
    """Metadata as stored: compact JSON ``[[k, v], ...]``, or None when empty."""
    return json.dumps(md, separators=(",", ":"), ensure_ascii=False) if md else None


def decode_metadata(raw: str | None) -> Metadata:
    """The inverse of ``encode_metadata``."""
    if not raw:
        return ()
    return tuple((k, v) for k, v in json.loads(raw))


def ns_to_rfc3339(ns: int) -> str:
    """Go's RFC 3339 rendering of a nanosecond timestamp, as Loki's messages print it."""
    secs, frac = divmod(ns, 10**9)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{base}.{frac:09d}".rstrip("0").rstrip(".") + "Z" if frac else base + "Z"
