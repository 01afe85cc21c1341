"""The metrics pillar's public query interface.

Control loops (alert rules, SLOs, canary analysis) depend on these
callables, never on the engine or the store directly, so they run the same
over the embedded store or a remote Prometheus API.
"""

from __future__ import annotations

from typing import Protocol

from pitwall.metrics.promql import Engine, QueryResult
from pitwall.metrics.store import Queryable


class InstantQuery(Protocol):
    def __call__(self, expr: str, at_ms: int, tenant: str = "default") -> QueryResult: ...


class RangeQuery(Protocol):
    def __call__(
        self, expr: str, start_ms: int, end_ms: int, step_ms: int, tenant: str = "default"
    ) -> QueryResult: ...


def local_instant(engine: Engine, store: Queryable) -> InstantQuery:
    """Instant queries evaluated in-process over the embedded store."""

    def query(expr: str, at_ms: int, tenant: str = "default") -> QueryResult:
        return engine.instant(store.querier(tenant), expr, at_ms)

    return query


def local_range(engine: Engine, store: Queryable) -> RangeQuery:
    """Range queries evaluated in-process over the embedded store."""

    def query(expr: str, start_ms: int, end_ms: int, step_ms: int, tenant: str = "default") -> QueryResult:
        return engine.range(store.querier(tenant), expr, start_ms, end_ms, step_ms)

    return query
