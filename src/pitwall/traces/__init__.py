"""The traces pillar: OTLP and Zipkin span ingest, Zipkin and native query APIs,
the service dependency graph and span metrics.

Other pillars may import only what ``__all__`` lists.
"""

from pitwall.traces.model import DependencyLink, SpanRow, TraceSummary
from pitwall.traces.query import SpanFilter, TraceQuery

__all__ = ["DependencyLink", "SpanFilter", "SpanRow", "TraceQuery", "TraceSummary"]
