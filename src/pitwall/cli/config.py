"""``pitwall config history KEY``: the recorded changes of a Consul KV key (who, when, old -> new, revision)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TokenOpt, call, fail

app = typer.Typer(help="Configuration history of Consul KV keys.", no_args_is_help=True)
_SHOWN = 60  # characters of a value shown in the table


def _value(b64: str | None) -> str:
    if b64 is None:
        return "(none)"
    raw = base64.b64decode(b64)
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return f"({len(raw)} bytes)"
    return text if len(text) <= _SHOWN else text[:_SHOWN - 1] + "…"


@app.command("history")
def history(
    key: Annotated[str, typer.Argument(help="The Consul KV key, e.g. config/web/timeout.")],
    limit: Annotated[int, typer.Option(help="At most this many of the newest changes.")] = 100,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Revisions of KEY, oldest first: revision, time, who, old -> new value."""
    resp = call("pitwall", "GET", server, "/api/config/v1/history", token=token, timeout=30,
                params={"key": key, "limit": limit})
    if resp.status_code >= 400:
        fail("pitwall", f"HTTP {resp.status_code}: {resp.text.strip()}")
    changes: list[dict[str, Any]] = resp.json()["changes"]
    if output == "json":
        typer.echo(json.dumps(changes, indent=2))
        return
    if not changes:
        fail("pitwall", f"no recorded changes of {key!r}")
    table = Table("REVISION", "TIME", "WHO", "OLD", "NEW", box=None)
    for ch in changes:
        when = datetime.fromtimestamp(ch["Time"] / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        table.add_row(str(ch["Revision"]), when, ch["Who"], _value(ch["Old"]), _value(ch["New"]))
    Console(width=200).print(table)
