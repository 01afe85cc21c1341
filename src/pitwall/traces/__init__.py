"""The traces pillar: OTLP and Zipkin span ingest, Zipkin and native query APIs,
the service dependency graph and span metrics.

``__all__`` is the pillar's public interface: what other pillars may import
(``from pitwall.traces import TraceQuery``), checked by ``tests/test_layout.py``.
Names load on first use (``pitwall.core.exports``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitwall.core.exports import lazy_exports

if TYPE_CHECKING:
    from pitwall.traces.model import (
        KIND_NAMES,
        STATUS_ERROR,
        STATUS_NAMES,
        STATUS_OK,
        STATUS_UNSET,
        DependencyLink,
        SpanColumns,
        SpanRow,
        TraceSummary,
        display_trace_id,
        tkey_of,
    )
    from pitwall.traces.query import SpanFilter, TraceQuery, parse_attr_filter
    from pitwall.traces.store import SpanAppender, SpanSource

_EXPORTS = {
    "DependencyLink": "pitwall.traces.model",
    "KIND_NAMES": "pitwall.traces.model",
    "STATUS_ERROR": "pitwall.traces.model",
    "STATUS_NAMES": "pitwall.traces.model",
    "STATUS_OK": "pitwall.traces.model",
    "STATUS_UNSET": "pitwall.traces.model",
    "SpanAppender": "pitwall.traces.store",
    "SpanFilter": "pitwall.traces.query",
    "SpanColumns": "pitwall.traces.model",
    "SpanRow": "pitwall.traces.model",
    "SpanSource": "pitwall.traces.store",
    "TraceQuery": "pitwall.traces.query",
    "TraceSummary": "pitwall.traces.model",
    "display_trace_id": "pitwall.traces.model",
    "tkey_of": "pitwall.traces.model",
    "parse_attr_filter": "pitwall.traces.query",
}

__all__ = [
    "KIND_NAMES",
    "STATUS_ERROR",
    "STATUS_NAMES",
    "STATUS_OK",
    "STATUS_UNSET",
    "DependencyLink",
    "SpanAppender",
    "SpanColumns",
    "SpanFilter",
    "SpanRow",
    "SpanSource",
    "TraceQuery",
    "TraceSummary",
    "display_trace_id",
    "parse_attr_filter",
    "tkey_of",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
