"""GitLab's pipeline schedules API under ``/gitlab/api/v4/projects/:id/pipeline_schedules``: list, get,
create, edit, delete, ``play``, ``take_ownership``, the schedule's ``pipelines`` and its ``variables``; the
shapes of GitLab's API documentation, errors GitLab's ``{"message": ...}``. The schedules run in
``schedules.Scheduler`` with those of the configuration."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from pitwall.core.errors import BadData, NotFound, TooLarge
from pitwall.core.http_errors import error_router
from pitwall.pipelines.api import GitLabShapes, _int, _paginate, _user, _who
from pitwall.pipelines.runner import PipelineRunner, iso
from pitwall.pipelines.schedules import EDITABLE, ScheduleStore, next_run

__all__ = ["schedules_router"]

MAX_BODY_BYTES = 64 << 10
_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


async def _params(request: Request) -> dict[str, Any]:
    """GitLab takes attributes as query parameters, a form or JSON: all three, the body winning."""
    out: dict[str, Any] = dict(request.query_params)
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > MAX_BODY_BYTES:
            raise TooLarge(f"request body larger than {MAX_BODY_BYTES} bytes")
    if buf.strip():
        if request.headers.get("content-type", "").split(";")[0].strip() == "application/x-www-form-urlencoded":
            out.update(parse_qsl(buf.decode("utf-8", "replace"), max_num_fields=50))
        else:
            try:
                doc = orjson.loads(bytes(buf))
            except orjson.JSONDecodeError as e:
                raise BadData(f"400 Bad request - invalid JSON: {e}") from None
            if not isinstance(doc, dict):
                raise BadData("400 Bad request - the body must be a JSON object")
            out.update(doc)
    if isinstance(out.get("active"), str):
        if out["active"].lower() not in _BOOL:
            raise BadData("400 Bad request - active is invalid")
        out["active"] = _BOOL[out["active"].lower()]
    return out


def _variable(v: dict[str, Any]) -> dict[str, Any]:
    return {"key": v["key"], "variable_type": v["variable_type"], "value": v["value"], "raw": False}


def schedules_router(runner: PipelineRunner, stored: ScheduleStore, base_url: str) -> APIRouter:
    """The pipeline schedules routes of GitLab's REST API v4."""
    r = error_router("gitlab", prefix="/gitlab/api/v4/projects/{pid}/pipeline_schedules", tags=["gitlab"])
    shapes = GitLabShapes(runner, base_url)

    async def project_id(pid: str) -> int:
        p = await runner.store.project(_int(pid, "Project"))
        if p is None:
            raise NotFound("404 Project Not Found")
        return int(p["id"])

    async def shape(s: dict[str, Any], *, full: bool) -> dict[str, Any]:
        nxt = next_run(s)
        out = {"id": s["id"], "description": s["description"], "ref": s["ref"], "cron": s["cron"],
               "cron_timezone": s["cron_timezone"], "next_run_at": iso(nxt.timestamp()) if nxt else None,
               "active": s["active"], "created_at": iso(s["created_at"]), "updated_at": iso(s["updated_at"]),
               "owner": _user(s["owner"])}
        if full:
            last = await runner.store.pipeline(s["last_pipeline_id"]) if s["last_pipeline_id"] else None
            out["last_pipeline"] = ({"id": last["id"], "sha": last["sha"], "ref": last["ref"],
                                     "status": last["status"]} if last else None)
            out["variables"] = [_variable(v) for v in s["variables"]]
        return out

    @r.get("")
    async def list_schedules(request: Request, pid: str) -> Response:
        scope = request.query_params.get("scope")
        if scope not in (None, "", "active", "inactive"):
            raise BadData("400 Bad request - scope does not have a valid value")
        items = await stored.list(await project_id(pid))
        if scope:
            items = [s for s in items if s["active"] == (scope == "active")]
        return _paginate(request, [await shape(s, full=False) for s in items])

    @r.post("")
    async def create(request: Request, pid: str) -> JSONResponse:
        pid_ = await project_id(pid)
        fields = await _params(request)
        for k in ("description", "ref", "cron"):
            if not fields.get(k):
                raise BadData(f"400 Bad request - {k} is missing")
        s = await stored.create(pid_, {k: fields[k] for k in EDITABLE if k in fields}, _who(request))
        return JSONResponse(await shape(s, full=True), status_code=201)

    @r.get("/{sid}")
    async def get(pid: str, sid: str) -> JSONResponse:
        s = await stored.get(await project_id(pid), _int(sid, "Pipeline Schedule"))
        return JSONResponse(await shape(s, full=True))

    @r.put("/{sid}")
    async def edit(request: Request, pid: str, sid: str) -> JSONResponse:
        fields = await _params(request)
        s = await stored.edit(await project_id(pid), _int(sid, "Pipeline Schedule"), fields)
        return JSONResponse(await shape(s, full=True))

    @r.delete("/{sid}")
    async def delete(pid: str, sid: str) -> Response:
        await stored.delete(await project_id(pid), _int(sid, "Pipeline Schedule"))
        return Response(status_code=204)

    @r.post("/{sid}/play")
    async def play(request: Request, pid: str, sid: str) -> JSONResponse:
        s = await stored.get(await project_id(pid), _int(sid, "Pipeline Schedule"))
        await stored.play(s, _who(request))
        return JSONResponse({"message": "201 Created"}, status_code=201)

    @r.post("/{sid}/take_ownership")
    async def take_ownership(request: Request, pid: str, sid: str) -> JSONResponse:
        who = _who(request)
        s = await stored.update(await project_id(pid), _int(sid, "Pipeline Schedule"),
                                lambda x: x.update(owner=who))
        return JSONResponse(await shape(s, full=True), status_code=201)

    @r.get("/{sid}/pipelines")
    async def pipelines(request: Request, pid: str, sid: str) -> Response:
        s = await stored.get(await project_id(pid), _int(sid, "Pipeline Schedule"))
        ps = [p for p in await runner.store.pipelines() if p.get("schedule_id") == s["id"]
              and p["project_id"] == s["project_id"]]
        ps.sort(key=lambda p: p["id"], reverse=request.query_params.get("sort", "asc") == "desc")
        return _paginate(request, [shapes.pipeline(p, full=False) for p in ps])

    @r.post("/{sid}/variables")
    async def add_variable(request: Request, pid: str, sid: str) -> JSONResponse:
        v = await stored.set_variable(await project_id(pid), _int(sid, "Pipeline Schedule"), await _params(request),
                                      new=True)
        return JSONResponse(_variable(v), status_code=201)

    @r.put("/{sid}/variables/{key}")
    async def edit_variable(request: Request, pid: str, sid: str, key: str) -> JSONResponse:
        fields = {**await _params(request), "key": key}
        v = await stored.set_variable(await project_id(pid), _int(sid, "Pipeline Schedule"), fields, new=False)
        return JSONResponse(_variable(v))

    @r.delete("/{sid}/variables/{key}")
    async def delete_variable(pid: str, sid: str, key: str) -> JSONResponse:
        v = await stored.delete_variable(await project_id(pid), _int(sid, "Pipeline Schedule"), key)
        return JSONResponse(_variable(v))

    return r
