"""``pitwall targets`` and ``pitwall services``: what a server scrapes, and the services it knows."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TenantOpt, TokenOpt, call, fail
from pitwall.cli._output import OutputOpt, ago, emit


def _get(server: str, path: str, token: str | None, tenant: str | None, **params: Any) -> Any:
    r = call("pitwall", "GET", server, path, token=token, tenant=tenant, timeout=30, params=params or None)
    if r.status_code == 404:
        return None
    if r.status_code >= 400:
        fail("pitwall", f"{path}: HTTP {r.status_code}: {r.text.strip()[:300]}")
    return r.json()


def targets(
    state: Annotated[str, typer.Option(help="active, dropped or any.")] = "active",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    tenant: TenantOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Scrape targets with their health, last scrape and error (Prometheus' /api/v1/targets)."""
    data = (_get(server, "/api/v1/targets", token, tenant, state=state) or {}).get("data") or {}
    active = data.get("activeTargets") or []
    rows = [{"job": t.get("scrapePool") or t.get("labels", {}).get("job"), "url": t.get("scrapeUrl"),
             "health": t.get("health"), "last": ago(t.get("lastScrape")),
             "duration": f"{float(t.get('lastScrapeDuration') or 0) * 1000:.1f}ms",
             "error": t.get("lastError"), "labels": t.get("labels") or {}} for t in active]
    dropped = data.get("droppedTargets") or []
    rows += [{"job": t.get("discoveredLabels", {}).get("job"), "url": t.get("discoveredLabels", {}).get("__address__"),
              "health": "dropped", "labels": t.get("discoveredLabels") or {}} for t in dropped]
    emit(rows, [("JOB", "job"), ("URL", "url"), ("HEALTH", "health"), ("LAST SCRAPE", "last"),
                ("DURATION", "duration"), ("ERROR", "error")], output,
         wide=[("LABELS", "labels")], raw=data, empty="no targets")


def services(
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    tenant: TenantOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Services pitwall knows: Kubernetes Services (address, ready endpoints) and services seen in traces."""
    rows: dict[str, dict[str, Any]] = {}
    svcs = _get(server, "/api/v1/services", token, None)
    if isinstance(svcs, dict) and "items" in svcs:  # the Kubernetes API is on
        ready = _ready_endpoints(_get(server, "/api/v1/endpoints", token, None) or {})
        for s in svcs["items"]:
            md, spec = s["metadata"], s.get("spec") or {}
            key = f"{md['namespace']}/{md['name']}"
            ports = [f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []]
            r, total = ready.get(key, (0, 0))
            rows[md["name"]] = {"name": md["name"], "namespace": md["namespace"], "cluster_ip": spec.get("clusterIP"),
                                "ports": ports, "endpoints": f"{r}/{total}", "traced": False,
                                "selector": spec.get("selector") or {}}
    traced = (_get(server, "/api/services", token, tenant) or {}).get("data") or []
    for name in traced:
        rows.setdefault(name, {"name": name}).update(traced=True)
    out = sorted(rows.values(), key=lambda r: (r.get("namespace") or "", r["name"]))
    emit(out, [("NAMESPACE", "namespace"), ("NAME", "name"), ("CLUSTER-IP", "cluster_ip"), ("PORTS", "ports"),
               ("READY", "endpoints"), ("TRACED", "traced")], output, wide=[("SELECTOR", "selector")],
         empty="no services")


def _ready_endpoints(endpoints: dict[str, Any]) -> dict[str, tuple[int, int]]:
    out = {}
    for e in endpoints.get("items") or []:
        ready = sum(len(s.get("addresses") or []) for s in e.get("subsets") or [])
        not_ready = sum(len(s.get("notReadyAddresses") or []) for s in e.get("subsets") or [])
        out[f"{e['metadata']['namespace']}/{e['metadata']['name']}"] = (ready, ready + not_ready)
    return out
