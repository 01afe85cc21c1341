"""PagerDuty REST API v2 under ``/pagerduty``: services, users, escalation policies, schedules, on-calls.

Objects are read in PagerDuty's shape and written from it: references
(``{"id": ..., "type": "user_reference"}``) become ids, read-only fields a
client sends back (``self``, ``summary``, ``html_url``...) are ignored, and
the result is validated by the same model the ``incidents:`` settings use.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ValidationError

from pitwall.core.body import BodyLimits, read_body
from pitwall.core.http_errors import error_router
from pitwall.incidents.api import PREFIX, RestDeps, array, json_response, page, read_json, remember_base
from pitwall.incidents.errors import InvalidInput, NotFoundError
from pitwall.incidents.model import (
    ContactMethod,
    EscalationPolicy,
    Override,
    Schedule,
    Service,
    User,
)
from pitwall.incidents.oncall import final_schedule, parse_time, shifts_overlapping
from pitwall.incidents.store import new_id
from pitwall.incidents.views import Views, iso

__all__ = ["config_router", "oncall_entries"]

M = TypeVar("M", bound=BaseModel)

_DAY_NS = 86_400 * 10**9
_MAX_WINDOW_NS = 93 * _DAY_NS  # PagerDuty limits schedule and on-call ranges to about three months
_CM_TYPES = {"email_contact_method": "email", "slack_contact_method": "slack", "webhook_contact_method": "webhook"}


def _validated(cls: type[M], data: dict[str, Any]) -> M:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        errs = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise InvalidInput("Invalid Input Provided", errs) from None


def _pick(d: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise InvalidInput("Invalid Input Provided", ["expected an object"])
    return {k: d[k] for k in fields if k in d}


def _ref_id(v: Any) -> Any:
    return v.get("id") if isinstance(v, dict) else v


def service_in(d: Any, id_: str = "") -> Service:
    data = _pick(d, ("name", "description", "acknowledgement_timeout", "auto_resolve_timeout", "status",
                     "integration_keys", "alert_creation", "alert_grouping_parameters", "alert_dedup"))
    if "alert_grouping_parameters" not in d and "alert_grouping" in d:  # PagerDuty's deprecated pair
        data["alert_grouping_parameters"] = {"type": d["alert_grouping"], "config": (
            {"timeout": d.get("alert_grouping_timeout")} if d["alert_grouping"] == "time" else None)}
    if "alert_grouping_parameters" in data and data["alert_grouping_parameters"] is None:
        data["alert_grouping_parameters"] = {"type": None}  # null turns grouping off, as type null does
    if isinstance(data.get("alert_grouping_parameters"), dict):  # as rendered: drop read-only keys' nulls
        agp = data["alert_grouping_parameters"]
        if isinstance(agp.get("config"), dict):
            agp = {**agp, "config": {k: v for k, v in agp["config"].items() if v is not None}}
        data["alert_grouping_parameters"] = agp
    data["escalation_policy"] = _ref_id(d.get("escalation_policy")) or ""
    rule = d.get("incident_urgency_rule")
    if isinstance(rule, dict) and rule.get("type") == "severity_based":
        data["urgency"] = "severity_based"
    elif isinstance(rule, dict) and rule.get("urgency"):
        data["urgency"] = rule["urgency"]
    return _validated(Service, {**data, "id": id_ or d.get("id") or ""})


def user_in(d: Any, id_: str = "") -> User:
    data = _pick(d, ("name", "email", "time_zone", "role"))
    cms = []
    for c in d.get("contact_methods") or []:
        if isinstance(c, dict):
            cms.append({"id": c.get("id", ""), "type": _CM_TYPES.get(c.get("type", ""), c.get("type", "email")),
                        "address": c.get("address", ""), "label": c.get("label", "")})
    rules = d.get("notification_rules") or {}
    if isinstance(rules, list):  # as rendered: [{"urgency": "high", "contact_methods": [ids]}]
        rules = {r.get("urgency"): r.get("contact_methods") for r in rules if isinstance(r, dict)}
    return _validated(User, {**data, "contact_methods": cms, "notification_rules": rules,
                             "id": id_ or d.get("id") or ""})


def policy_in(d: Any, id_: str = "") -> EscalationPolicy:
    data = _pick(d, ("name", "description", "num_loops"))
    rules = []
    for r in d.get("escalation_rules") or []:
        if not isinstance(r, dict):
            continue
        rules.append({"escalation_delay_in_minutes": r.get("escalation_delay_in_minutes", 30),
                      "targets": [{"id": t.get("id", ""), "type": t.get("type", "")}
                                  for t in r.get("targets") or [] if isinstance(t, dict)]})
    return _validated(EscalationPolicy, {**data, "escalation_rules": rules, "id": id_ or d.get("id") or ""})


def schedule_in(d: Any, id_: str = "") -> Schedule:
    data = _pick(d, ("name", "description", "time_zone"))
    layers = []
    for lay in d.get("schedule_layers") or []:
        if isinstance(lay, dict):
            layers.append(_pick(lay, ("name", "start", "end", "rotation_virtual_start",
                                      "rotation_turn_length_seconds", "users", "restrictions")))
    return _validated(Schedule, {**data, "schedule_layers": layers, "id": id_ or d.get("id") or ""})


def _range(request: Request, default_ns: int, now: int) -> tuple[int, int]:
    since_q, until_q = request.query_params.get("since"), request.query_params.get("until")
    since = parse_time(since_q) if since_q else now
    until = parse_time(until_q) if until_q else since + default_ns
    if until <= since:
        raise InvalidInput("Invalid Input Provided", ["until must be after since"])
    if until - since > _MAX_WINDOW_NS:
        raise InvalidInput("Invalid Input Provided", ["the range between since and until is over 3 months"])
    return since, until


async def _check_refs(deps: RestDeps, obj: BaseModel) -> None:
    """Refuse references to objects that do not exist (by id)."""
    store = deps.store
    missing: list[str] = []
    if (isinstance(obj, Service) and obj.escalation_policy
            and await store.get(EscalationPolicy, obj.escalation_policy) is None):
        missing.append(f"escalation policy {obj.escalation_policy}")
    if isinstance(obj, EscalationPolicy):
        for r in obj.escalation_rules:
            for t in r.targets:
                cls = User if t.kind == "user" else Schedule
                if await store.get(cls, t.id) is None:
                    missing.append(f"{t.kind} {t.id}")
    if isinstance(obj, Schedule):
        for layer in obj.schedule_layers:
            missing += [f"user {u}" for u in layer.users if await store.get(User, u) is None]
    if missing:
        raise InvalidInput("Invalid Input Provided", [f"{m} not found" for m in missing])


def _crud(r: APIRouter, deps: RestDeps, cls: type[BaseModel], plural: str, single: str,
          parse: Any, render: Any) -> None:
    """list / get / create / update / delete of one configuration kind."""
    store = deps.store

    async def get_or_404(id_: str) -> Any:
        obj = await store.get(cls, id_)
        if obj is None:
            raise NotFoundError(f"{single.replace('_', ' ').title()} {id_} not found")
        return obj

    @r.get(f"/{plural}", name=f"list_{plural}")
    async def list_all(request: Request) -> Response:
        query = request.query_params.get("query", "").lower()
        objs = [o for o in await store.list_all(cls) if query in getattr(o, "name", "").lower()]
        names = await deps.names()
        return page(request, [await render(o, names, request) for o in objs], plural)

    @r.get(f"/{plural}/{{obj_id}}", name=f"get_{single}")
    async def get_one(obj_id: str, request: Request) -> Response:
        return json_response({single: await render(await get_or_404(obj_id), await deps.names(), request)})

    @r.post(f"/{plural}", status_code=201, name=f"create_{single}")
    async def create(request: Request) -> Response:
        body = await read_json(request, deps, single)
        obj = parse(body, new_id("P"))
        await _check_refs(deps, obj)
        await store.put(obj)
        return json_response({single: await render(obj, await deps.names(), request)}, 201)

    @r.put(f"/{plural}/{{obj_id}}", name=f"update_{single}")
    async def update(obj_id: str, request: Request) -> Response:
        old = await get_or_404(obj_id)
        body = await read_json(request, deps, single)
        if not isinstance(body, dict):
            raise InvalidInput("Invalid Input Provided", [f"{single} must be an object"])
        merged = {**_as_input(old, render), **body}
        obj = parse(merged, obj_id)
        await _check_refs(deps, obj)
        await store.put(obj)
        return json_response({single: await render(obj, await deps.names(), request)})

    @r.delete(f"/{plural}/{{obj_id}}", status_code=204, name=f"delete_{single}")
    async def delete(obj_id: str) -> Response:
        if not await store.delete(cls, obj_id):
            raise NotFoundError(f"{single.replace('_', ' ').title()} {obj_id} not found")
        return Response(status_code=204)


def _as_input(obj: BaseModel, render: Any) -> dict[str, Any]:
    """An object's stored fields in the input shape (for a PUT that sends only some of them)."""
    d = obj.model_dump(mode="json", by_alias=True)
    if isinstance(obj, Service):
        d["incident_urgency_rule"] = ({"type": "severity_based"} if obj.urgency == "severity_based"
                                      else {"type": "constant", "urgency": obj.urgency})
    if isinstance(obj, User):
        d["contact_methods"] = [{**c, "type": f"{c['type']}_contact_method"} for c in d["contact_methods"]]
    return d


