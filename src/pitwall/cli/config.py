"""``pitwall config history KEY``, ``config diff [NAME] REV REV``, ``config rollback KEY --to REV``,
``config diff-env A B``: config history of Consul KV keys, ConfigMaps and Secrets (who, when, old -> new,
revision), the difference between two revisions, putting a value back, and comparing two environments."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TokenOpt, call, fail

app = typer.Typer(help="Check a pitwall.yaml; history, diff and rollback of Consul KV keys, ConfigMaps and "
                       "Secrets; compare environments.", no_args_is_help=True)
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


@app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="The pitwall.yaml to check.")],
) -> None:
    """Check FILE and every file it names (rules, scrape configs, Alertmanager, gateway, TLS, dashboards)."""
    from pitwall.cli.config_check import check_config_file

    raise typer.Exit(check_config_file(file))


@app.command("history")
def history(
    key: Annotated[str, typer.Argument(help="A Consul KV key (config/web/timeout), or configmap/NS/NAME or "
                                            "secret/NS/NAME for a Kubernetes ConfigMap's or Secret's data.")],
    limit: Annotated[int, typer.Option(help="At most this many of the newest changes.")] = 100,
    source: Annotated[str, typer.Option(help="consul or kubernetes (default: kubernetes for configmap/... and "
                                             "secret/... keys, else consul).")] = "",
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Revisions of KEY, oldest first: revision, time, who, old -> new value (Secret values as digests)."""
    source = source or ("kubernetes" if key.startswith(("configmap/", "secret/")) else "consul")
    resp = call("pitwall", "GET", server, "/api/config/v1/history", token=token, timeout=30,
                params={"key": key, "limit": limit, "source": source})
    if resp.status_code >= 400:
        fail("pitwall", f"HTTP {resp.status_code}: {_message(resp)}")
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


@app.command("diff")
def diff(
    args: Annotated[list[str], typer.Argument(
        help="REV REV (Consul KV keys), or configmap/NS/NAME REV REV or secret/NS/NAME REV REV (one object's "
             "data; a Secret's values as digests). Revisions are store revisions (from history or "
             "X-Consul-Index).", show_default=False)],
    prefix: Annotated[str, typer.Option(help="Only keys under this prefix (Consul KV).")] = "",
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Keys whose values differ between two revisions: old -> new."""
    name = args[0] if len(args) == 3 else ""
    revs = args[1:] if name else args
    if len(revs) != 2 or not all(r.isdigit() for r in revs):
        fail("pitwall", "usage: pitwall config diff [configmap/NS/NAME | secret/NS/NAME] REV REV")
    params: dict[str, Any] = {"from": revs[0], "to": revs[1]}
    params.update({"key": name} if name else {"prefix": prefix})
    resp = call("pitwall", "GET", server, "/api/config/v1/diff", token=token, timeout=30, params=params)
    if resp.status_code >= 400:
        fail("pitwall", f"HTTP {resp.status_code}: {_message(resp)}")
    changes: list[dict[str, Any]] = resp.json()["changes"]
    if output == "json":
        typer.echo(json.dumps(changes, indent=2))
        return
    table = Table("KEY", "OLD", "NEW", box=None)
    for ch in changes:
        table.add_row(ch["Key"], _value(ch["Old"]), _value(ch["New"]))
    Console(width=200).print(table)


@app.command("diff-env")
def diff_env(
    env_a: Annotated[str, typer.Argument(help="An environment: the KV prefix config/ENV_A/.")],
    env_b: Annotated[str, typer.Argument(help="The environment to compare it with.")],
    service: Annotated[str, typer.Option(help="Only this service's keys (config/ENV/SERVICE/...).")] = "",
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Keys (SERVICE/KEY) only in ENV_A, only in ENV_B, and with different values in the two."""
    resp = call("pitwall", "GET", server, "/api/config/v1/diff-env", token=token, timeout=30,
                params={"a": env_a, "b": env_b, "service": service})
    if resp.status_code >= 400:
        fail("pitwall", f"HTTP {resp.status_code}: {_message(resp)}")
    out: dict[str, Any] = resp.json()
    if output == "json":
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table("KEY", "STATE", env_a.upper(), env_b.upper(), box=None)
    for k in out["only_in_a"]:
        table.add_row(k, f"only in {env_a}", "", "")
    for k in out["only_in_b"]:
        table.add_row(k, f"only in {env_b}", "", "")
    for d in out["different"]:
        table.add_row(d["Key"], "differs", _value(d["A"]), _value(d["B"]))
    Console(width=200).print(table)


@app.command("rollback")
def rollback(
    key: Annotated[str, typer.Argument(help="The Consul KV key, or configmap/NS/NAME or secret/NS/NAME.")],
    to: Annotated[int, typer.Option("--to", help="Put back the value (or data) it had at this revision.")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Set KEY back to its value at revision --to (deleting it if it did not exist then); recorded as a change."""
    resp = call("pitwall", "POST", server, "/api/config/v1/rollback", token=token, timeout=30,
                params={"key": key, "to": to})
    if resp.status_code >= 400:
        fail("pitwall", f"HTTP {resp.status_code}: {_message(resp)}")
    out = resp.json()
    if out["deleted"]:
        typer.echo(f"{key}: deleted, as it was at revision {to}")
    else:
        now = out.get("revision") or out.get("resourceVersion")
        typer.echo(f"{key}: restored to its value at revision {to} (now revision {now})")


def _message(resp: Any) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return str(resp.text.strip())
