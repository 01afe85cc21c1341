"""What the metrics pillar needs from storage: a Querier and an Appender.

The PromQL engine reads only through ``Querier``; ingest writes only through
``Appender``. The DuckDB store, an in-memory store for tests, and later a
remote Prometheus API implement these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pitwall.core.labels import Labels, Matcher
from pitwall.metrics.model import Exemplar, MetricMetadata, SampleBatch, SeriesSamples


class Querier(Protocol):
    """Read access to one tenant's series over a time range (ms, inclusive)."""

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesSamples]:
        """Series matching all matchers with their samples in [start_ms, end_ms].

        Series with no samples in the range are left out.
        """
        ...

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        """Label sets of matching series that have samples in the range."""
        ...

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        """Sorted label names of matching series (all series when no matchers)."""
        ...

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        """Sorted values of label ``name`` over matching series."""
        ...


class Appender(Protocol):
    """Durable writes: ``append`` returns once the batch is in the WAL (fsynced)."""

    async def append(self, tenant: str, batch: SampleBatch) -> None: ...

    async def append_metadata(self, tenant: str, metadata: Sequence[MetricMetadata]) -> None: ...

    async def append_exemplars(self, tenant: str, exemplars: Sequence[Exemplar]) -> None: ...
