"""What every rule shares: the query function seam, health, and output samples.

As in Prometheus' ``rules/manager.go``, rules depend on a *function* that
runs an instant query (``QueryFunc``), never on an engine; one adapter per
rule language (PromQL here, LogQL when the logs pillar offers it) turns the
pillar's query interface into that function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pitwall.core.errors import ExecutionError
from pitwall.core.gofmt import go_quote
from pitwall.core.labels import METRIC_NAME, Labels, Matcher
from pitwall.metrics import InstantQuery

__all__ = ["ForStateReader", "Health", "OutSample", "QueryFunc", "RuleError", "Vector", "instant_for_state", "instant_query_func",
           "logql_query_func"]

# An instant vector: (labels, value) pairs.
Vector = list[tuple[Labels, float]]
# Runs ``expr`` at ``at_ms`` and returns an instant vector (scalars become one sample).
QueryFunc = Callable[[str, int], Vector]
# The latest ALERTS_FOR_STATE sample per series (labels without ``__name__``) in [mint, maxt]: (ms, value).
ForStateReader = Callable[[Sequence[Matcher], int, int], dict[Labels, tuple[int, float]]]


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


def instant_for_state(query: InstantQuery, tenant: str = "default") -> ForStateReader:
    """Read ``for`` state through the PromQL query interface (a shared metrics engine, ``backends.metrics``).

    An instant query of the range selector ``ALERTS_FOR_STATE{...}[tolerance]`` at ``maxt`` returns the raw
    samples; the last one of each series is its state. The engine's API does not return staleness markers,
    so an alert resolved and active again restores from its previous activity's last sample, as after an
    outage (the ``for`` state of the new activity is written from its first evaluation on).
    """

    def read(matchers: Sequence[Matcher], mint: int, maxt: int) -> dict[Labels, tuple[int, float]]:
        sel = ",".join(f"{m.name}{m.type.value}{go_quote(m.value)}" for m in matchers)
        res = query(f"{{{sel}}}[{max(1, maxt - mint)}ms]", maxt, tenant)
        found: dict[Labels, tuple[int, float]] = {}
        for lbl, ts, vals in zip(res.series, res.timestamps, res.values, strict=False):
            if len(ts):
                found[tuple(p for p in lbl if p[0] != METRIC_NAME)] = (int(ts[-1]), float(vals[-1]))
        return found

    return read


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
