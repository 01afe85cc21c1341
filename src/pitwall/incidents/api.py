"""PagerDuty REST API v2 under ``/pagerduty``: incidents and what an on-call engineer does with them.

Collections page with ``limit`` (default 25, at most 100) / ``offset`` and
answer ``more`` and ``total`` (null unless ``total=true``), as PagerDuty's
classic pagination, so pdpyras' ``iter_all`` walks them. Array filters take
PagerDuty's ``statuses[]=...`` form (the bare name works too). Actions that
change an incident need the acting user's email in the ``From`` header.
Errors are PagerDuty's ``{"error": {"message", "code", "errors"}}``.

The configuration objects (services, users, escalation policies, schedules,
on-calls) are in ``api_config``; this module holds incidents, their alerts,
notes and log entries, change events and the postmortem draft.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response

from pitwall.core.body import BodyLimits, read_body
from pitwall.core.http_errors import error_router
from pitwall.core.limits import InflightBudget
from pitwall.incidents.change_records import change_records, same_service
from pitwall.incidents.changes import ChangeEvent, ChangeLog
from pitwall.incidents.errors import InvalidInput, NotFoundError
from pitwall.incidents.model import EscalationPolicy, Incident, LogEntry, Note, Schedule, Service, User
from pitwall.incidents.oncall import parse_time
from pitwall.incidents.service import IncidentService
from pitwall.incidents.store import IncidentStore, new_id
from pitwall.incidents.timeline import postmortem
from pitwall.incidents.views import Views

__all__ = ["MAX_NOTE_CHARS", "PREFIX", "RestDeps", "add_note", "incidents_router", "json_response", "page", "read_json", "remember_base",
           "user_from"]

PREFIX = "/pagerduty"
MAX_REST_BYTES = 1 << 20
MAX_LIMIT = 100
MAX_NOTE_CHARS = 25_000
_DEFAULT_LIMIT = 25


# The base URL of the request being served: ``self`` links must start with the URL the client uses
# (pdpyras refuses others), which only the request knows unless an external URL is configured.
_BASE: ContextVar[str] = ContextVar("pagerduty_base", default="")


async def remember_base(request: Request) -> None:
    """Router dependency: note the request's base URL for the ``self`` links of this response."""
    _BASE.set(str(request.base_url).rstrip("/"))


@dataclass
class RestDeps:
    """What the REST routers need; ``external_url`` (when set) is the base of ``self`` links."""

    service: IncidentService
    changes: ChangeLog
    budget: InflightBudget
    external_url: str = ""
    # The SLO budget a service's SLOs spent in [start_ms, end_ms] (objects with ``name``, ``consumed`` and
    # ``arithmetic``), set by the composition root when the SLO capability runs; for the postmortem's impact.
    slo_budgets: Callable[[str, int, int], Awaitable[Sequence[Any]]] | None = None

    @property
    def views(self) -> Views:
        return Views(self.external_url or _BASE.get())

    @property
    def store(self) -> IncidentStore:
        return self.service.store

    async def names(self) -> dict[str, str]:
        """id -> display name of users, services, schedules and policies (for references' ``summary``)."""
        out: dict[str, str] = {}
        out.update({o.id: o.name for o in await self.store.list_all(User)})
        out.update({o.id: o.name for o in await self.store.list_all(Service)})
        out.update({o.id: o.name for o in await self.store.list_all(EscalationPolicy)})
        out.update({o.id: o.name for o in await self.store.list_all(Schedule)})
        return out

    async def change_views(self, events: Sequence[ChangeEvent]) -> list[dict[str, Any]]:
        """``events`` rendered with their ITSM change record (type, reason, incidents open on the service)."""
        if not events:
            return []
        last = max(c.ts_ns for c in events)
        incidents = [i for i in await self.store.incidents() if i.created_ns <= last]
        services = {s.id: s.name for s in await self.store.list_all(Service)}
        records = change_records(events, incidents, services)
        return [self.views.change_event(c, records[c.id]) for c in events]


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


