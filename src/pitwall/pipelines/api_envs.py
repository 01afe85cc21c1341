"""GitLab's REST API v4 for environments and deployments (``projects/:id/environments``,
``projects/:id/deployments``) under ``/gitlab/api/v4``, in GitLab's JSON shapes, and pitwall's DORA figures
under ``/api/pipelines/v1/dora``."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from pitwall.core.errors import BadData, NotFound
from pitwall.core.http_errors import error_router
from pitwall.pipelines.api import GitLabShapes, _int, _paginate, _user
from pitwall.pipelines.deployments import DEPLOYMENT_STATUSES
from pitwall.pipelines.dora import parse_window
from pitwall.pipelines.runner import PipelineRunner, iso

__all__ = ["dora_router", "gitlab_env_router"]

_ENV_STATES = ("available", "stopping", "stopped")
_DEP_ORDER = ("id", "iid", "created_at", "updated_at", "finished_at", "ref")


def _ts(v: str, what: str) -> float:
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadData(f"400 Bad request - {what} is invalid") from None


class EnvShapes:
    """Environments and deployments as GitLab's API shows them."""

    def __init__(self, runner: PipelineRunner, shapes: GitLabShapes) -> None:
        self.runner = runner
        self.shapes = shapes

    def environment(self, e: dict[str, Any]) -> dict[str, Any]:
        return {"id": e["id"], "name": e["name"], "slug": e["slug"], "description": None,
                "external_url": e.get("external_url"), "state": e["state"], "tier": e["tier"],
                "created_at": iso(e["created_at"]), "updated_at": iso(e["updated_at"]),
                "enable_advanced_logs_querying": False, "logs_api_path": None,
                "auto_stop_at": iso(e.get("auto_stop_at")), "auto_stop_setting": "always",
                "kubernetes_namespace": None, "flux_resource_path": None}

    async def deployment(self, d: dict[str, Any], *, env: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": d["id"], "iid": d["iid"], "ref": d["ref"], "sha": d["sha"], "status": d["status"],
            "created_at": iso(d["created_at"]), "updated_at": iso(d["updated_at"]),
            "finished_at": iso(d.get("finished_at")), "user": _user(d.get("user", "")),
            "environment": {"id": d["environment_id"], "name": d["environment"],
                            "external_url": (env or {}).get("external_url")},
            "deployable": None}
        j = await self.runner.store.job(d["job_id"])
        p = await self.runner.store.pipeline(d["pipeline_id"])
        if j is not None and p is not None:
            out["deployable"] = self.shapes.job(j, p)
        return out


def gitlab_env_router(runner: PipelineRunner, base_url: str) -> APIRouter:
    """``environments`` (list, get, stop) and ``deployments`` (list, get) of a project."""
    r = error_router("gitlab", prefix="/gitlab/api/v4", tags=["gitlab"])
    shapes = EnvShapes(runner, GitLabShapes(runner, base_url))
    deps = runner.deployments

    async def project(pid: str) -> dict[str, Any]:
        p = await runner.store.project(_int(pid, "Project"))
        if p is None:
            raise NotFound("404 Project Not Found")
        return p

    async def environment(pid: str, env_id: str) -> dict[str, Any]:
        proj = await project(pid)
        e = await deps.environment(proj["id"], _int(env_id, "Environment"))
        if e is None:
            raise NotFound("404 Environment Not Found")
        return e

    @r.get("/projects/{pid}/environments")
    async def list_environments(request: Request, pid: str) -> Response:
        proj = await project(pid)
        q = request.query_params
        envs = await deps.environments(proj["id"])
        if q.get("name"):
            envs = [e for e in envs if e["name"] == q["name"]]
        if q.get("search"):
            envs = [e for e in envs if q["search"].lower() in e["name"].lower()]
        if q.get("states"):
            if q["states"] not in _ENV_STATES:
                raise BadData("400 Bad request - states does not have a valid value")
            envs = [e for e in envs if e["state"] == q["states"]]
        return _paginate(request, [shapes.environment(e) for e in envs])

    @r.get("/projects/{pid}/environments/{env_id}")
    async def get_environment(pid: str, env_id: str) -> JSONResponse:
        e = await environment(pid, env_id)
        last = await deps.last_deployment(e)
        out = shapes.environment(e)
        out["last_deployment"] = await shapes.deployment(last, env=e) if last is not None else None
        return JSONResponse(out)

    @r.post("/projects/{pid}/environments/{env_id}/stop")
    async def stop_environment(pid: str, env_id: str) -> JSONResponse:
        e = await environment(pid, env_id)
        out = await runner.stop_environment(e["project_id"], e["id"])
        return JSONResponse(shapes.environment(out), status_code=200)

    @r.get("/projects/{pid}/deployments")
    async def list_deployments(request: Request, pid: str) -> Response:
        proj = await project(pid)
        q = request.query_params
        ds = [d for d in await deps.deployments() if d["project_id"] == proj["id"]]
        if q.get("environment"):
            ds = [d for d in ds if d["environment"] == q["environment"]]
        if q.get("status"):
            if q["status"] not in DEPLOYMENT_STATUSES:
                raise BadData("400 Bad request - status does not have a valid value")
            ds = [d for d in ds if d["status"] == q["status"]]
        for key, field, after in (("updated_after", "updated_at", True), ("updated_before", "updated_at", False),
                                  ("finished_after", "finished_at", True), ("finished_before", "finished_at", False)):
            if q.get(key):
                t = _ts(q[key], key)
                ds = [d for d in ds if d.get(field) is not None and (d[field] > t if after else d[field] < t)]
        order = q.get("order_by", "id")
        if order not in _DEP_ORDER:
            raise BadData("400 Bad request - order_by does not have a valid value")
        ds.sort(key=lambda d: (d.get(order) is None, d.get(order) or 0), reverse=q.get("sort", "asc") == "desc")
        envs = {e["id"]: e for e in await deps.environments(proj["id"])}
        return _paginate(request, [await shapes.deployment(d, env=envs.get(d["environment_id"])) for d in ds])

    @r.get("/projects/{pid}/deployments/{dep_id}")
    async def get_deployment(pid: str, dep_id: str) -> JSONResponse:
        proj = await project(pid)
        d = await deps.deployment(_int(dep_id, "Deployment"))
        if d is None or d["project_id"] != proj["id"]:
            raise NotFound("404 Deployment Not Found")
        return JSONResponse(await shapes.deployment(d, env=await deps.environment(proj["id"],
                                                                                   d["environment_id"])))

    return r


def dora_router(runner: PipelineRunner) -> APIRouter:
    """``GET /api/pipelines/v1/dora?environment=production&window=30d[&project=ID]``: the four keys."""
    r = error_router("native", prefix="/api/pipelines/v1", tags=["pipelines"])

    @r.get("/dora")
    async def dora(request: Request) -> JSONResponse:
        q = request.query_params
        try:
            window = parse_window(q.get("window", "30d"))
        except ValueError as e:
            raise BadData(str(e)) from None
        project = _int(q["project"], "Project") if q.get("project") else None
        env = q.get("environment", "production")
        return JSONResponse(await runner.dora_figures(project, env, time.time(), window))

    return r
