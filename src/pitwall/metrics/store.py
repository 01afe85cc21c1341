"""What the metrics pillar needs from storage: a Querier and an Appender.

The PromQL engine reads only through ``Querier``; ingest writes only through
``Appender``. The DuckDB store, an in-memory store for tests, and later a
remote Prometheus API implement these.

Around them, what the rest of the pillar (and other pillars' wiring) needs,
so that only the composition root names the concrete ``MetricStore``:
``Queryable`` hands out per-tenant queriers, ``SeriesAppender`` is remote
write's fast path (resolve label sets to series ids once, then commit
columns), ``MetricStorage`` reads and appends, ``MetricsBackend`` adds what
the HTTP API shows (metadata, exemplars, head stats).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Protocol

from pitwall.core.labels import Labels, Matcher
from pitwall.metrics.model import Exemplar, MetricMetadata, SampleBatch, SeriesSamples

if TYPE_CHECKING:
    import numpy as np


class WouldBlock(Exception):
    """A non-blocking read (``MetricsBackend.nonblocking_querier``) cannot answer without blocking.

    Its samples are on disk, a writer holds the store, or the query reads
    more than the querier's budget: evaluate again on a worker thread.
    """


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


class Queryable(Protocol):
    """A ``Querier`` per tenant (Prometheus' ``Queryable``)."""

    def querier(self, tenant: str) -> Querier: ...


class SeriesAppender(Appender, Protocol):
    """The column-wise fast path of ingest: no per-sample Python objects.

    ``resolve`` maps label sets to series ids, provisional ones past the end
    for series never seen; ``commit`` validates and applies the columns
    synchronously (registering the provisional series) and returns an
    awaitable that resolves once the WAL record is fsynced. A batch is
    accepted or refused whole. ``series_epoch`` changes whenever the store
    forgets series (retention): ids resolved before then may be stale.
    """

    series_epoch: int

    def resolve(self, tenant: str, series: Sequence[Labels]) -> tuple[np.ndarray, list[tuple[int, Labels]]]: ...

    def commit(
        self, tenant: str, sids: np.ndarray, ts: np.ndarray, vals: np.ndarray, new: list[tuple[int, Labels]]
    ) -> Awaitable[None]: ...


class MetricStorage(Queryable, Appender, Protocol):
    """Reads and durable appends: what the rule manager's wiring needs."""


class MetricsBackend(MetricStorage, Protocol):
    """What the Prometheus HTTP API reads besides series: metadata, exemplars, head stats."""

    def metadata(self, tenant: str) -> dict[str, MetricMetadata]: ...

    def exemplars(self, tenant: str) -> list[Exemplar]: ...

    def num_series(self, tenant: str | None = None) -> int: ...

    def nonblocking_querier(self, tenant: str, max_series: int, max_samples: int) -> Querier:
        """A querier safe to call on an event loop: it never waits for a lock or the disk.

        Reads raise ``WouldBlock`` instead of waiting, reading samples not held
        in memory, or selecting more than ``max_series`` series or
        ``max_samples`` samples in all (over every read of this querier).
        """
        ...
