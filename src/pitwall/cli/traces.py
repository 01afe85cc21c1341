"""``pitwall traces``: search traces and print one as a text waterfall (via the native API)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TenantOpt, TokenOpt, call, fail
from pitwall.cli._output import OutputOpt, emit
from pitwall.cli.query import parse_when

app = typer.Typer(help="Search traces and show one as a waterfall.", no_args_is_help=True)

_WIDTH = 40


def _get(server: str, path: str, params: Any, token: str | None, tenant: str | None) -> Any:
    resp = call("pitwall traces", "GET", server, path, token=token, tenant=tenant, params=params)
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code != 200:
        msg = body["error"]["message"] if isinstance(body, dict) and "error" in body else resp.text.strip()
        fail("pitwall traces", f"HTTP {resp.status_code}: {msg}")
    return body


@app.command("search")
def search(
    service: Annotated[str, typer.Option(help="Service name (service.name).")] = "",
    operation: Annotated[str, typer.Option(help="Span name.")] = "",
    attr: Annotated[list[str] | None, typer.Option(help="k=v, k!=v, k>n, k>=n, k<n, k<=n; repeatable.")] = None,
    status: Annotated[str, typer.Option(help="ok, error or unset.")] = "",
    min_duration: Annotated[str, typer.Option(help="e.g. 250ms.")] = "",
    max_duration: Annotated[str, typer.Option(help="e.g. 2s.")] = "",
    start: Annotated[str, typer.Option(help="now, -1h, unix seconds or RFC 3339.")] = "-1h",
    end: Annotated[str, typer.Option(help="Range end.")] = "now",
    limit: Annotated[int, typer.Option(help="Most traces to list.")] = 20,
    output: OutputOpt = "table",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """List traces with a span matching every filter, newest first."""
    params: list[tuple[str, str]] = [("start", str(parse_when(start))), ("end", str(parse_when(end))),
                                     ("limit", str(limit))]
    for k, v in (("service", service), ("operation", operation), ("status", status),
                 ("min_duration", min_duration), ("max_duration", max_duration)):
        if v:
            params.append((k, v))
    params += [("attr", a) for a in attr or []]
    body = _get(server, "/api/traces/v1/search", params, token, tenant)
    emit([_trace_row(t) for t in body["traces"]], _SEARCH_COLUMNS, output, wide=_SEARCH_WIDE, raw=body,
         empty="no traces")


_SEARCH_COLUMNS = [("TRACE ID", "id"), ("START", "start"), ("ROOT", "root"), ("DURATION", "duration"),
                   ("SPANS", "spans"), ("ERRORS", "errors")]
_SEARCH_WIDE = [("SERVICES", "services")]


def _trace_row(t: dict[str, Any]) -> dict[str, Any]:
    started = datetime.fromtimestamp(int(t["startTimeUnixNano"]) / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]
    return {"id": t["traceId"], "start": started, "root": f"{t['rootServiceName']}: {t['rootSpanName']}",
            "duration": f"{t['durationMs']:.1f}ms", "spans": t["spanCount"], "errors": t["errorCount"],
            "services": t["services"]}


def waterfall(doc: dict[str, Any], width: int = _WIDTH) -> list[str]:
    """Text lines of a trace: one per span, indented by depth, with a bar on the time axis."""
    spans: list[dict[str, Any]] = []
    for rs in doc["resourceSpans"]:
        svc = next((a["value"].get("stringValue", "") for a in rs["resource"]["attributes"]
                    if a["key"] == "service.name"), "")
        for ss in rs["scopeSpans"]:
            spans += [{**s, "_service": svc} for s in ss["spans"]]
    if not spans:
        return []
    t0 = min(int(s["startTimeUnixNano"]) for s in spans)
    t1 = max(int(s["endTimeUnixNano"]) for s in spans)
    total = max(1, t1 - t0)
    ids = {s["spanId"] for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s["parentSpanId"] if s["parentSpanId"] in ids else ""
        children.setdefault(parent, []).append(s)
    lines = [f"trace {spans[0]['traceId']}  {len(spans)} spans  {total / 1e6:.3f}ms"]

    def walk(parent: str, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: int(x["startTimeUnixNano"])):
            a, b = int(s["startTimeUnixNano"]) - t0, int(s["endTimeUnixNano"]) - t0
            lo = a * width // total
            hi = max(lo + 1, b * width // total)
            bar = " " * lo + "█" * (hi - lo) + " " * (width - hi)
            err = " !" if s["status"]["code"] == 2 else ""
            label = f"{'  ' * depth}{s['_service']}: {s['name']}"
            lines.append(f"{label[:48]:<48} |{bar}| {(b - a) / 1e6:9.3f}ms{err}")
            walk(s["spanId"], depth + 1)

    walk("", 0)
    return lines


@app.command("get")
def get(
    trace_id: Annotated[str, typer.Argument(help="Trace id, 16 or 32 hex characters.")],
    output: Annotated[str, typer.Option("--output", "-o", help="waterfall, json or yaml (OTLP).")] = "waterfall",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """Print one trace as a text waterfall (or its OTLP JSON/YAML)."""
    body = _get(server, f"/api/traces/v1/{trace_id}", None, token, tenant)
    if output in ("json", "yaml"):
        emit([], [], output, raw=body)
        return
    for line in waterfall(body):
        typer.echo(line)