def config_router(deps: RestDeps) -> APIRouter:
    r = error_router("pagerduty", prefix=PREFIX, tags=["pagerduty"], dependencies=[Depends(remember_base)])
    store, svc = deps.store, deps.service

    async def r_service(s: Service, names: dict[str, str], _: Request) -> dict[str, Any]:
        pol = await store.get(EscalationPolicy, s.escalation_policy) if s.escalation_policy else None
        return deps.views.service(s, pol)

    async def r_user(u: User, names: dict[str, str], _: Request) -> dict[str, Any]:
        return deps.views.user(u)

    async def r_policy(p: EscalationPolicy, names: dict[str, str], _: Request) -> dict[str, Any]:
        return deps.views.policy(p, names)

    async def r_schedule(s: Schedule, names: dict[str, str], request: Request) -> dict[str, Any]:
        final = None
        if request.query_params.get("since") or request.query_params.get("until"):
            since, until = _range(request, 7 * _DAY_NS, svc.clock())
            final = final_schedule(s, await store.overrides(s.id), since, until)
        return deps.views.schedule(s, names, final)

    _crud(r, deps, Service, "services", "service", service_in, r_service)
    _crud(r, deps, User, "users", "user", user_in, r_user)
    _crud(r, deps, EscalationPolicy, "escalation_policies", "escalation_policy", policy_in, r_policy)
    _crud(r, deps, Schedule, "schedules", "schedule", schedule_in, r_schedule)

    async def need(cls: type[BaseModel], id_: str, what: str) -> Any:
        obj = await store.get(cls, id_)
        if obj is None:
            raise NotFoundError(f"{what} {id_} not found")
        return obj

    @r.post("/services/{service_id}/integrations", status_code=201)
    async def add_integration(service_id: str, request: Request) -> Response:
        s: Service = await need(Service, service_id, "Service")
        body = await read_json(request, deps, "integration")
        kind = body.get("type") if isinstance(body, dict) else None
        if kind not in ("events_api_v2_inbound_integration", "generic_events_api_inbound_integration"):
            raise InvalidInput("Invalid Input Provided", ["only events_api_v2_inbound_integration is supported"])
        key = secrets.token_hex(16)
        s = s.model_copy(update={"integration_keys": [*s.integration_keys, key]})
        await store.put(s)
        integ = deps.views.service(s, None)["integrations"][-1]
        return json_response({"integration": integ}, 201)

    @r.get("/services/{service_id}/integrations/{integration_id}")
    async def get_integration(service_id: str, integration_id: str) -> Response:
        s: Service = await need(Service, service_id, "Service")
        for integ in deps.views.service(s, None)["integrations"]:
            if integ["id"] == integration_id:
                return json_response({"integration": integ})
        raise NotFoundError(f"Integration {integration_id} not found")

    @r.get("/users/{user_id}/contact_methods")
    async def contact_methods(user_id: str) -> Response:
        u: User = await need(User, user_id, "User")
        return json_response({"contact_methods": deps.views.user(u)["contact_methods"]})

    @r.post("/users/{user_id}/contact_methods", status_code=201)
    async def add_contact_method(user_id: str, request: Request) -> Response:
        u: User = await need(User, user_id, "User")
        body = await read_json(request, deps, "contact_method")
        if not isinstance(body, dict) or body.get("type") not in _CM_TYPES:
            raise InvalidInput("Invalid Input Provided", [f"type must be one of {', '.join(_CM_TYPES)}"])
        cm = _validated(ContactMethod, {"id": new_id("PC"), "type": _CM_TYPES[body["type"]],
                                        "address": body.get("address", ""), "label": body.get("label", "")})
        u = u.model_copy(update={"contact_methods": [*u.contact_methods, cm]})
        await store.put(u)
        return json_response({"contact_method": deps.views.user(u)["contact_methods"][-1]}, 201)

    @r.get("/schedules/{schedule_id}/overrides")
    async def overrides(schedule_id: str, request: Request) -> Response:
        await need(Schedule, schedule_id, "Schedule")
        since, until = _range(request, 7 * _DAY_NS, svc.clock())
        names = await deps.names()
        items = [deps.views.override(o, names) for o in sorted(await store.overrides(schedule_id),
                                                          key=lambda o: o.start_ns)
                 if o.start_ns < until and o.end_ns > since]
        return json_response({"overrides": items, "limit": len(items), "offset": 0, "more": False,
                              "total": len(items)})

    @r.post("/schedules/{schedule_id}/overrides", status_code=201)
    async def add_overrides(schedule_id: str, request: Request) -> Response:
        sched: Schedule = await need(Schedule, schedule_id, "Schedule")
        body, several = await _override_body(request, deps)
        names = await deps.names()
        out = []
        for item in body:
            user_id = _ref_id(item.get("user")) if isinstance(item, dict) else None
            if not isinstance(user_id, str) or await store.get(User, user_id) is None:
                raise InvalidInput("Invalid Input Provided", [f"override user {user_id} not found"])
            o = _validated(Override, {"id": new_id("PO"), "start_ns": parse_time(str(item.get("start", "")),
                                                                                  sched.time_zone),
                                      "end_ns": parse_time(str(item.get("end", "")), sched.time_zone),
                                      "user": user_id, "created_ns": svc.clock()})
            await store.put_override(schedule_id, o)
            out.append({"status": 201, "errors": [], "override": deps.views.override(o, names)})
        # One override in, the override out; a list in, PagerDuty's per-item status list out.
        return json_response(out if several else {"override": out[0]["override"]}, 201)

    @r.delete("/schedules/{schedule_id}/overrides/{override_id}")
    async def delete_override(schedule_id: str, override_id: str) -> Response:
        await need(Schedule, schedule_id, "Schedule")
        if not await store.delete_override(schedule_id, override_id):
            raise NotFoundError(f"Override {override_id} not found")
        return Response(status_code=200)

    @r.get("/schedules/{schedule_id}/users")
    async def schedule_users(schedule_id: str, request: Request) -> Response:
        sched: Schedule = await need(Schedule, schedule_id, "Schedule")
        since, until = _range(request, 7 * _DAY_NS, svc.clock())
        ids = dict.fromkeys(sp.user for sp in final_schedule(sched, await store.overrides(schedule_id), since, until))
        users = [deps.views.user(u) for uid in ids if (u := await store.get(User, uid)) is not None]
        return json_response({"users": users})

    @r.get("/oncalls")
    async def oncalls(request: Request) -> Response:
        now = svc.clock()
        since_q, until_q = request.query_params.get("since"), request.query_params.get("until")
        since = parse_time(since_q) if since_q else now
        until = parse_time(until_q) if until_q else since + 1
        if until <= since or until - since > _MAX_WINDOW_NS:
            raise InvalidInput("Invalid Input Provided", ["since/until must span up to 3 months, until after since"])
        sched_ids, pol_ids, user_ids = (array(request, "schedule_ids"), array(request, "escalation_policy_ids"),
                                        array(request, "user_ids"))
        earliest = request.query_params.get("earliest", "").lower() == "true"
        items = await oncall_entries(deps, since, until, schedule_ids=sched_ids, policy_ids=pol_ids,
                                     earliest=earliest)
        if user_ids:
            items = [i for i in items if i["user"]["id"] in user_ids]
        return page(request, items, "oncalls")

    return r


