"""What the logs pillar needs from storage: a LogQuerier and a LogAppender.

The LogQL engine reads only through ``LogQuerier`` (so it can later run over
a remote Loki API or ClickHouse); ingest paths write only through
``LogAppender``. Frozen interface: extend only with new optional keyword
arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pitwall.logs.model import Direction, Labels, LineFilter, LogBatch, LogStream, Matcher, PushStream


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
