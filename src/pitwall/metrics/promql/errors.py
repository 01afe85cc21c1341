"""PromQL error types, mapped onto the shared error kinds (core.errors)."""

from __future__ import annotations

from pitwall.core.errors import BadData, ExecutionError, Timeout


class PromQLParseError(BadData):
    """The expression does not parse (Prometheus' ``bad_data``)."""


class PromQLEvalError(ExecutionError):
    """Evaluation failed, e.g. many-to-many matching (Prometheus' ``execution``)."""


class TooManySamples(ExecutionError):
    """The query would hold more samples than the engine's max-samples limit."""

    def __init__(self) -> None:
        super().__init__("query processing would load too many samples into memory in query execution")


class QueryTimeout(Timeout):
    """The query ran longer than the engine's timeout."""

    def __init__(self) -> None:
        super().__init__("query timed out in expression evaluation")


class NativeHistogramsUnsupported(PromQLEvalError):
    """The query needs native histogram samples, which this engine does not store."""
