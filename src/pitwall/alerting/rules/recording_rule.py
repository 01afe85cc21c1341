"""Recording rules: evaluate an expression, rename the result, write it back."""

from __future__ import annotations

from pitwall.alerting.rules.base import Health, OutSample, QueryFunc, RuleError
from pitwall.core.labels import METRIC_NAME, Labels


class RecordingRule:
    """Prometheus' ``RecordingRule``: one expression, a new metric name, static labels."""

    kind = "recording"

    def __init__(self, name: str, expr: str, labels: dict[str, str], query: QueryFunc) -> None:
        self.name = name
        self.expr = expr
        self.labels = dict(labels)
        self.query = query
        self.health = Health.UNKNOWN
        self.last_error = ""
        self.last_evaluation_ms = 0
        self.evaluation_seconds = 0.0

    def identity(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        """Rules with the same identity carry state across reloads."""
        return self.name, self.expr, tuple(sorted(self.labels.items()))

    def eval(self, ts_ms: int, query_offset_ms: int, limit: int) -> list[OutSample]:
        at = ts_ms - query_offset_ms
        vector = self.query(self.expr, at)
        out: list[OutSample] = []
        seen: set[Labels] = set()
        for lbl, v in vector:
            d = dict(lbl)
            d[METRIC_NAME] = self.name
            for k, val in self.labels.items():
                if val == "":
                    d.pop(k, None)  # setting an empty value deletes the label, as labels.Builder does
                else:
                    d[k] = val
            key: Labels = tuple(sorted(d.items()))
            if key in seen:
                raise RuleError("vector contains metrics with the same labelset after applying rule labels")
            seen.add(key)
            out.append(OutSample(key, at, v))
        if limit > 0 and len(out) > limit:
            raise RuleError(f"exceeded limit of {limit} with {len(out)} series")
        return out