async def oncall_entries(deps: RestDeps, since: int, until: int, *, schedule_ids: Sequence[str] = (),
                         policy_ids: Sequence[str] = (), earliest: bool = False) -> list[dict[str, Any]]:
    """PagerDuty's on-call entries between ``since`` and ``until`` (ns): per escalation policy and level,
    the users named directly and whoever a schedule puts on call then (``earliest``: each user once)."""
    store = deps.store
    names = await deps.names()
    schedules = {s.id: s for s in await store.list_all(Schedule)}
    spans_cache: dict[str, list[Any]] = {}
    items: list[dict[str, Any]] = []
    for pol in await store.list_all(EscalationPolicy):
        if policy_ids and pol.id not in policy_ids:
            continue
        for level, rule in enumerate(pol.escalation_rules, start=1):
            for t in rule.targets:
                if t.kind == "user":
                    if not schedule_ids:
                        items.append(_oncall(deps.views, pol, level, None, t.id, None, None, names))
                    continue
                if (schedule_ids and t.id not in schedule_ids) or t.id not in schedules:
                    continue
                if t.id not in spans_cache:
                    sch = schedules[t.id]
                    spans_cache[t.id] = shifts_overlapping(sch, await store.overrides(sch.id), since, until)
                seen: set[str] = set()
                for sp in spans_cache[t.id]:
                    if earliest and sp.user in seen:
                        continue
                    seen.add(sp.user)
                    items.append(_oncall(deps.views, pol, level, schedules[t.id], sp.user, sp.start_ns, sp.end_ns,
                                         names))
    return items


