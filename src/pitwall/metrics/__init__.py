"""The metrics pillar: Prometheus remote write, OTLP and scrape ingest, PromQL, the Prometheus HTTP API.

``__all__`` is the pillar's public interface: what other pillars may import
(``from pitwall.metrics import Engine``), checked by ``tests/test_layout.py``.
Names load on first use (``pitwall.core.exports``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitwall.core.exports import lazy_exports

if TYPE_CHECKING:
    from pitwall.metrics.memory import MemoryQuerier
    from pitwall.metrics.model import (
        STALE_NAN,
        Exemplar,
        MetricMetadata,
        SampleBatch,
        SeriesSamples,
        is_stale,
    )
    from pitwall.metrics.promql import Engine, PromQLParseError, QueryResult, parse_matchers
    from pitwall.metrics.promql.ast import parse as parse_promql
    from pitwall.metrics.promql.format import format_float, labels_string
    from pitwall.metrics.query import InstantQuery, RangeQuery, local_instant, local_range
    from pitwall.metrics.scrape.targets import TargetsSnapshot
    from pitwall.metrics.store import (
        Appender,
        MetricsBackend,
        MetricStorage,
        Querier,
        Queryable,
        SeriesAppender,
    )

_EXPORTS = {
    "Appender": "pitwall.metrics.store",
    "Engine": "pitwall.metrics.promql",
    "Exemplar": "pitwall.metrics.model",
    "InstantQuery": "pitwall.metrics.query",
    "MemoryQuerier": "pitwall.metrics.memory",
    "MetricMetadata": "pitwall.metrics.model",
    "MetricStorage": "pitwall.metrics.store",
    "MetricsBackend": "pitwall.metrics.store",
    "PromQLParseError": "pitwall.metrics.promql",
    "Querier": "pitwall.metrics.store",
    "QueryResult": "pitwall.metrics.promql",
    "Queryable": "pitwall.metrics.store",
    "RangeQuery": "pitwall.metrics.query",
    "STALE_NAN": "pitwall.metrics.model",
    "SampleBatch": "pitwall.metrics.model",
    "SeriesAppender": "pitwall.metrics.store",
    "SeriesSamples": "pitwall.metrics.model",
    "TargetsSnapshot": "pitwall.metrics.scrape.targets",
    "format_float": "pitwall.metrics.promql.format",
    "is_stale": "pitwall.metrics.model",
    "labels_string": "pitwall.metrics.promql.format",
    "local_instant": "pitwall.metrics.query",
    "local_range": "pitwall.metrics.query",
    "parse_matchers": "pitwall.metrics.promql",
    "parse_promql": "pitwall.metrics.promql.ast:parse",
}

__all__ = [
    "STALE_NAN",
    "Appender",
    "Engine",
    "Exemplar",
    "InstantQuery",
    "MemoryQuerier",
    "MetricMetadata",
    "MetricStorage",
    "MetricsBackend",
    "PromQLParseError",
    "Querier",
    "QueryResult",
    "Queryable",
    "RangeQuery",
    "SampleBatch",
    "SeriesAppender",
    "SeriesSamples",
    "TargetsSnapshot",
    "format_float",
    "is_stale",
    "labels_string",
    "local_instant",
    "local_range",
    "parse_matchers",
    "parse_promql",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
