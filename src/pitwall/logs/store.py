"""What the logs pillar needs from storage: a LogQuerier and a LogAppender.

The LogQL engine reads only through ``LogQuerier`` (so it can later run over
a remote Loki API or ClickHouse); ingest paths write only through
``LogAppender``. Frozen interface: extend only with new optional keyword
arguments.

Around those two, what the rest of the pillar needs from a store, so that
only ``wiring`` names the concrete one: ``LogCommitter`` is the ingest fast
path (column-wise entries, partial acceptance, fsync awaited by the caller),
``LogSource`` hands out per-tenant queriers, ``LogFeed`` adds what live tail
follows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from pitwall.logs.model import (
    CommitResult,
    Direction,
    EntryColumns,
    Labels,
    LineFilter,
    LogBatch,
    LogStream,
    Matcher,
    PushStream,
)

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa


class LogQuerier(Protocol):
    """Read access to one tenant's logs; time bounds in ns, start inclusive, end exclusive (as Loki)."""

    def select(
        self,
        matchers: Sequence[Matcher],
        start_ns: int,
        end_ns: int,
        *,
        filters: Sequence[LineFilter] = (),
        direction: Direction = Direction.BACKWARD,
        limit: int | None = None,
    ) -> list[LogStream]:
        """Streams matching all matchers, with entries in [start_ns, end_ns) that pass every filter.

        With ``limit``, at most ``limit`` entries in total, the newest ones for
        BACKWARD and the oldest for FORWARD (Loki's semantics).
        """
        ...

    def scan(
        self,
        matchers: Sequence[Matcher],
        start_ns: int,
        end_ns: int,
        *,
        filters: Sequence[LineFilter] = (),
        with_lines: bool = True,
        with_metadata: bool = False,
    ) -> LogBatch:
        """All matching entries in [start_ns, end_ns) passing the filters, column-wise (metric queries)."""
        ...

    def series(self, matchers: Sequence[Matcher], start_ns: int, end_ns: int) -> list[Labels]: ...

    def label_names(self, start_ns: int, end_ns: int) -> list[str]: ...

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ns: int, end_ns: int) -> list[str]: ...


class LogAppender(Protocol):
    """Durable writes: returns once the entries are in the WAL (fsynced)."""

    async def push(self, tenant: str, streams: Sequence[PushStream]) -> None: ...


class LogCommitter(LogAppender, Protocol):
    """The distributor's fast path: one synchronous commit of many streams' entries."""

    def commit(self, tenant: str, cols: EntryColumns) -> CommitResult:
        """Apply the ordering policy and queue the WAL record without yielding; await ``fsynced`` after.

        Entries the policy refuses are dropped and described in ``errors``.
        """
        ...


class IndexedLogQuerier(LogQuerier, Protocol):
    """A ``LogQuerier`` that also answers Loki's index endpoints and pitwall's trace-to-logs lookup."""

    def stats(self, matchers: Sequence[Matcher], start_ns: int, end_ns: int) -> dict[str, int]:
        """Loki's index stats: ``streams``, ``chunks``, ``bytes`` and ``entries`` in range."""
        ...

    def volume(self, matchers: Sequence[Matcher], start_ns: int, end_ns: int,
               target: Sequence[str] | None = None) -> list[tuple[Labels, int]]:
        """Bytes of lines in range, summed by ``target`` labels (default: the matchers' label names)."""
        ...

    def by_trace_id(self, trace_id: str, start_ns: int, end_ns: int, limit: int) -> list[LogStream]:
        """Entries whose structured metadata ``trace_id`` equals ``trace_id``, oldest first."""
        ...


class LogSource(Protocol):
    """Per-tenant read access, as the HTTP API and the ruler use it."""

    def querier(self, tenant: str) -> IndexedLogQuerier: ...


class LogFeed(LogSource, Protocol):
    """What live tail follows: every committed batch, and which streams match a selector."""

    def add_listener(self, fn: Callable[[str, list[Labels], pa.RecordBatch], None]) -> Callable[[], None]:
        """Call ``fn(tenant, labels_by_sid, batch)`` for every committed batch; returns an unsubscribe."""
        ...

    def matching_sids(self, tenant: str, matchers: Sequence[Matcher]) -> np.ndarray:
        """Stream ids of ``tenant`` whose labels match, whatever their time bounds."""
        ...