async def _override_body(request: Request, deps: RestDeps) -> tuple[list[Any], bool]:
    """``{"override": {...}}`` (one) or ``{"overrides": [...]}`` (several), as PagerDuty takes both."""
    async with read_body(request, BodyLimits(1 << 20, 1 << 20), deps.budget) as body:
        try:
            data = orjson.loads(body.decoded())
        except orjson.JSONDecodeError:
            raise InvalidInput("Invalid Input Provided", ["The request body is not valid JSON"]) from None
    if isinstance(data, dict) and isinstance(data.get("override"), dict):
        return [data["override"]], False
    if isinstance(data, dict) and isinstance(data.get("overrides"), dict):  # pdpyras wraps one object so
        return [data["overrides"]], True
    if isinstance(data, dict) and isinstance(data.get("overrides"), list) and 0 < len(data["overrides"]) <= 100:
        return list(data["overrides"]), True
    raise InvalidInput("Invalid Input Provided", ["override or overrides must be provided"])


def _oncall(views: Views, pol: EscalationPolicy, level: int, sched: Schedule | None, user: str,
            start: int | None, end: int | None, names: dict[str, str]) -> dict[str, Any]:
    return {"escalation_policy": views.ref("escalation_policy", pol.id, pol.name),
            "escalation_level": level,
            "schedule": views.ref("schedule", sched.id, sched.name) if sched else None,
            "user": views.ref("user", user, names.get(user, user)),
            "start": iso(start) if start is not None else None, "end": iso(end) if end is not None else None}