async def read_json(request: Request, deps: RestDeps, wrapper: str) -> Any:
    """The body's ``wrapper`` object (``{"incident": {...}}`` -> ``{...}``)."""
    async with read_body(request, BodyLimits(MAX_REST_BYTES, MAX_REST_BYTES), deps.budget) as body:
        try:
            data = orjson.loads(body.decoded())
        except orjson.JSONDecodeError:
            raise InvalidInput("Invalid Input Provided", ["The request body is not valid JSON"]) from None
    if not isinstance(data, dict) or wrapper not in data:
        raise InvalidInput("Invalid Input Provided", [f"{wrapper} must be provided"])
    return data[wrapper]


def _ints(request: Request, name: str, default: int) -> int:
    v = request.query_params.get(name)
    if v is None or v == "":
        return default
    if not v.isdigit():
        raise InvalidInput("Invalid Input Provided", [f"{name} must be a non-negative integer"])
    return int(v)


def array(request: Request, name: str) -> list[str]:
    """``name[]=a&name[]=b`` (PagerDuty's form), ``name=a``, or ``name=a,b``."""
    vals = request.query_params.getlist(f"{name}[]") + request.query_params.getlist(name)
    return [x for v in vals for x in v.split(",") if x]


def page(request: Request, items: Sequence[Any], key: str, render: Callable[[Any], Any] | None = None) -> Response:
    """One page of ``items`` in PagerDuty's classic pagination envelope (``render`` applied to that page only)."""
    limit = min(max(_ints(request, "limit", _DEFAULT_LIMIT), 1), MAX_LIMIT)
    offset = _ints(request, "offset", 0)
    chunk = list(items[offset:offset + limit])
    if render is not None:
        chunk = [render(x) for x in chunk]
    want_total = request.query_params.get("total", "").lower() in ("true", "1")
    return json_response({key: chunk, "limit": limit, "offset": offset, "more": offset + limit < len(items),
                          "total": len(items) if want_total else None})


async def user_from(request: Request, deps: RestDeps) -> User:
    """The acting user named by the ``From`` header (an email address), as PagerDuty requires."""
    email = request.headers.get("from", "").strip()
    if not email:
        raise InvalidInput("You must specify a user's email address in the \"From\" header to perform this action",
                           ["From header is missing"])
    for u in await deps.store.list_all(User):
        if u.email.lower() == email.lower():
            return u
    raise InvalidInput("Invalid Input Provided", [f"Requester User Not Found: no user has the email {email}"])


def _window(request: Request) -> tuple[int, int] | None:
    since, until = request.query_params.get("since"), request.query_params.get("until")
    if not since and not until:
        return None
    return (parse_time(since) if since else 0, parse_time(until) if until else 1 << 62)


async def render_incident(deps: RestDeps, inc: Incident, names: dict[str, str] | None = None) -> dict[str, Any]:
    names = names if names is not None else await deps.names()
    return deps.views.incident(inc, names.get(inc.service_id, inc.service_id),
                               names.get(inc.escalation_policy_id, ""), names)


def _sort(incs: list[Incident], sort_by: str) -> list[Incident]:
    field, _, direction = sort_by.partition(":")
    keys = {"incident_number": lambda i: i.number, "created_at": lambda i: i.created_ns,
            "resolved_at": lambda i: i.resolved_ns, "urgency": lambda i: i.urgency}
    if field not in keys:
        raise InvalidInput("Invalid Input Provided", [f"sort_by: cannot sort by {field!r}"])
    return sorted(incs, key=keys[field], reverse=direction == "desc")


async def _update(deps: RestDeps, inc_id: str, body: Any, actor: User) -> Incident:
    if not isinstance(body, dict):
        raise InvalidInput("Invalid Input Provided", ["incident must be an object"])
    svc = deps.service
    inc = await svc.require(inc_id)
    status = body.get("status")
    if status not in (None, "acknowledged", "resolved"):
        raise InvalidInput("Invalid Input Provided", ["Status must be one of: acknowledged, resolved"])
    if "assignments" in body or "escalation_level" in body:
        users = [a.get("assignee", {}).get("id", "") for a in body.get("assignments") or [] if isinstance(a, dict)]
        level = body.get("escalation_level") or 0
        if not isinstance(level, int):
            raise InvalidInput("Invalid Input Provided", ["escalation_level must be an integer"])
        inc = await svc.reassign(inc_id, actor.id, users=users, escalation_level=level)
    if status == "acknowledged" and inc.status != "resolved":
        inc = await svc.acknowledge(inc_id, actor.id)
    elif status == "resolved":
        inc = await svc.resolve(inc_id, actor.id)
    return inc


