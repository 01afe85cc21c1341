"""Shared helpers for LogQL tests: a small querier and query shortcuts."""

from __future__ import annotations

from typing import Any

from pitwall.logs.logql import LogQLEngine
from pitwall.logs.memory import InMemoryLogQuerier
from pitwall.logs.model import Direction, LogEntry, PushStream

S = 1_000_000_000


def lbl(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def querier(*streams: tuple[dict[str, str], list[tuple[int, str]]]) -> InMemoryLogQuerier:
    """A querier from ``({labels}, [(ts_seconds, line), ...])`` pairs."""
    q = InMemoryLogQuerier()
    q.push(
        PushStream(tuple(sorted(labels.items())), [LogEntry(int(t * S), line) for t, line in entries])
        for labels, entries in streams
    )
    return q


def one_line(line: str, labels: dict[str, str] | None = None) -> InMemoryLogQuerier:
    return querier((labels or {"job": "test"}, [(1, line)]))


def streams(
    q: InMemoryLogQuerier,
    expr: str,
    *,
    start: float = 0,
    end: float = 100,
    limit: int = 100,
    direction: Direction = Direction.BACKWARD,
    engine: LogQLEngine | None = None,
) -> list[dict[str, Any]]:
    res = (engine or LogQLEngine()).query_range(
        q, expr, int(start * S), int(end * S), S, limit=limit, direction=direction
    )
    data = res.to_loki_data()
    assert data["resultType"] == "streams"
    result: list[dict[str, Any]] = data["result"]
    return result


def labels_of(q: InMemoryLogQuerier, expr: str) -> dict[str, str]:
    """The label set of the single entry ``expr`` returns."""
    res = streams(q, expr)
    assert len(res) == 1 and len(res[0]["values"]) == 1, res
    out: dict[str, str] = res[0]["stream"]
    return out


def line_of(q: InMemoryLogQuerier, expr: str) -> str:
    res = streams(q, expr)
    assert len(res) == 1 and len(res[0]["values"]) == 1, res
    line: str = res[0]["values"][0][1]
    return line


def matrix(
    q: InMemoryLogQuerier, expr: str, start: float, end: float, step: float, engine: LogQLEngine | None = None
) -> dict[tuple[tuple[str, str], ...], list[tuple[float, str]]]:
    """``{labels: [(ts_seconds, "value"), ...]}`` of a range metric query."""
    res = (engine or LogQLEngine()).query_range(q, expr, int(start * S), int(end * S), int(step * S))
    data = res.to_loki_data()
    assert data["resultType"] == "matrix"
    return {tuple(sorted(s["metric"].items())): [(t, v) for t, v in s["values"]] for s in data["result"]}


def vector(q: InMemoryLogQuerier, expr: str, at: float) -> list[tuple[dict[str, str], str]]:
    res = LogQLEngine().query_instant(q, expr, int(at * S))
    data = res.to_loki_data()
    assert data["resultType"] == "vector", data
    return [(s["metric"], s["value"][1]) for s in data["result"]]
