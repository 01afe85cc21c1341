"""``pitwall query``: PromQL from the terminal, printed as a table or JSON."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TokenOpt, call, fail
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


def render_table(data: dict[str, Any], console: Console) -> None:
    rtype = data["resultType"]
    result = data["result"]
    if rtype in ("scalar", "string"):
        console.print(result[1])
        return
    table = Table(show_header=True, header_style="bold")
    table.add_column("series")
    if rtype == "vector":
        table.add_column("value", justify="right")
        for s in result:
            table.add_row(_series_name(s["metric"]), s["value"][1])
    else:
        table.add_column("points", justify="right")
        table.add_column("last", justify="right")
        for s in result:
            pts = s.get("values", [])
            table.add_row(_series_name(s["metric"]), str(len(pts)), pts[-1][1] if pts else "")
    console.print(table)


def _series_name(metric: dict[str, str]) -> str:
    name = metric.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest or not name else name


def query(
    expr: Annotated[str, typer.Argument(help="PromQL expression.")],
    range_: Annotated[bool, typer.Option("--range", help="Range query instead of instant.")] = False,
    start: Annotated[str, typer.Option(help="Range start: now, -1h, unix or RFC 3339.")] = "-1h",
    end: Annotated[str, typer.Option(help="Range end / instant time.")] = "now",
    step: Annotated[str, typer.Option(help="Range step, e.g. 15s.")] = "15s",
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    if range_:
        params = {"query": expr, "start": str(parse_when(start)), "end": str(parse_when(end)),
                  "step": str(parse_duration_ms(step) / 1000)}
        path = "/api/v1/query_range"
    else:
        params = {"query": expr, "time": str(parse_when(end))}
        path = "/api/v1/query"
    resp = call("pitwall query", "POST", server, path, token=token, timeout=130, data=params)
    try:
        body = resp.json()
    except ValueError:
        fail("pitwall query", f"HTTP {resp.status_code}: {resp.text.strip()}")
    if body.get("status") != "success":
        fail("pitwall query", f"{body.get('errorType')}: {body.get('error')}")
    if output == "json":
        typer.echo(json.dumps(body["data"], indent=2))
        return
    console = Console()
    for w in body.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {w}")
    render_table(body["data"], console)

