"""``pitwall query``: PromQL from the terminal: rows with a trend line per series, or JSON/YAML."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

import typer

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TenantOpt, TokenOpt, call, fail
from pitwall.cli._output import Column, OutputOpt, emit
from pitwall.core.durations import parse_duration_ms


def parse_when(text: str, now: float | None = None) -> float:
    """``now``, ``-1h`` (relative), unix seconds, or RFC 3339 -> unix seconds."""
    now = time.time() if now is None else now
    if text == "now":
        return now
    if text.startswith("-"):
        return now - parse_duration_ms(text[1:]) / 1000
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 30


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """A one-line chart of ``values`` (resampled to ``width`` cells by max); NaN cells as spaces."""
    finite = [v for v in values if _finite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    n = len(values)
    cells = min(width, n)
    out = []
    for i in range(cells):
        chunk = [v for v in values[i * n // cells:(i + 1) * n // cells] if _finite(v)]
        if not chunk:
            out.append(" ")
        elif hi == lo:
            out.append(_BLOCKS[0])
        else:
            out.append(_BLOCKS[round((max(chunk) - lo) / (hi - lo) * (len(_BLOCKS) - 1))])
    return "".join(out)


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def series_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for :func:`~pitwall.cli._output.emit` of a Prometheus/Loki ``vector`` or ``matrix`` result."""
    rows = []
    for s in data["result"]:
        row: dict[str, Any] = {"series": series_name(s["metric"])}
        if data["resultType"] == "vector":
            row["value"], row["time"] = _num(s["value"][1]), s["value"][0]
        else:
            vals = [_num(v) for _, v in s.get("values", [])]
            finite = [v for v in vals if _finite(v)]
            row.update(points=len(vals), last=vals[-1] if vals else None,
                       min=min(finite) if finite else None, max=max(finite) if finite else None,
                       mean=sum(finite) / len(finite) if finite else None, trend=sparkline(vals))
        rows.append(row)
    return rows


VECTOR_COLUMNS: list[Column] = [("SERIES", "series"), ("VALUE", "value")]
MATRIX_COLUMNS: list[Column] = [("SERIES", "series"), ("LAST", "last"), ("TREND", "trend")]
MATRIX_WIDE: list[Column] = [("MIN", "min"), ("MAX", "max"), ("MEAN", "mean"), ("POINTS", "points")]


def emit_result(data: dict[str, Any], output: str) -> None:
    """Print a query result: scalars and strings as their value, series as rows (``-o`` as everywhere)."""
    rtype = data["resultType"]
    if rtype in ("scalar", "string") and output in ("table", "wide"):
        typer.echo(data["result"][1])
        return
    rows = series_rows(data) if rtype in ("vector", "matrix") else []
    if rtype == "vector":
        emit(rows, VECTOR_COLUMNS, output, wide=[("TIME", "time")], raw=data, empty="no series")
    else:
        emit(rows, MATRIX_COLUMNS, output, wide=MATRIX_WIDE, raw=data, empty="no series")


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def series_name(metric: dict[str, str]) -> str:
    """``name{k="v", ...}``: the series as PromQL would select it."""
    name = metric.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest or not name else name


def query(
    expr: Annotated[str, typer.Argument(help="PromQL expression.")],
    range_: Annotated[bool, typer.Option("--range", help="Range query instead of instant.")] = False,
    start: Annotated[str, typer.Option(help="Range start: now, -1h, unix or RFC 3339.")] = "-1h",
    end: Annotated[str, typer.Option(help="Range end / instant time.")] = "now",
    step: Annotated[str, typer.Option(help="Range step, e.g. 15s.")] = "15s",
    output: OutputOpt = "table",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """Run a PromQL query; a range query draws each series' trend in the terminal."""
    if range_:
        params = {"query": expr, "start": str(parse_when(start)), "end": str(parse_when(end)),
                  "step": str(parse_duration_ms(step) / 1000)}
        path = "/api/v1/query_range"
    else:
        params = {"query": expr, "time": str(parse_when(end))}
        path = "/api/v1/query"
    resp = call("pitwall query", "POST", server, path, token=token, tenant=tenant, timeout=130, data=params)
    try:
        body = resp.json()
    except ValueError:
        fail("pitwall query", f"HTTP {resp.status_code}: {resp.text.strip()}")
    if body.get("status") != "success":
        fail("pitwall query", f"{body.get('errorType')}: {body.get('error')}")
    for w in body.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    emit_result(body["data"], output)
