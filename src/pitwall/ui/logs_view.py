"""View models of the logs explorer, built on the logs pillar's LogQL engine and querier.

Results are read in Loki's wire shape (``to_loki_data()``), the contract the
Loki API serves, so this module does not depend on the engine's internals.
Each line gets its parsed fields (JSON or logfmt), a severity and, when
present, the trace id it belongs to.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pitwall.core.durations import NS_PER_MS
from pitwall.logs import Direction, LogsApiDeps, streams_json
from pitwall.ui.queries import ChartData, ChartSeries
from pitwall.ui.timerange import TimeRange, pick_step_ms

__all__ = ["LogLine", "LogsView", "parse_fields", "severity_of"]

NS = 1_000_000_000
_LOGFMT = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_LEVEL_KEYS = ("level", "severity", "detected_level", "lvl", "severity_text", "loglevel")
_TRACE_KEYS = ("trace_id", "traceid", "traceId", "trace.id", "traceID")
# Level spellings (lower case) and the level the UI shows them as: a line's severity and a volume series' name.
_LEVELS = {
    "trace": "trace", "trc": "trace", "debug": "debug", "dbg": "debug", "dbug": "debug", "info": "info",
    "inf": "info", "information": "info", "notice": "info", "warn": "warn", "warning": "warn", "wrn": "warn",
    "error": "error", "err": "error", "eror": "error", "fatal": "critical", "critical": "critical",
    "crit": "critical", "panic": "critical", "emerg": "critical", "alert": "critical",
}
_LEVEL_WORD = re.compile(r"\b(TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL|CRITICAL)\b")
_HEX = re.compile(r"^[0-9a-fA-F]{16}([0-9a-fA-F]{16})?$")


def _flatten(prefix: str, obj: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out.append((prefix, obj if isinstance(obj, str) else json.dumps(obj)))


def parse_fields(line: str) -> list[tuple[str, str]]:
    """Fields of a JSON object line (flattened with dots) or of a logfmt line; [] otherwise."""
    text = line.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            out: list[tuple[str, str]] = []
            _flatten("", obj, out)
            return out
    pairs = _LOGFMT.findall(text)
    if len(pairs) >= 2:
        return [(k, v[1:-1].replace('\\"', '"') if v.startswith('"') else v) for k, v in pairs]
    return []


def severity_of(labels: dict[str, str], fields: list[tuple[str, str]], line: str) -> str:
    for src in (labels, dict(fields)):
        for k in _LEVEL_KEYS:
            v = src.get(k)
            if v:
                return _LEVELS.get(v.lower(), "unknown")
    m = _LEVEL_WORD.search(line[:200])
    return _LEVELS.get(m.group(1).lower(), "unknown") if m else "unknown"


@dataclass
class LogLine:
    ts_ns: int
    labels: dict[str, str]
    line: str
    metadata: dict[str, str] = field(default_factory=dict)
    fields: list[tuple[str, str]] = field(default_factory=list)
    level: str = "unknown"
    trace_id: str = ""

    @property
    def time(self) -> str:
        dt = datetime.fromtimestamp(self.ts_ns / NS, UTC)
        return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{(self.ts_ns // NS_PER_MS) % 1000:03d}"


def to_line(ts: str | int, line: str, labels: dict[str, str], md: dict[str, str] | None = None) -> LogLine:
    meta = md or {}
    fields = parse_fields(line)
    allf = {**dict(fields), **meta}
    trace = next((allf[k] for k in _TRACE_KEYS if allf.get(k) and _HEX.match(allf[k])), "")
    return LogLine(int(ts), labels, line, meta, fields, severity_of({**labels, **meta}, fields, line),
                   trace.lower())


def lines_of(data: dict[str, Any], limit: int) -> list[LogLine]:
    out: list[LogLine] = []
    for s in data.get("result", []):
        labels = dict(s.get("stream", {}))
        for v in s.get("values", []):
            md = v[2] if len(v) > 2 and isinstance(v[2], dict) else None
            if md is not None and ("structuredMetadata" in md or "parsed" in md):
                md = {**md.get("structuredMetadata", {}), **md.get("parsed", {})}
            out.append(to_line(v[0], v[1], labels, md))
    out.sort(key=lambda ln: ln.ts_ns, reverse=True)
    return out[:limit]


@dataclass
class LogsResult:
    kind: str  # "streams" | "matrix"
    lines: list[LogLine] = field(default_factory=list)
    chart: ChartData | None = None


def _chart_from_matrix(data: dict[str, Any], start_ms: int, end_ms: int, step_ms: int) -> ChartData:
    n = (end_ms - start_ms) // step_ms + 1
    x = [(start_ms + i * step_ms) / 1000 for i in range(n)]
    series: list[ChartSeries] = []
    for s in data.get("result", [])[:200]:
        metric = dict(s.get("metric", {}))
        col: list[float | None] = [None] * n
        for t, v in s.get("values", []):
            i = (round(float(t) * 1000) - start_ms) // step_ms
            if 0 <= i < n:
                col[i] = float(v)
        name = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"
        series.append(ChartSeries(name, metric, col))
    return ChartData(x, series, step_ms)



# the volume histogram's stacking order, most severe on top (Grafana's level colours follow the names)
LEVEL_ORDER = {"unknown": 0, "trace": 1, "debug": 2, "info": 3, "warn": 4, "error": 5, "critical": 6}
def level_name(labels: dict[str, str]) -> str:
    """The level a volume series stands for: its ``level`` label, else ``detected_level``, normalised (a value
    that is no known level is kept, so its series stays apart)."""
    raw = (labels.get("level") or labels.get("detected_level") or "unknown").lower()
    return _LEVELS.get(raw, raw)


CONTEXT_WINDOW_NS = 2 * 3600 * NS  # how far log context looks each way, as Grafana's context query


def selector_of(labels: dict[str, str]) -> str:
    """The LogQL stream selector matching exactly these labels."""
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ", ".join(f'{k}="{esc(v)}"' for k, v in sorted(labels.items())) + "}"

@dataclass
class LogsView:
    """Reads of the logs explorer, through the same engine and querier the Loki API uses."""

    deps: LogsApiDeps

    def run(self, expr: str, tr: TimeRange, limit: int, points: int, tenant: str = "default") -> LogsResult:
        step = pick_step_ms(tr.span_ms, points)
        start_ns, end_ns = tr.start_ms * NS_PER_MS, tr.end_ms * NS_PER_MS
        q = self.deps.reads.querier(tenant)
        res = self.deps.engine.query_range(q, expr, start_ns, end_ns, step * NS_PER_MS, limit=limit,
                                           direction=Direction.BACKWARD)
        try:  # stream labels apart from structured metadata (trace_id) and parsed labels
            data: dict[str, Any] = res.to_loki_data(categorize_labels=True)
        except TypeError:
            data = res.to_loki_data()
        if data.get("resultType") == "streams":
            return LogsResult("streams", lines=lines_of(data, limit))
        s0, e0 = tr.start_ms - tr.start_ms % step, tr.end_ms - tr.end_ms % step
        return LogsResult("matrix", chart=_chart_from_matrix(data, s0, e0, step))

    def volume(self, expr: str, tr: TimeRange, points: int, tenant: str = "default") -> ChartData:
        """Lines per step of a log query by level (the histogram above the lines): Grafana's Explore asks
        ``sum by (level, detected_level) (count_over_time(...))``; each series is named by its level."""
        step = pick_step_ms(tr.span_ms, points)
        s0, e0 = tr.start_ms - tr.start_ms % step, tr.end_ms - tr.end_ms % step
        vexpr = f"sum by (level, detected_level) (count_over_time({expr} [{step // 1000}s]))"
        q = self.deps.reads.querier(tenant)
        res = self.deps.engine.query_range(q, vexpr, s0 * NS_PER_MS, e0 * NS_PER_MS, step * NS_PER_MS,
                                           limit=1000, direction=Direction.BACKWARD)
        chart = _chart_from_matrix(res.to_loki_data(), s0, e0, step)
        for s in chart.series:
            s.name = level_name(s.labels)
        chart.series.sort(key=lambda s: LEVEL_ORDER.get(s.name, len(LEVEL_ORDER)))
        return chart

    def context(self, labels: dict[str, str], ts_ns: int, size: int,
                tenant: str = "default") -> tuple[list[LogLine], list[LogLine]]:
        """Grafana's log context: up to ``size`` lines of the same stream before ``ts_ns`` and after it
        (within ``CONTEXT_WINDOW_NS`` each way), both oldest first."""
        sel = selector_of(labels)
        q = self.deps.reads.querier(tenant)
        run = self.deps.engine.query_range
        before = run(q, sel, ts_ns - CONTEXT_WINDOW_NS, ts_ns, NS, limit=size, direction=Direction.BACKWARD)
        after = run(q, sel, ts_ns + 1, ts_ns + CONTEXT_WINDOW_NS, NS, limit=size, direction=Direction.FORWARD)
        older = sorted(lines_of(before.to_loki_data(), size), key=lambda ln: ln.ts_ns)
        newer = sorted(lines_of(after.to_loki_data(), size * 2), key=lambda ln: ln.ts_ns)[:size]
        return older, newer

    def label_names(self, tr: TimeRange, tenant: str = "default") -> list[str]:
        return self.deps.reads.querier(tenant).label_names(tr.start_ms * NS_PER_MS, tr.end_ms * NS_PER_MS + 1)

    def label_values(self, name: str, tr: TimeRange, tenant: str = "default") -> list[str]:
        return self.deps.reads.querier(tenant).label_values(name, [], tr.start_ms * NS_PER_MS, tr.end_ms * NS_PER_MS + 1)

    def by_trace(self, trace_id: str, tenant: str = "default", limit: int = 1000) -> list[LogLine]:
        """Every line whose structured metadata names ``trace_id`` (the native trace-logs query)."""
        q = self.deps.reads.querier(tenant)
        streams = q.by_trace_id(trace_id.lower(), 0, (int(datetime.now(UTC).timestamp()) + 3600) * NS, limit)
        out = lines_of({"result": streams_json(streams)}, limit)
        out.sort(key=lambda ln: ln.ts_ns)
        return out
