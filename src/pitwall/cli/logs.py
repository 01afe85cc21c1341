"""``pitwall logs query 'LOGQL'`` and ``pitwall logs tail 'SELECTOR'``: Loki's API from the terminal.

Works against pitwall or any Loki (``--server``). Log results print as
``<time> <labels> <line>`` (newest first unless ``--direction forward``), or the
lines alone with ``--raw`` (for pipes); metric results as rows with a trend
line per series; ``-o json|yaml`` print Loki's ``data`` object.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TenantOpt, TokenOpt, call, fail, headers
from pitwall.cli.query import emit_result, parse_when

app = typer.Typer(help="Query and tail logs (LogQL, Loki API).", no_args_is_help=True)


def _fmt_labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def format_entries(result: list[dict[str, Any]], *, newest_first: bool = False, raw: bool = False) -> list[str]:
    """Loki ``streams`` as terminal lines, merged across streams in time order; ``raw``: the lines alone."""
    rows = [(int(v[0]), s["stream"], v[1]) for s in result for v in s["values"]]
    rows.sort(key=lambda r: r[0], reverse=newest_first)
    if raw:
        return [line for _, _, line in rows]
    out = []
    for ts, labels, line in rows:
        when = datetime.fromtimestamp(ts / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out.append(f"{when} {_fmt_labels(labels)} {line}")
    return out


def query(
    expr: Annotated[str, typer.Argument(help="LogQL expression.")],
    since: Annotated[str, typer.Option(help="Range start: -1h, now, unix or RFC 3339.")] = "-1h",
    until: Annotated[str, typer.Option(help="Range end (and instant time).")] = "now",
    limit: Annotated[int, typer.Option(help="Most log lines to return.")] = 100,
    direction: Annotated[str, typer.Option(help="backward (newest first) or forward.")] = "backward",
    step: Annotated[str | None, typer.Option(help="Metric query step, e.g. 1m.")] = None,
    instant: Annotated[bool, typer.Option("--instant", help="Instant query at --until.")] = False,
    output: Annotated[str, typer.Option("--output", "-o", help="text (table, wide), json or yaml.")] = "text",
    raw: Annotated[bool, typer.Option("--raw", help="Log lines only: no time, no labels.")] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """Run a LogQL query and print lines or series."""
    end = parse_when(until)
    if instant:
        path, params = "/loki/api/v1/query", {"query": expr, "time": f"{end:.3f}", "limit": str(limit)}
    else:
        params = {"query": expr, "start": f"{parse_when(since):.3f}", "end": f"{end:.3f}", "limit": str(limit),
                  "direction": direction}
        if step:
            params["step"] = step
        path = "/loki/api/v1/query_range"
    resp = call("pitwall logs", "GET", server, path, token=token, tenant=tenant, timeout=130, params=params)
    if resp.status_code != 200:
        fail("pitwall logs", f"HTTP {resp.status_code}: {resp.text.strip()}")
    data = resp.json()["data"]
    if data["resultType"] == "streams" and output in ("text", "table", "wide"):
        for line in format_entries(data["result"], newest_first=direction == "backward", raw=raw):
            typer.echo(line)
        return
    emit_result(data, "table" if output == "text" else output)


def tail(
    expr: Annotated[str, typer.Argument(help="Log query: a selector, optionally with a pipeline.")],
    since: Annotated[str, typer.Option(help="Show entries since, e.g. -5m.")] = "-1h",
    limit: Annotated[int, typer.Option(help="Most lines of history to show first.")] = 100,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    tenant: TenantOpt = None,
    raw: Annotated[bool, typer.Option("--raw", help="Log lines only: no time, no labels.")] = False,
    max_messages: Annotated[int, typer.Option(hidden=True, help="Stop after this many messages (tests).")] = 0,
) -> None:
    """Follow new log lines as they arrive (Loki's tail websocket), until Ctrl-C."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    start_ns = int(parse_when(since) * 1e9)
    qs = urlencode({"query": expr, "limit": str(limit), "start": str(start_ns)})
    url = server.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    n = 0
    try:
        with connect(f"{url}/loki/api/v1/tail?{qs}", additional_headers=headers(token, tenant),
                     open_timeout=10) as ws:
            for frame in ws:
                msg = json.loads(frame)
                for line in format_entries(msg.get("streams") or [], raw=raw):
                    typer.echo(line)
                for d in msg.get("dropped_entries") or []:
                    typer.echo(f"(dropped entry of {_fmt_labels(d['labels'])} at {d['timestamp']})", err=True)
                n += 1
                if max_messages and n >= max_messages:
                    return
    except ConnectionClosed as e:
        reason = e.rcvd.reason if e.rcvd is not None else str(e)
        if reason:
            fail("pitwall logs tail", reason)
    except (OSError, TimeoutError) as e:
        fail("pitwall logs tail", f"cannot reach {server}: {e}")
    except KeyboardInterrupt:
        return


app.command("query")(query)
app.command("tail")(tail)
