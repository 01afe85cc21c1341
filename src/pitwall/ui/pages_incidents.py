"""The incidents pages: ``/incidents`` (open and recent incidents, who is on call) and
``/incidents/{id}`` (the one timeline, signal links, acknowledge/resolve/note, the postmortem draft).

They read and act through ``UIDeps.incidents`` (an ``IncidentsSource``); without one they say the
incidents capability is not available. Incidents are the whole server's, not a tenant's.
Actions are POST forms with the CSRF field; each acts as a PagerDuty user picked in the form
(PagerDuty records every action under a user), and answers with a redirect back to the page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from pitwall.core.body import read_form
from pitwall.core.errors import PitwallError
from pitwall.core.tenancy import PRINCIPAL_KEY
from pitwall.core.tenancy import server_wide as whole_server
from pitwall.ui.incidents_view import (
    STATUSES,
    acting_user,
    incident_row,
    oncall_rows,
    postmortem_filename,
)
from pitwall.ui.web import Pages

__all__ = ["add_routes"]

_ACTIONS = ("acknowledge", "resolve", "notes")
_LIST_LIMIT = 200
_RECENT = 20  # resolved incidents shown under the open ones


def _principal_name(request: Request) -> str:
    p = request.scope.get(PRINCIPAL_KEY)
    return str(getattr(p, "name", "") or "")


def _why(e: PitwallError) -> str:
    """The error's message with PagerDuty's per-field ``errors`` when it carries them."""
    details = [str(x) for x in getattr(e, "errors", None) or [] if str(x) != e.message]
    return ": ".join([e.message, "; ".join(details)]) if details else e.message


def add_routes(r: APIRouter, pages: Pages) -> None:
    deps = pages.deps
    server_wide = [Depends(whole_server)]

    @r.get("/incidents", response_class=HTMLResponse, dependencies=server_wide)
    async def incidents(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        src = deps.incidents
        if src is None:
            return pages.render(request, "incidents.html", "incidents", tr, error=err, available=False)
        p = request.query_params
        status = p.get("status", "open")
        service = p.get("service", "").strip()
        statuses = {"open": ["triggered", "acknowledged"], "all": []}.get(status, [status])
        ctx: dict[str, Any] = {"status_filter": status, "service": service, "status_choices": ("open", *STATUSES, "all"),
                               "services": await src.services(), "oncalls": oncall_rows(await src.oncalls_now())}
        try:
            rows = [incident_row(i) for i in await src.incidents(statuses, service, _LIST_LIMIT)]
            if status == "open":  # the default view: open ones, then the most recently resolved
                ctx["recent"] = [incident_row(i) for i in await src.incidents(["resolved"], service, _RECENT)]
        except PitwallError as e:
            return pages.render(request, "incidents.html", "incidents", tr, error=_why(e), available=True,
                                rows=[], status=400, **ctx)
        return pages.render(request, "incidents.html", "incidents", tr, error=err, available=True, rows=rows,
                            limit=_LIST_LIMIT, **ctx)

    async def detail(request: Request, incident_id: str, problem: str = "", status: int = 200) -> Response:
        tr, err = pages.range_or_error(request)
        src = deps.incidents
        if src is None:
            return pages.render(request, "incident.html", "incidents", tr, error=err, available=False,
                                incident_id=incident_id, status=status)
        inc = await src.incident(incident_id)
        if inc is None:
            return pages.render(request, "incident.html", "incidents", tr, available=True, inc=None, status=404,
                                error=f"incident {incident_id} not found", incident_id=incident_id)
        users = await src.users()
        draft = await src.postmortem(incident_id) if request.query_params.get("postmortem") == "1" else None
        return pages.render(
            request, "incident.html", "incidents", tr, error=err, available=True, status=status, problem=problem,
            inc=inc, row=incident_row(inc), incident_id=incident_id, alerts=await src.alerts(incident_id),
            timeline=await src.timeline(incident_id), links=(inc.get("pitwall") or {}).get("links") or [],
            users=users, acting=acting_user(users, _principal_name(request), inc), postmortem=draft,
            postmortem_name=postmortem_filename(inc), oncalls=oncall_rows(
                [o for o in await src.oncalls_now()
                 if (o.get("escalation_policy") or {}).get("id") == (inc.get("escalation_policy") or {}).get("id")]))

    @r.get("/incidents/{incident_id}", response_class=HTMLResponse, dependencies=server_wide)
    async def incident(incident_id: str, request: Request) -> Response:
        return await detail(request, incident_id)

    @r.get("/incidents/{incident_id}/postmortem.md", dependencies=server_wide)
    async def postmortem_md(incident_id: str, request: Request) -> Response:
        """The draft as a Markdown download (what ``pitwall incident postmortem`` prints)."""
        src = deps.incidents
        if src is None:
            return Response("the incidents capability is not available\n", 503, media_type="text/plain")
        inc = await src.incident(incident_id)
        if inc is None:
            return Response(f"incident {incident_id} not found\n", 404, media_type="text/plain")
        return Response(await src.postmortem(incident_id), media_type="text/markdown; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{postmortem_filename(inc)}"',
                                 "Cache-Control": "no-store"})

    @r.post("/incidents/{incident_id}/{action}", response_class=HTMLResponse, dependencies=server_wide)
    async def act(incident_id: str, action: str, request: Request) -> Response:
        src = deps.incidents
        if src is None:
            return await detail(request, incident_id, "the incidents capability is not available", 503)
        if action not in _ACTIONS:
            return await detail(request, incident_id, f"unknown action {action[:32]!r}", 404)
        if await src.incident(incident_id) is None:
            return await detail(request, incident_id)  # the page says it is not found (404)
        form = await read_form(request)
        user = str(form.get("user", "")).strip()
        if not user:
            return await detail(request, incident_id, "pick the user you act as", 400)
        try:
            if action == "acknowledge":
                await src.acknowledge(incident_id, user)
            elif action == "resolve":
                await src.resolve(incident_id, user)
            else:
                await src.add_note(incident_id, user, str(form.get("content", "")))
        except PitwallError as e:
            return await detail(request, incident_id, _why(e), 400)
        return RedirectResponse(f"/incidents/{quote(incident_id, safe='')}?done={action}#timeline", 303)
