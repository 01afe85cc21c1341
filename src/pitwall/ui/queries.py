"""Adapters from the metrics pillar's query interfaces to the UI's view models.

Pages never touch storage: they call ``InstantQuery``/``RangeQuery`` (the
callables alerting uses), the metrics ``Querier`` protocol for label
completion, and ``ScrapeManager.targets()``. Everything returned here is plain
data a template or a JSON response can use as is.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pitwall.core.errors import PitwallError
from pitwall.core.labels import METRIC_NAME, Labels, Matcher
from pitwall.metrics import (
    InstantQuery,
    Querier,
    QueryResult,
    RangeQuery,
    TargetsSnapshot,
    format_float,
    labels_string,
    parse_matchers,
)
from pitwall.ui.timerange import TimeRange, pick_step_ms

__all__ = [
    "PROMQL_FUNCTIONS",
    "ChartData",
    "ChartSeries",
    "MetricsView",
    "QueryError",
    "ServiceStats",
    "TableData",
    "TargetRow",
    "legend_name",
    "query_error",
    "series_name",
    "sparkline_path",
    "targets_view",
]

PROMQL_FUNCTIONS = sorted([
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_quantile", "holt_winters", "hour", "idelta", "increase", "irate", "label_join",
    "label_replace", "last_over_time", "ln", "log10", "log2", "max_over_time", "min_over_time", "minute",
    "month", "predict_linear", "present_over_time", "quantile_over_time", "rate", "resets", "round", "scalar",
    "sgn", "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "time",
    "timestamp", "vector", "year", "sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "group",
])

_POSITION = re.compile(r"^(\d+):(\d+): (.*)$", re.S)


@dataclass(frozen=True)
class QueryError:
    """An error to show inline; ``line``/``col`` (1-based) when the engine reports a position."""

    message: str
    kind: str = "bad_data"
    line: int | None = None
    col: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "kind": self.kind, "line": self.line, "col": self.col}


def query_error(e: PitwallError) -> QueryError:
    m = _POSITION.match(e.message)
    if m:
        return QueryError(e.message, e.kind, int(m.group(1)), int(m.group(2)))
    return QueryError(e.message, e.kind)


_LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def legend_name(fmt: str, labels: dict[str, str]) -> str:
    """Grafana's ``legendFormat``: each ``{{label}}`` replaced by the series' value of it (missing: empty)."""
    return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), fmt)


def series_name(labels: Labels) -> str:
    name = ""
    rest: list[tuple[str, str]] = []
    for k, v in labels:
        if k == METRIC_NAME:
            name = v
        else:
            rest.append((k, v))
    if not rest:
        return name or "{}"
    return name + labels_string(tuple(rest))


@dataclass
class ChartSeries:
    name: str
    labels: dict[str, str]
    values: list[float | None]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "labels": self.labels, "values": self.values}


@dataclass
class ChartData:
    """Series aligned on one step grid: ``x`` in unix seconds, gaps as None (uPlot's layout)."""

    x: list[float]
    series: list[ChartSeries]
    step_ms: int
    warnings: list[str] = field(default_factory=list)
    inspect: list[dict[str, Any]] = field(default_factory=list)  # per query: expr, ms, series, points

    def to_json(self) -> dict[str, Any]:
        return {"x": self.x, "series": [s.to_json() for s in self.series], "step": self.step_ms / 1000,
                "warnings": self.warnings, "inspect": self.inspect}

    def merge(self, other: ChartData) -> ChartData:
        """The series of ``other`` (a query over the same range and step) added to these."""
        self.series.extend(other.series)
        self.warnings.extend(w for w in other.warnings if w not in self.warnings)
        self.inspect.extend(other.inspect)
        return self

    def named(self, legend: str, expr: str = "") -> ChartData:
        """The series named by a Grafana ``legendFormat`` (``{{label}}``); a series without labels is named
        by its query ``expr`` rather than ``{}``, as Grafana does."""
        for s in self.series:
            if legend:
                s.name = legend_name(legend, s.labels) or s.name
            elif s.name == "{}" and expr:
                s.name = expr
        return self


@dataclass
class TableData:
    result_type: str
    rows: list[tuple[str, str]]  # (series, value)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"resultType": self.result_type, "rows": [list(r) for r in self.rows], "warnings": self.warnings}


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def chart_of(res: QueryResult, start_ms: int, end_ms: int, step_ms: int, max_series: int = 200) -> ChartData:
    n = (end_ms - start_ms) // step_ms + 1
    x = [(start_ms + i * step_ms) / 1000 for i in range(n)]
    out: list[ChartSeries] = []
    for lb, ts, vals in list(zip(res.series, res.timestamps, res.values, strict=True))[:max_series]:
        col: list[float | None] = [None] * n
        idx = ((np.asarray(ts, dtype=np.int64) - start_ms) // step_ms).tolist()
        for i, v in zip(idx, np.asarray(vals, dtype=np.float64).tolist(), strict=True):
            if 0 <= i < n:
                col[i] = _finite(v)
        out.append(ChartSeries(series_name(lb), dict(lb), col))
    warnings = list(res.warnings)
    if len(res.series) > max_series:
        warnings.append(f"showing {max_series} of {len(res.series)} series")
    return ChartData(x, out, step_ms, warnings)


def table_of(res: QueryResult) -> TableData:
    if res.result_type == "string":
        return TableData("string", [("string", res.string_value)], list(res.warnings))
    rows: list[tuple[str, str]] = []
    for lb, vals in zip(res.series, res.values, strict=True):
        if res.result_type == "matrix":
            shown = " ".join(format_float(float(v)) for v in vals[-10:])
            rows.append((series_name(lb), shown))
        else:
            rows.append((series_name(lb) if res.result_type != "scalar" else "scalar", format_float(float(vals[0]))))
    return TableData(res.result_type, rows, list(res.warnings))


def _selector_matchers(metric: str, selector: str) -> list[Matcher]:
    text = selector.strip()
    if metric:
        text = metric + (text if text.startswith("{") else "")
    if not text:
        return []
    try:
        return list(parse_matchers(text))
    except PitwallError:
        return []
    except ValueError:
        return []


@dataclass
class MetricsView:
    """The metrics explorer's reads: PromQL instant/range queries and label completion."""

    instant: InstantQuery
    range_query: RangeQuery
    querier: Callable[[str], Querier]

    def chart(self, expr: str, tr: TimeRange, points: int, tenant: str = "default") -> ChartData:
        step = pick_step_ms(tr.span_ms, points)
        start = tr.start_ms - tr.start_ms % step
        end = tr.end_ms - tr.end_ms % step
        t0 = time.perf_counter()
        res = self.range_query(expr, start, end, step, tenant)
        took = time.perf_counter() - t0
        out = chart_of(res, start, end, step)
        out.inspect.append({"expr": expr, "ms": round(took * 1000, 2), "series": len(res.series),
                            "points": int(sum(len(v) for v in res.values)),
                            "samples": res.stats.samples if res.stats else None,  # read from storage
                            "start": start / 1000, "end": end / 1000, "step": step / 1000})
        return out

    def table(self, expr: str, at_ms: int, tenant: str = "default") -> TableData:
        return table_of(self.instant(expr, at_ms, tenant))

    def vector(self, expr: str, at_ms: int, tenant: str = "default") -> list[tuple[Labels, float]]:
        res = self.instant(expr, at_ms, tenant)
        if res.result_type != "vector":
            return []
        return [(lb, float(v[0])) for lb, v in zip(res.series, res.values, strict=True)]

    def metric_names(self, tr: TimeRange, tenant: str = "default") -> list[str]:
        return self.querier(tenant).label_values(METRIC_NAME, [], tr.start_ms, tr.end_ms)

    def label_names(self, metric: str, tr: TimeRange, tenant: str = "default") -> list[str]:
        ms = _selector_matchers(metric, "")
        return [n for n in self.querier(tenant).label_names(ms, tr.start_ms, tr.end_ms) if n != METRIC_NAME]

    def label_values(self, name: str, selector: str, tr: TimeRange, tenant: str = "default") -> list[str]:
        ms = _selector_matchers("", selector)
        return self.querier(tenant).label_values(name, ms, tr.start_ms, tr.end_ms)


# ------------------------------------------------------------------ targets


@dataclass(frozen=True)
class TargetRow:
    pool: str
    url: str
    health: str
    labels: dict[str, str]
    last_scrape: str
    last_scrape_ago_s: float | None
    duration_ms: float
    last_error: str
    interval: str


def targets_view(snap: TargetsSnapshot, now_s: float) -> dict[str, list[TargetRow]]:
    """Active targets grouped by scrape pool."""
    pools: dict[str, list[TargetRow]] = {}
    for t in snap.active:
        ago = now_s - t.last_scrape.timestamp() if t.last_scrape else None
        pools.setdefault(t.scrape_pool, []).append(TargetRow(
            pool=t.scrape_pool, url=t.scrape_url, health=str(t.health), labels=t.labels,
            last_scrape=t.last_scrape.isoformat(timespec="seconds") if t.last_scrape else "never",
            last_scrape_ago_s=ago, duration_ms=t.last_scrape_duration * 1000, last_error=t.last_error,
            interval=t.scrape_interval))
    for pool in snap.dropped_counts:
        pools.setdefault(pool, [])
    return pools


# ------------------------------------------------------------------ overview (span metrics)

CALLS = "traces_span_metrics_calls_total"
DURATION = "traces_span_metrics_duration_milliseconds_bucket"
_ENTRY = 'span_kind=~"SPAN_KIND_SERVER|SPAN_KIND_CONSUMER"'


@dataclass
class ServiceStats:
    service: str
    rate: float | None = None  # requests/s
    error_ratio: float | None = None
    p50: float | None = None  # ms
    p95: float | None = None
    p99: float | None = None
    spark: list[float | None] = field(default_factory=list)

    @property
    def spark_path(self) -> str:
        return sparkline_path(self.spark)


def _rate_window(span_ms: int) -> str:
    return f"{max(span_ms // 1000, 60)}s"


def service_stats(mv: MetricsView, tr: TimeRange, services: Sequence[str], tenant: str = "default",
                  only: str = "") -> list[ServiceStats]:
    """Request rate, error ratio and latency quantiles per service over the range, from span metrics."""
    w = _rate_window(tr.span_ms)
    sel = _ENTRY + (f', service_name="{_esc(only)}"' if only else "")
    stats: dict[str, ServiceStats] = {s: ServiceStats(s) for s in services if not only or s == only}

    def get(svc: str) -> ServiceStats:
        return stats.setdefault(svc, ServiceStats(svc))

    at = tr.end_ms
    for lb, v in mv.vector(f"sum by (service_name) (rate({CALLS}{{{sel}}}[{w}]))", at, tenant):
        get(dict(lb).get("service_name", "")).rate = _finite(v)
    errs = {dict(lb).get("service_name", ""): v for lb, v in mv.vector(
        f'sum by (service_name) (rate({CALLS}{{{sel}, status_code="STATUS_CODE_ERROR"}}[{w}]))', at, tenant)}
    for s in stats.values():
        if s.rate is not None:
            s.error_ratio = (errs.get(s.service, 0.0) / s.rate) if s.rate > 0 else 0.0
    for q, attr in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        expr = f"histogram_quantile({q}, sum by (service_name, le) (rate({DURATION}{{{sel}}}[{w}])))"
        for lb, v in mv.vector(expr, at, tenant):
            setattr(get(dict(lb).get("service_name", "")), attr, _finite(v))
    step = pick_step_ms(tr.span_ms, 40)
    sw = f"{max(2 * step // 1000, 60)}s"
    start, end = tr.start_ms - tr.start_ms % step, tr.end_ms - tr.end_ms % step
    res = mv.range_query(f"sum by (service_name) (rate({CALLS}{{{sel}}}[{sw}]))", start, end, step, tenant)
    chart = chart_of(res, start, end, step)
    for cs in chart.series:
        svc = cs.labels.get("service_name", "")
        if svc in stats:
            stats[svc].spark = cs.values
    stats.pop("", None)
    return sorted(stats.values(), key=lambda s: s.service)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


def sparkline_path(values: Sequence[float | None], width: float = 120, height: float = 24) -> str:
    """An SVG path (``M x y L ...``) of the values; gaps break the line."""
    pts = [v for v in values if v is not None]
    if not pts:
        return ""
    lo, hi = min(pts), max(pts)
    span = hi - lo or 1.0
    n = max(len(values) - 1, 1)
    out: list[str] = []
    pen_up = True
    for i, v in enumerate(values):
        if v is None:
            pen_up = True
            continue
        x = i * width / n
        y = height / 2 if hi == lo else height - 1 - (v - lo) / span * (height - 2)
        isolated = pen_up and (i + 1 >= len(values) or values[i + 1] is None)
        out.append(f"{'M' if pen_up else 'L'}{x:.1f} {y:.1f}" + (" h-2" if isolated else ""))
        pen_up = False
    return " ".join(out)