async def add_note(deps: RestDeps, incident_id: str, user_id: str, content: object) -> Note:
    """Add a note by ``user_id`` to an existing incident (and its ``annotate_log_entry``)."""
    if not isinstance(content, str) or not content.strip() or len(content) > MAX_NOTE_CHARS:
        raise InvalidInput("Invalid Input Provided", [f"Note content must be 1 to {MAX_NOTE_CHARS} characters"])
    now = deps.service.clock()
    note = Note(id=new_id("N"), created_ns=now, user_id=user_id, content=content)
    await deps.store.add_note(incident_id, note)
    await deps.store.add_log(incident_id, LogEntry(id=new_id("R"), type="annotate_log_entry", created_ns=now,
                                                   summary=f"Note added: {content[:200]}", agent=user_id))
    return note


def incidents_router(deps: RestDeps) -> APIRouter:
    r = error_router("pagerduty", prefix=PREFIX, tags=["pagerduty"], dependencies=[Depends(remember_base)])
    svc = deps.service
    store = deps.store

    @r.get("/incidents")
    async def list_incidents(request: Request) -> Response:
        statuses, urgencies = array(request, "statuses"), array(request, "urgencies")
        services, users = array(request, "service_ids"), array(request, "user_ids")
        for s in statuses:
            if s not in ("triggered", "acknowledged", "resolved"):
                raise InvalidInput("Invalid Input Provided", [f"statuses: {s!r} is not a valid status"])
        window = _window(request) if request.query_params.get("date_range") != "all" else None
        incs = [i for i in await store.incidents()
                if (not statuses or i.status in statuses) and (not urgencies or i.urgency in urgencies)
                and (not services or i.service_id in services)
                and (not users or any(a["user"] in users for a in i.assignments))
                and (window is None or window[0] <= i.created_ns < window[1])]
        incs = _sort(incs, request.query_params.get("sort_by", "incident_number:asc"))
        names = await deps.names()
        views = deps.views
        return page(request, incs, "incidents", lambda i: views.incident(
            i, names.get(i.service_id, i.service_id), names.get(i.escalation_policy_id, ""), names))

    @r.post("/incidents", status_code=201)
    async def create_incident(request: Request) -> Response:
        await user_from(request, deps)
        body = await read_json(request, deps, "incident")
        sref = body.get("service") if isinstance(body, dict) else None
        title = body.get("title") if isinstance(body, dict) else None
        if not isinstance(sref, dict) or not isinstance(title, str) or not title:
            raise InvalidInput("Invalid Input Provided", ["incident needs a title and a service reference"])
        service = await store.get(Service, str(sref.get("id", "")))
        if service is None:
            raise InvalidInput("Invalid Input Provided", [f"Service {sref.get('id')} not found"])
        urgency = body.get("urgency") or ""
        if urgency not in ("", "high", "low"):
            raise InvalidInput("Invalid Input Provided", ["urgency must be high or low"])
        key = body.get("incident_key") or new_id("K")
        if await store.open_by_dedup(service.id, key) is not None:
            raise InvalidInput("Open incident with matching dedup key already exists on this service",
                               ["Open incident with matching dedup key already exists on this service"])
        inc = await svc.trigger(service, key, None, svc.clock(), title=title, urgency=urgency)
        return json_response({"incident": await render_incident(deps, inc)}, 201)

    @r.put("/incidents")
    async def update_many(request: Request) -> Response:
        actor = await user_from(request, deps)
        items = await read_json(request, deps, "incidents")
        if not isinstance(items, list) or len(items) > 250:
            raise InvalidInput("Invalid Input Provided", ["incidents must be an array of at most 250"])
        out = []
        for item in items:
            inc_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(inc_id, str):
                raise InvalidInput("Invalid Input Provided", ["each incident needs an id"])
            out.append(await _update(deps, inc_id, item, actor))
        names = await deps.names()
        return json_response({"incidents": [await render_incident(deps, i, names) for i in out]})

    @r.get("/incidents/{incident_id}")
    async def get_incident(incident_id: str) -> Response:
        return json_response({"incident": await render_incident(deps, await svc.require(incident_id))})

    @r.put("/incidents/{incident_id}")
    async def update_incident(incident_id: str, request: Request) -> Response:
        actor = await user_from(request, deps)
        body = await read_json(request, deps, "incident")
        inc = await _update(deps, incident_id, body, actor)
        return json_response({"incident": await render_incident(deps, inc)})

    @r.get("/incidents/{incident_id}/alerts")
    async def alerts(incident_id: str, request: Request) -> Response:
        inc = await svc.require(incident_id)
        names = await deps.names()
        statuses = array(request, "statuses")
        items = [deps.views.alert(a, names.get(inc.service_id, "")) for a in await store.alerts(incident_id)
                 if not statuses or a.status in statuses]
        return page(request, items, "alerts")

    @r.get("/incidents/{incident_id}/alerts/{alert_id}")
    async def alert(incident_id: str, alert_id: str) -> Response:
        inc = await svc.require(incident_id)
        for a in await store.alerts(incident_id):
            if a.id == alert_id:
                names = await deps.names()
                return json_response({"alert": deps.views.alert(a, names.get(inc.service_id, ""))})
        raise NotFoundError(f"Alert {alert_id} not found")

    @r.get("/incidents/{incident_id}/notes")
    async def notes(incident_id: str) -> Response:
        await svc.require(incident_id)
        names = await deps.names()
        return json_response({"notes": [deps.views.note(n, names) for n in await store.notes(incident_id)]})

    @r.post("/incidents/{incident_id}/notes", status_code=201)
    async def post_note(incident_id: str, request: Request) -> Response:
        actor = await user_from(request, deps)
        await svc.require(incident_id)
        body = await read_json(request, deps, "note")
        note = await add_note(deps, incident_id, actor.id, body.get("content") if isinstance(body, dict) else None)
        return json_response({"note": deps.views.note(note, await deps.names())}, 201)

    @r.get("/incidents/{incident_id}/log_entries")
    async def log_entries(incident_id: str, request: Request) -> Response:
        await svc.require(incident_id)
        names = await deps.names()
        entries = await store.log_entries(incident_id)
        if request.query_params.get("is_overview", "").lower() == "true":
            entries = [e for e in entries if e.type != "notify_log_entry"]
        items = [deps.views.log_entry(e, incident_id, names) for e in reversed(entries)]  # newest first
        return page(request, items, "log_entries")

    @r.get("/incidents/{incident_id}/related_change_events")
    async def related_changes(incident_id: str) -> Response:
        inc = await svc.require(incident_id)
        hour = 3600 * 10**9
        events = await deps.changes.between(inc.created_ns - hour, (inc.resolved_ns or svc.clock()) + 1)
        return json_response({"change_events": await deps.change_views(events)})

    @r.get("/incidents/{incident_id}/postmortem")
    async def postmortem_draft(incident_id: str) -> Response:
        inc = await svc.require(incident_id)
        text = await postmortem(inc, store, deps.changes, await deps.names(), now_ns=svc.clock(),
                                slo_budgets=deps.slo_budgets)
        return Response(text, media_type="text/markdown; charset=utf-8")

    @r.get("/change_events")
    async def change_events(request: Request) -> Response:
        window = _window(request) or (0, 1 << 62)
        events = await deps.changes.between(window[0], window[1], limit=10_000)
        return page(request, await deps.change_views(events[::-1]), "change_events")

    @r.get("/change_events/{event_id}")
    async def change_event(event_id: str) -> Response:
        for c in await deps.changes.between(0, 1 << 62, limit=100_000):
            if c.id == event_id:
                return json_response({"change_event": (await deps.change_views([c]))[0]})
        raise NotFoundError(f"Change event {event_id} not found")

    @r.get("/services/{service_id}/change_events")
    async def service_changes(service_id: str, request: Request) -> Response:
        service = await store.get(Service, service_id)
        if service is None:
            raise NotFoundError(f"Service {service_id} not found")
        window = _window(request) or (0, 1 << 62)
        # The service's own events and those on a Kubernetes service of its name ("default/web" for "web").
        events = [c for c in await deps.changes.between(window[0], window[1], limit=10_000)
                  if same_service(c.service, [service.name])]
        return page(request, await deps.change_views(events[::-1]), "change_events")

    return r
