"""The backups pages: ``/backups`` (Velero Backups, Schedules, Restores, RestoreDrills and this server's
self-backup runs), ``/backups/{namespace}/{name}`` (one Backup: what is in it, its figures, the Restores and
drills of it, its log and Events) and ``/backups/{namespace}/restoredrills/{name}`` (one RestoreDrill: the
measured RTO and RPO of each run, as a table and as series).

They read through ``UIDeps.backups`` (a ``BackupsSource``); without it they say the backup pillar is not
available. Backups belong to the whole server (their API is server-wide), so the pages are too.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from pitwall.core.errors import NotFound
from pitwall.core.tenancy import server_wide as whole_server
from pitwall.ui.backups_view import (
    backup_row,
    contents,
    drill_history,
    drill_row,
    restore_row,
    schedule_row,
    self_run_row,
)
from pitwall.ui.objects import quote
from pitwall.ui.web import Pages
from pitwall.ui.workloads_view import event_rows

__all__ = ["add_routes"]

Obj = dict[str, Any]


def drill_expr(metric: str, namespace: str, name: str) -> str:
    """PromQL of one of a drill's gauges (``pitwall_restore_drill_*{drill="ns/name"}``)."""
    return f'pitwall_restore_drill_{metric}{{drill="{quote(namespace)}/{quote(name)}"}}'


def _started(o: Obj) -> str:
    return str((o.get("status") or {}).get("startTimestamp") or o["metadata"].get("creationTimestamp") or "")


def add_routes(r: APIRouter, pages: Pages) -> None:
    deps = pages.deps
    server_wide = [Depends(whole_server)]

    @r.get("/backups", response_class=HTMLResponse, dependencies=server_wide)
    async def backups(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        src = deps.backups
        if src is None:
            return pages.render(request, "backups.html", "backups", tr, error=err, available=False)
        ns = request.query_params.get("namespace", "")
        items = {k: await src.objects(k, ns) for k in ("backup", "restore", "schedule", "restoredrill")}
        rows = [backup_row(b) for b in sorted(items["backup"], key=_started, reverse=True)]  # newest first
        namespaces = sorted({str(o["metadata"]["namespace"]) for v in items.values() for o in v})
        return pages.render(
            request, "backups.html", "backups", tr, error=err, available=True, kube=src.kube_enabled(),
            namespace=ns, namespaces=namespaces, backups=rows,
            restores=sorted((restore_row(x) for x in items["restore"]), key=lambda x: (x["namespace"], x["name"])),
            schedules=sorted((schedule_row(x) for x in items["schedule"]), key=lambda x: (x["namespace"], x["name"])),
            drills=sorted((drill_row(x) for x in items["restoredrill"]), key=lambda x: (x.namespace, x.name)),
            self_runs=[self_run_row(x) for x in reversed(src.self_runs())])

    @r.get("/backups/{namespace}/{name}", response_class=HTMLResponse, dependencies=server_wide)
    async def backup(namespace: str, name: str, request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        src = deps.backups
        ctx: Obj = {"namespace": namespace, "name": name}
        if src is None:
            return pages.render(request, "backup.html", "backups", tr, error=err, available=False, **ctx)
        doc = await src.describe(namespace, name)
        if doc is None:
            return pages.render(request, "backup.html", "backups", tr, available=True, doc=None, status=404,
                                error=f"backup {namespace}/{name} not found", **ctx)
        b = doc["backup"]
        return pages.render(
            request, "backup.html", "backups", tr, error=err, available=True, doc=doc, row=backup_row(b),
            contents=contents(b), restores=[restore_row(x) for x in doc["restores"]],
            drills=[(drill_row(d), drill_history(d)) for d in doc["drills"]], events=event_rows(doc["events"]),
            logs=doc.get("logs") or [], failure=str((b.get("status") or {}).get("failureReason") or ""),
            validation=[str(v) for v in (b.get("status") or {}).get("validationErrors") or []], **ctx)

    @r.get("/ui/fragment/backups/{namespace}/{name}/resources", response_class=HTMLResponse,
           dependencies=server_wide)
    async def resources(namespace: str, name: str, request: Request) -> Response:
        """The resources and volumes a Backup holds, from its restic snapshots (loaded after the page: one
        ``restic ls`` per namespace)."""
        if deps.backups is None:
            raise NotFound("the backup pillar is not available")
        got = await deps.backups.resources(namespace, name)
        if got is None:
            raise NotFound(f"backup {namespace}/{name} not found")
        by_kind: dict[str, int] = {}
        for x in got["resources"]:
            by_kind[x["resource"]] = by_kind.get(x["resource"], 0) + 1
        return pages.render(request, "_backup_resources.html", "backups", None, got=got,
                            by_kind=sorted(by_kind.items()))

    @r.get("/backups/{namespace}/restoredrills/{name}", response_class=HTMLResponse, dependencies=server_wide)
    async def drill(namespace: str, name: str, request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        src = deps.backups
        ctx: Obj = {"namespace": namespace, "name": name, "drill_expr": drill_expr}
        if src is None:
            return pages.render(request, "restoredrill.html", "backups", tr, error=err, available=False, **ctx)
        d = await src.object("restoredrill", namespace, name)
        if d is None:
            return pages.render(request, "restoredrill.html", "backups", tr, available=True, drill=None,
                                status=404, error=f"restore drill {namespace}/{name} not found", **ctx)
        return pages.render(request, "restoredrill.html", "backups", tr, error=err, available=True,
                            drill=drill_row(d), history=drill_history(d),
                            events=event_rows(await src.events("restoredrill", namespace, name)), **ctx)
