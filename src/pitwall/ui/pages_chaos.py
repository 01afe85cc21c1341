"""The chaos page: ``/chaos`` (running and past experiments, Schedules and Workflows with their target,
window, phase and the effect on the target's golden signals), ``/chaos/{namespace}/{kind}/{name}`` (one
experiment: its records, Events, change events and signal charts) and the global halt-all
(``GET /chaos/halt`` asks to confirm, ``POST /chaos/halt`` pauses everything through the same halt the
API and the CLI use and shows what was halted).

The halt is a POST: the auth middleware asks for the write scope and the session's CSRF token (the form
carries ``csrf_field``). Chaos objects belong to the whole server, not a tenant.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from pitwall.core.body import read_form
from pitwall.core.tenancy import principal_of
from pitwall.core.tenancy import server_wide as whole_server
from pitwall.ui.chaos_view import experiment_row, golden_charts, window_link
from pitwall.ui.releases_view import change_rows
from pitwall.ui.web import Pages
from pitwall.ui.workloads_view import event_rows

__all__ = ["add_routes"]

MAX_ROWS = 200  # experiments listed, running first, then newest first
MAX_CHARTS = 24  # rows with a signal chart: each one is a query the browser makes
MAX_CHANGES = 500
ACTIVE = ("Running", "Injecting", "Recovering", "Pausing", "Active", "Not selected")


def add_routes(r: APIRouter, pages: Pages) -> None:
    deps = pages.deps
    server_wide = [Depends(whole_server)]

    async def rows(namespace: str = "") -> list[tuple[Any, dict[str, Any]]]:
        assert deps.chaos is not None
        objs = await deps.chaos.experiments(namespace)
        out = [(experiment_row(o), o) for o in objs]
        out.sort(key=lambda t: (t[0].phase not in ACTIVE, -t[0].start_s, t[0].namespace, t[0].name))
        return out[:MAX_ROWS]

    @r.get("/chaos", response_class=HTMLResponse, dependencies=server_wide)
    async def chaos(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        if deps.chaos is None:
            return pages.render(request, "chaos.html", "chaos", tr, error=err, available=False)
        ns = request.query_params.get("namespace", "").strip()
        now = time.time()
        listed = [(row, golden_charts(o, row, now, only="errors") if i < MAX_CHARTS else [])
                  for i, (row, o) in enumerate(await rows(ns))]
        return pages.render(request, "chaos.html", "chaos", tr, error=err, available=True, namespace=ns,
                            running=[t for t in listed if t[0].phase in ACTIVE],
                            past=[t for t in listed if t[0].phase not in ACTIVE])

    @r.get("/chaos/halt", response_class=HTMLResponse, dependencies=server_wide)
    async def halt_confirm(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        if deps.chaos is None:
            return pages.render(request, "chaos_halt.html", "chaos", tr, error=err, available=False)
        active = [row for row, _ in await rows() if row.phase in ACTIVE]
        return pages.render(request, "chaos_halt.html", "chaos", tr, error=err, available=True, active=active,
                            halted=None)

    @r.post("/chaos/halt", response_class=HTMLResponse, dependencies=server_wide)
    async def halt(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        if deps.chaos is None:
            return pages.render(request, "chaos_halt.html", "chaos", tr, available=False, status=503,
                                error="the chaos pillar is not available")
        form = await read_form(request)
        if form.get("confirm") != "halt":
            active = [row for row, _ in await rows() if row.phase in ACTIVE]
            return pages.render(request, "chaos_halt.html", "chaos", tr, available=True, active=active,
                                halted=None, status=400, error="confirm the halt with the button on this page")
        principal = principal_of(request)
        halted = await deps.chaos.halt(principal.name if principal is not None else "anonymous (ui)")
        return pages.render(request, "chaos_halt.html", "chaos", tr, error=err, available=True, active=[],
                            halted=halted)

    @r.get("/chaos/{namespace}/{kind}/{name}", response_class=HTMLResponse, dependencies=server_wide)
    async def experiment(namespace: str, kind: str, name: str, request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        ctx: dict[str, Any] = {"namespace": namespace, "kind": kind, "name": name}
        if deps.chaos is None:
            return pages.render(request, "chaos_experiment.html", "chaos", tr, error=err, available=False, **ctx)
        obj = await deps.chaos.experiment(kind, namespace, name)
        if obj is None:
            return pages.render(request, "chaos_experiment.html", "chaos", tr, available=True, obj=None, status=404,
                                error=f"{kind} {namespace}/{name} not found", **ctx)
        now = time.time()
        row = experiment_row(obj)
        changes: list[dict[str, str]] = []
        if deps.changes is not None and row.start_s:
            found = await deps.changes.between(int((row.start_s - 60) * 1e9), int(((row.end_s or now) + 60) * 1e9),
                                               limit=MAX_CHANGES)
            me = f"{namespace}/{name}"
            changes = change_rows([e for e in found if e.kind == "chaos" and (
                e.details.get("experiment") == me or f"{kind} {me}" in (e.details.get("paused") or []))])
        records = ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []
        return pages.render(
            request, "chaos_experiment.html", "chaos", tr, error=err, available=True, obj=obj, row=row,
            charts=golden_charts(obj, row, now), window=window_link(row, now), records=records,
            report=await deps.chaos.resilience_report(obj, now),
            conditions=(obj.get("status") or {}).get("conditions") or [],
            events=event_rows(await deps.chaos.events(namespace, kind, name)), changes=changes,
            changes_available=deps.changes is not None, **ctx)
