"""PromQL: parsing and evaluation with Prometheus 3 semantics."""

from pitwall.metrics.promql.ast import parse_matchers
from pitwall.metrics.promql.engine import Engine, QueryResult
from pitwall.metrics.promql.errors import (
    NativeHistogramsUnsupported,
    PromQLEvalError,
    PromQLParseError,
    QueryTimeout,
    TooManySamples,
)

__all__ = [
    "Engine",
    "NativeHistogramsUnsupported",
    "PromQLEvalError",
    "PromQLParseError",
    "QueryResult",
    "QueryTimeout",
    "TooManySamples",
    "parse_matchers",
]
