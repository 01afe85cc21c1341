"""``pitwall status``: what a server runs and what is failing, from its public APIs."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TenantOpt, TokenOpt, call

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="table or json.")]


def _json(server: str, path: str, token: str | None, tenant: str | None) -> Any:
    """The ``data`` of a Prometheus-style answer, or None when the server does not serve ``path``."""
    r = call("pitwall", "GET", server, path, token=token, tenant=tenant, timeout=15)
    if r.status_code != 200:
        return None
    body = r.json()
    return body.get("data") if isinstance(body, dict) and "data" in body else body


def collect(server: str, token: str | None, tenant: str | None) -> dict[str, Any]:
    """Readiness, version, storage, scrape targets, rules, alerts and (when served) Kubernetes nodes and pods."""
    ready = call("pitwall", "GET", server, "/-/ready", token=token, timeout=15)
    build = _json(server, "/api/v1/status/buildinfo", token, tenant) or {}
    runtime = _json(server, "/api/v1/status/runtimeinfo", token, tenant) or {}
    tsdb = _json(server, "/api/v1/status/tsdb", token, tenant) or {}
    targets = (_json(server, "/api/v1/targets", token, tenant) or {}).get("activeTargets", [])
    groups = (_json(server, "/api/v1/rules", token, tenant) or {}).get("groups", [])
    alerts = (_json(server, "/api/v1/alerts", token, tenant) or {}).get("alerts", [])
    out: dict[str, Any] = {
        "server": server,
        "ready": ready.status_code == 200,
        "problems": [] if ready.status_code == 200 else [ready.text.strip()],
        "version": str(build.get("revision", "")).removeprefix("pitwall-"),
        "started": runtime.get("startTime", ""),
        "retention": runtime.get("storageRetention", ""),
        "series": (tsdb.get("headStats") or {}).get("numSeries"),
        "targets_up": sum(1 for t in targets if t.get("health") == "up"),
        "targets_down": [f"{t.get('labels', {}).get('job', '')} {t.get('scrapeUrl', '')}: {t.get('lastError', '')}"
                         for t in targets if t.get("health") == "down"],
        "rules": sum(len(g.get("rules", [])) for g in groups),
        "alerts_firing": sorted(str(a.get("labels", {}).get("alertname", "")) for a in alerts
                                if a.get("state") == "firing"),
    }
    nodes = _json(server, "/api/v1/nodes", token, None)
    if isinstance(nodes, dict) and "items" in nodes:  # the Kubernetes API is on (it is not Prometheus-shaped)
        pods = _json(server, "/api/v1/pods", token, None) or {}
        phases: dict[str, int] = {}
        for p in pods.get("items", []):
            phase = str((p.get("status") or {}).get("phase") or "Pending")
            phases[phase] = phases.get(phase, 0) + 1
        out["nodes"] = [n["metadata"]["name"] for n in nodes["items"]]
        out["pods"] = phases
    return out


def status(
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    tenant: TenantOpt = None,
    output: OutputOpt = "table",
) -> None:
    """What the server runs and what is failing; exits 1 when it is not ready."""
    s = collect(server, token, tenant)
    if output == "json":
        typer.echo(json.dumps(s, indent=2))
    else:
        _print(s)
    if not s["ready"]:
        raise typer.Exit(1)


def _print(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    t.add_row("server", f"{s['server']} (pitwall {s['version']}, up since {s['started']})")
    t.add_row("ready", "yes" if s["ready"] else "NO: " + "; ".join(s["problems"]))
    t.add_row("metrics", f"{s['series']} series, retention {s['retention']}")
    t.add_row("targets", f"{s['targets_up']} up, {len(s['targets_down'])} down")
    for line in s["targets_down"]:
        t.add_row("", f"down: {line}")
    t.add_row("rules", f"{s['rules']} loaded, {len(s['alerts_firing'])} alerts firing")
    for name in s["alerts_firing"]:
        t.add_row("", f"firing: {name}")
    if "nodes" in s:
        pods = ", ".join(f"{n} {phase}" for phase, n in sorted(s["pods"].items())) or "none"
        t.add_row("kubernetes", f"nodes {', '.join(s['nodes']) or 'none'}; pods: {pods}")
    Console(soft_wrap=True).print(t)
