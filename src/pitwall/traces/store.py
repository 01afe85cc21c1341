"""What the traces pillar needs from storage: a ``SpanAppender`` and a ``SpanSource``.

Ingest commits through ``SpanAppender``; ``TraceQuery`` and the APIs read
through ``SpanSource``. The DuckDB ``TraceStore`` implements both; only
``wiring`` names it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from pitwall.traces.model import AppendResult

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa


class SpanAppender(Protocol):
    """Durable span writes, the fast path: apply synchronously, then await the fsync."""

    def commit(self, tenant: str, table: pa.Table) -> tuple[asyncio.Future[None], AppendResult, pa.Table]:
        """Apply a batch of ``SPAN_SCHEMA`` rows; returns the fsync future, the counts and the kept rows."""
        ...


class SpanSource(Protocol):
    """Read access to stored spans and the per-tenant catalog of names."""

    def traces(self, tenant: str, tkeys: Sequence[int]) -> pa.Table:
        """Every stored span of the traces with these keys (callers filter exact ids)."""
        ...

    def relation(self, start_ns: int, end_ns: int) -> AbstractContextManager[tuple[duckdb.DuckDBPyConnection, str]]:
        """A cursor and a SQL relation of all spans that may start in [start_ns, end_ns]."""
        ...

    def search_relations(self, start_ns: int, end_ns: int) -> AbstractContextManager[
            tuple[duckdb.DuckDBPyConnection, str, list[tuple[str, str]]]]:
        """A cursor, the relation of spans to scan (head, blocks without an attribute index) and
        (block table, attribute index table) of each indexed block that may hold spans in the range.

        An index table has one row (k, v, lo, cnt) per attribute key and stretch of consecutive
        spans (block rows ``seq`` ``lo`` .. ``lo + cnt - 1``) with one value: the span's own
        attribute value else its resource's, as ``json_extract_string`` reads it."""
        ...

    def services(self, tenant: str) -> list[str]: ...

    def span_names(self, tenant: str, service: str) -> list[str]: ...

    def remote_services(self, tenant: str, service: str) -> list[str]: ...

    def spellings(self, tenant: str, column: str, value: str) -> list[str] | None:
        """Every stored spelling of ``value`` in ``column``; None when the catalog may be incomplete."""
        ...
