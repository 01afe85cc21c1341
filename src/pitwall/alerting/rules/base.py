"""What every rule shares: the query function seam, health, and output samples.

As in Prometheus' ``rules/manager.go``, rules depend on a *function* that
runs an instant query (``QueryFunc``), never on an engine; one adapter per
rule language (PromQL here, LogQL when the logs pillar offers it) turns the
pillar's query interface into that function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pitwall.core.errors import ExecutionError
from pitwall.core.labels import Labels
from pitwall.metrics import InstantQuery

__all__ = ["Health", "OutSample", "QueryFunc", "RuleError", "Vector", "instant_query_func", "logql_query_func"]

# An instant vector: (labels, value) pairs.
Vector = list[tuple[Labels, float]]
# Runs ``expr`` at ``at_ms`` and returns an instant vector (scalars become one sample).
QueryFunc = Callable[[str, int], Vector]


class RuleError(ExecutionError):
    """A rule evaluation failed (query error, limit, duplicate labelsets...)."""


class Health(StrEnum):
    UNKNOWN = "unknown"
    OK = "ok"
    ERR = "err"


@dataclass(frozen=True)
class OutSample:
    """A sample a rule writes back: labels (with ``__name__``), timestamp, value."""

    labels: Labels
    ts_ms: int
    value: float


def instant_query_func(query: InstantQuery, tenant: str = "default") -> QueryFunc:
    """Adapt the metrics pillar's ``InstantQuery`` to a rule ``QueryFunc`` (Prometheus' EngineQueryFunc)."""

    def run(expr: str, at_ms: int) -> Vector:
        res = query(expr, at_ms, tenant)
        if res.result_type == "vector":
            return [(lbl, float(v[0])) for lbl, v in zip(res.series, res.values, strict=True)]
        if res.result_type == "scalar":
            return [((), float(res.values[0][0]))]
        raise RuleError("rule result is not a vector or scalar")

    return run


def logql_query_func(engine: Any, querier: Callable[[], Any]) -> QueryFunc:
    """Adapt the logs pillar's LogQL engine to a rule ``QueryFunc`` (Loki's ruler runs metric queries)."""

    def run(expr: str, at_ms: int) -> Vector:
        res = engine.query_instant(querier(), expr, at_ms * 1_000_000)
        if res.result_type == "vector":
            return [(s.labels, float(s.points[-1][1])) for s in res.series if s.points]
        if res.result_type == "scalar" and res.scalar is not None:
            return [((), float(res.scalar[1]))]
        raise RuleError("rule result is not a vector or scalar")

    return run


def logql_check(expr: str) -> str | None:
    """Parse error of a LogQL rule expression (log queries are not allowed in rules), or None."""
    from pitwall.logs import LogQLError, LogSelector, parse_logql

    try:
        node = parse_logql(expr)
    except LogQLError as e:
        return e.message
    if isinstance(node, LogSelector):
        return "rule expressions must be LogQL metric queries"
    return None
