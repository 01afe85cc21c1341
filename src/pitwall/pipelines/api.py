"""GitLab's REST API v4, the subset CI tools read and drive, under ``/gitlab/api/v4`` (python-gitlab takes
``http://HOST:PORT/gitlab``), and pitwall's own ``/api/pipelines/v1`` for the CLI (run a repository, follow
logs). Shapes follow GitLab's API documentation; errors are GitLab's ``{"message": ...}``."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from pitwall.core.errors import BadData, NotFound, TooLarge
from pitwall.core.http_errors import error_router
from pitwall.core.tenancy import PRINCIPAL_KEY
from pitwall.pipelines.runner import PipelineRunner, iso, latest_jobs, pipeline_duration
from pitwall.pipelines.status import COMPLETED
from pitwall.pipelines.watch import RepoWatcher

__all__ = ["gitlab_hook_router", "gitlab_router", "native_router"]

MAX_BODY_BYTES = 1 << 20
MAX_PER_PAGE = 100
MAX_ARTIFACTS_ZIP = 200 << 20
_TEXT = {"success": "passed", "failed": "failed", "running": "running", "pending": "pending",
         "canceled": "canceled", "skipped": "skipped", "manual": "manual", "created": "created",
         "scheduled": "delayed", "waiting_for_resource": "waiting"}


async def _json(request: Request) -> dict[str, Any]:
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > MAX_BODY_BYTES:
            raise TooLarge(f"request body larger than {MAX_BODY_BYTES} bytes")
    if not buf.strip():
        return {}
    try:
        doc = orjson.loads(bytes(buf))
    except orjson.JSONDecodeError as e:
        raise BadData(f"400 Bad request - invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadData("400 Bad request - the body must be a JSON object")
    return doc


def _who(request: Request) -> str:
    return str(getattr(request.scope.get(PRINCIPAL_KEY), "name", "") or "anonymous")


def _user(name: str) -> dict[str, Any]:
    return {"id": 1, "username": name or "anonymous", "name": name or "anonymous", "state": "active",
            "locked": False, "avatar_url": None, "web_url": ""}


def _int(v: str, what: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise NotFound(f"404 {what} Not Found") from None
    if n <= 0:
        raise NotFound(f"404 {what} Not Found")
    return n


class GitLabShapes:
    """Pipelines, jobs and projects as GitLab's API shows them."""

    def __init__(self, runner: PipelineRunner, base_url: str) -> None:
        self.runner = runner
        self.base = base_url.rstrip("/")

    def project(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"id": p["id"], "name": p["name"], "path": p["path"], "path_with_namespace": p["path_with_namespace"],
                "name_with_namespace": p["name_with_namespace"], "description": p["repo"],
                "default_branch": None, "web_url": f"{self.base}/{p['path_with_namespace']}",
                "namespace": {"id": 1, "name": "pitwall", "path": "pitwall", "kind": "group", "full_path": "pitwall"}}

    def pipeline(self, p: dict[str, Any], *, full: bool = True) -> dict[str, Any]:
        out = {"id": p["id"], "iid": p["iid"], "project_id": p["project_id"], "sha": p["sha"], "ref": p["ref"],
               "status": p["status"], "source": p["source"], "created_at": iso(p["created_at"]),
               "updated_at": iso(p["updated_at"]), "web_url": f"{self.base}/-/pipelines/{p['id']}",
               "name": p.get("name")}
        if not full:
            return out
        started = p.get("started_at")
        out.update({"before_sha": p["before_sha"], "tag": p["tag"], "yaml_errors": None, "user": _user(p["user"]),
                    "started_at": iso(started), "finished_at": iso(p.get("finished_at")),
                    "committed_at": p.get("commit_timestamp") or None, "duration": _secs(pipeline_duration(p)),
                    "queued_duration": round(started - p["created_at"], 3) if started else None,
                    "coverage": p.get("coverage"),
                    "detailed_status": _detailed(p["status"], f"/-/pipelines/{p['id']}")})
        return out

    def job(self, j: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
        started, finished = j.get("started_at"), j.get("finished_at")
        out: dict[str, Any] = {
            "id": j["id"], "status": j["status"], "stage": j["stage"], "name": j["name"], "ref": p["ref"],
            "tag": p["tag"], "coverage": j.get("coverage"), "allow_failure": j["allow_failure"], "archived": False,
            "created_at": iso(j["created_at"]), "started_at": iso(started), "finished_at": iso(finished),
            "erased_at": None, "duration": round((finished or started) - started, 3) if started else None,
            "queued_duration": round(started - j["queued_at"], 3) if started and j.get("queued_at") else None,
            "user": _user(j.get("user", "")), "tag_list": j.get("tag_list", []), "runner": None,
            "runner_manager": None, "web_url": f"{self.base}/-/jobs/{j['id']}",
            "project": {"ci_job_token_scope_enabled": False},
            "commit": {"id": p["sha"], "short_id": p["sha"][:8], "title": p.get("commit_message", "").split("\n")[0],
                       "message": p.get("commit_message", ""), "author_name": p.get("commit_author", ""),
                       "created_at": p.get("commit_timestamp")},
            "pipeline": {"id": p["id"], "project_id": p["project_id"], "ref": p["ref"], "sha": p["sha"],
                         "status": p["status"]},
            "artifacts": [], "artifacts_expire_at": iso(j.get("artifacts_expire_at")),
        }
        if j["artifacts_files"]:
            out["artifacts_file"] = {"filename": "artifacts.zip", "size": j["artifacts_size"]}
            out["artifacts"].append({"file_type": "archive", "size": j["artifacts_size"],
                                     "filename": "artifacts.zip", "file_format": "zip"})
        log_size = self.runner.executor.trace_path(j["id"])
        if log_size.exists():
            out["artifacts"].append({"file_type": "trace", "size": log_size.stat().st_size, "filename": "job.log",
                                     "file_format": None})
        if j["status"] == "failed":
            out["failure_reason"] = j.get("failure_reason") or "unknown_failure"
        if j.get("environment"):
            out["environment"] = {"name": j["environment"]["name"], "action": j["environment"].get("action", "start")}
        return out


def _secs(v: float | None) -> int | None:
    return int(v) if v is not None else None


def _detailed(status: str, path: str) -> dict[str, Any]:
    text = _TEXT.get(status, status)
    return {"icon": f"status_{status}", "text": text, "label": text, "group": status, "tooltip": text,
            "has_details": True, "details_path": path, "illustration": None,
            "favicon": f"/assets/ci_favicons/favicon_status_{status}.png"}


def _paginate(request: Request, items: list[Any]) -> Response:
    """GitLab's offset pagination: ``page``/``per_page`` and the X-* and Link headers python-gitlab follows."""
    q = request.query_params
    try:
        page = max(1, int(q.get("page", "1")))
        per = min(MAX_PER_PAGE, max(1, int(q.get("per_page", "20"))))
    except ValueError:
        raise BadData("400 Bad request - page and per_page must be integers") from None
    total = len(items)
    pages = max(1, -(-total // per))
    body = items[(page - 1) * per: page * per]
    headers = {"X-Page": str(page), "X-Per-Page": str(per), "X-Total": str(total), "X-Total-Pages": str(pages),
               "X-Next-Page": str(page + 1) if page < pages else "", "X-Prev-Page": str(page - 1) if page > 1 else ""}
    url = request.url
    links = []
    if page < pages:
        links.append(f'<{url.include_query_params(page=page + 1, per_page=per)}>; rel="next"')
    if page > 1:
        links.append(f'<{url.include_query_params(page=page - 1, per_page=per)}>; rel="prev"')
    links.append(f'<{url.include_query_params(page=1, per_page=per)}>; rel="first"')
    links.append(f'<{url.include_query_params(page=pages, per_page=per)}>; rel="last"')
    headers["Link"] = ", ".join(links)
    return JSONResponse(body, headers=headers)


def _scopes(request: Request) -> set[str]:
    q = request.query_params
    return set(q.getlist("scope[]") + q.getlist("scope"))


def gitlab_hook_router(watcher: RepoWatcher) -> APIRouter:
    """``POST /gitlab/hooks/push``: a GitLab push webhook (``X-Gitlab-Token`` is a pitwall write token) polls
    the watched repository it names at once, so its pipeline starts without waiting for the interval."""
    r = error_router("gitlab", prefix="/gitlab/hooks", tags=["gitlab"])

    @r.post("/push")
    async def push(request: Request) -> JSONResponse:
        body = await _json(request)
        if body.get("object_kind") not in ("push", "tag_push"):
            raise BadData("400 Bad request - only push and tag_push events start pipelines")
        names = {str(v) for v in (_dig(body, "project", "name"), _dig(body, "project", "path"),
                                   _dig(body, "repository", "name")) if v}
        started = []
        matched = False
        for w in watcher.watch:
            if w.repo.expanduser().name.removesuffix(".git") in names:
                matched = True
                started.extend(await watcher.poll(w))
        if not matched:
            raise NotFound(f"404 no watched repository named {sorted(names)} (pipelines.watch)")
        return JSONResponse({"pipelines": started})

    return r


def _dig(d: dict[str, Any], *keys: str) -> Any:
    cur: Any = d
    for k in keys:
        cur = cur.get(k) if isinstance(cur, dict) else None
    return cur


def gitlab_router(runner: PipelineRunner, base_url: str) -> APIRouter:
    """The GitLab REST API v4 subset."""
    r = error_router("gitlab", prefix="/gitlab/api/v4", tags=["gitlab"])
    shapes = GitLabShapes(runner, base_url)
    store = runner.store

    async def project(pid: str) -> dict[str, Any]:
        p = await store.project(_int(pid, "Project"))
        if p is None:
            raise NotFound("404 Project Not Found")
        return p

    async def pipeline(pid: str, pipeline_id: str) -> dict[str, Any]:
        proj = await project(pid)
        p = await store.pipeline(_int(pipeline_id, "Pipeline"))
        if p is None or p["project_id"] != proj["id"]:
            raise NotFound("404 Pipeline Not Found")
        return p

    async def job(pid: str, job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        proj = await project(pid)
        j = await store.job(_int(job_id, "Job"))
        if j is None or j["project_id"] != proj["id"]:
            raise NotFound("404 Job Not Found")
        p = await store.pipeline(j["pipeline_id"])
        assert p is not None
        return j, p

    @r.get("/projects")
    async def list_projects(request: Request) -> Response:
        return _paginate(request, [shapes.project(p) for p in await store.projects()])

    @r.get("/projects/{pid}")
    async def get_project(pid: str) -> JSONResponse:
        return JSONResponse(shapes.project(await project(pid)))

    @r.get("/projects/{pid}/pipelines")
    async def list_pipelines(request: Request, pid: str) -> Response:
        proj = await project(pid)
        q = request.query_params
        ps = [p for p in await store.pipelines() if p["project_id"] == proj["id"]]
        for key in ("status", "ref", "sha", "source", "name"):
            if q.get(key):
                ps = [p for p in ps if str(p.get(key)) == q[key]]
        scope = q.get("scope")
        if scope == "finished":
            ps = [p for p in ps if p["status"] in COMPLETED]
        elif scope == "running":
            ps = [p for p in ps if p["status"] == "running"]
        elif scope == "pending":
            ps = [p for p in ps if p["status"] == "pending"]
        key = q.get("order_by", "id")
        if key not in ("id", "status", "ref", "updated_at", "user_id"):
            raise BadData("400 Bad request - order_by does not have a valid value")
        ps.sort(key=lambda p: (str(p.get(key)) if key != "id" else p["id"]), reverse=q.get("sort", "desc") == "desc")
        return _paginate(request, [shapes.pipeline(p, full=False) for p in ps])

    @r.post("/projects/{pid}/pipeline")
    async def create_pipeline(request: Request, pid: str) -> JSONResponse:
        proj = await project(pid)
        body = await _json(request)
        ref = body.get("ref") or request.query_params.get("ref")
        if not isinstance(ref, str) or not ref:
            raise BadData("400 Bad request - ref is missing")
        variables = body.get("variables") or []
        p = await runner.create(proj["repo"], ref, variables, source="api", user=_who(request))
        return JSONResponse(shapes.pipeline(p), status_code=201)

    @r.get("/projects/{pid}/pipelines/{pipeline_id}")
    async def get_pipeline(pid: str, pipeline_id: str) -> JSONResponse:
        return JSONResponse(shapes.pipeline(await pipeline(pid, pipeline_id)))

    @r.get("/projects/{pid}/pipelines/{pipeline_id}/variables")
    async def pipeline_variables(pid: str, pipeline_id: str) -> JSONResponse:
        p = await pipeline(pid, pipeline_id)
        return JSONResponse([{"key": v["key"], "variable_type": v["variable_type"],
                              "value": "[MASKED]" if v["masked"] else v["value"]} for v in p["variables"]])

    @r.post("/projects/{pid}/pipelines/{pipeline_id}/retry")
    async def retry_pipeline(request: Request, pid: str, pipeline_id: str) -> JSONResponse:
        p = await pipeline(pid, pipeline_id)
        out = await runner.retry_pipeline(p["id"])
        return JSONResponse(shapes.pipeline(out), status_code=201)

    @r.post("/projects/{pid}/pipelines/{pipeline_id}/cancel")
    async def cancel_pipeline(pid: str, pipeline_id: str) -> JSONResponse:
        p = await pipeline(pid, pipeline_id)
        out = await runner.cancel_pipeline(p["id"])
        return JSONResponse(shapes.pipeline(out), status_code=201)

    @r.get("/projects/{pid}/pipelines/{pipeline_id}/jobs")
    async def pipeline_jobs(request: Request, pid: str, pipeline_id: str) -> Response:
        p = await pipeline(pid, pipeline_id)
        jobs = await store.jobs(p["id"])
        if request.query_params.get("include_retried", "").lower() not in ("true", "1"):
            jobs = latest_jobs(jobs)
        scopes = _scopes(request)
        if scopes:
            jobs = [j for j in jobs if j["status"] in scopes]
        jobs.sort(key=lambda j: j["id"], reverse=True)
        return _paginate(request, [shapes.job(j, p) for j in jobs])

    @r.get("/projects/{pid}/pipelines/{pipeline_id}/test_report")
    async def test_report(pid: str, pipeline_id: str) -> JSONResponse:
        from pitwall.pipelines.junit import merge_reports

        p = await pipeline(pid, pipeline_id)
        suites = []
        for j in latest_jobs(await store.jobs(p["id"])):
            rep = runner.junit(j["id"]) if j.get("junit") else None
            if rep is not None:
                suites.append((j["name"], rep))
        return JSONResponse(merge_reports(suites))

    @r.get("/projects/{pid}/jobs")
    async def project_jobs(request: Request, pid: str) -> Response:
        proj = await project(pid)
        scopes = _scopes(request)
        out = []
        for p in reversed([p for p in await store.pipelines() if p["project_id"] == proj["id"]]):
            for j in sorted(latest_jobs(await store.jobs(p["id"])), key=lambda j: j["id"], reverse=True):
                if not scopes or j["status"] in scopes:
                    out.append(shapes.job(j, p))
            if len(out) > 10_000:
                break
        return _paginate(request, out)

    @r.get("/projects/{pid}/jobs/{job_id}")
    async def get_job(pid: str, job_id: str) -> JSONResponse:
        j, p = await job(pid, job_id)
        return JSONResponse(shapes.job(j, p))

    @r.get("/projects/{pid}/jobs/{job_id}/trace")
    async def trace(pid: str, job_id: str) -> Response:
        j, _ = await job(pid, job_id)
        return Response(runner.trace(j["id"]), media_type="text/plain")

    @r.get("/projects/{pid}/jobs/{job_id}/artifacts")
    async def artifacts(pid: str, job_id: str) -> Response:
        j, _ = await job(pid, job_id)
        root = runner.executor.artifacts_dir(j["id"]) / "files"
        if not j["artifacts_files"] or not root.is_dir():
            raise NotFound("404 Not found")
        return Response(_zip(root), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="artifacts.zip"'})

    @r.post("/projects/{pid}/jobs/{job_id}/retry")
    async def retry_job(request: Request, pid: str, job_id: str) -> JSONResponse:
        j, p = await job(pid, job_id)
        new = await runner.retry_job(j["id"])
        return JSONResponse(shapes.job(new, p), status_code=201)

    @r.post("/projects/{pid}/jobs/{job_id}/cancel")
    async def cancel_job(pid: str, job_id: str) -> JSONResponse:
        j, p = await job(pid, job_id)
        out = await runner.cancel_job(j["id"])
        return JSONResponse(shapes.job(out, p), status_code=201)

    @r.post("/projects/{pid}/jobs/{job_id}/play")
    async def play_job(request: Request, pid: str, job_id: str) -> JSONResponse:
        j, p = await job(pid, job_id)
        body = await _json(request)
        out = await runner.play_job(j["id"], body.get("job_variables_attributes") or [])
        return JSONResponse(shapes.job(out, p), status_code=200)

    return r


def _zip(root: Any) -> bytes:
    buf = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
                if total > MAX_ARTIFACTS_ZIP:
                    raise TooLarge(f"artifacts larger than {MAX_ARTIFACTS_ZIP} bytes")
                z.write(path, path.relative_to(root).as_posix())
    return buf.getvalue()


def native_router(runner: PipelineRunner, base_url: str) -> APIRouter:
    """pitwall's own: run a repository's pipeline, read a pipeline with its jobs, a job's log from an offset."""
    r = error_router("native", prefix="/api/pipelines/v1", tags=["pipelines"])
    shapes = GitLabShapes(runner, base_url)

    @r.post("/runs")
    async def run(request: Request) -> JSONResponse:
        body = await _json(request)
        repo = body.get("repo")
        if not isinstance(repo, str) or not repo:
            raise BadData("repo (a path on the server) is required")
        ref = body.get("ref")
        if ref is not None and not isinstance(ref, str):
            raise BadData("ref must be a string")
        p = await runner.create(repo, ref, body.get("variables") or [], source="web", user=_who(request))
        return JSONResponse(await _with_jobs(runner, shapes, p), status_code=201)

    @r.get("/pipelines/{pipeline_id}")
    async def get(pipeline_id: str) -> JSONResponse:
        p = await runner.store.pipeline(_int(pipeline_id, "Pipeline"))
        if p is None:
            raise NotFound("pipeline not found")
        return JSONResponse(await _with_jobs(runner, shapes, p))

    @r.get("/jobs/{job_id}/trace")
    async def trace(request: Request, job_id: str) -> Response:
        j = await runner.store.job(_int(job_id, "Job"))
        if j is None:
            raise NotFound("job not found")
        try:
            offset = max(0, int(request.query_params.get("offset", "0")))
        except ValueError:
            raise BadData("offset must be an integer") from None
        data = runner.trace(j["id"], offset, 1 << 20)
        return Response(data, media_type="text/plain", headers={
            "X-Next-Offset": str(offset + len(data)), "X-Job-Status": j["status"]})

    return r


async def _with_jobs(runner: PipelineRunner, shapes: GitLabShapes, p: dict[str, Any]) -> dict[str, Any]:
    jobs = latest_jobs(await runner.store.jobs(p["id"]))
    return {**shapes.pipeline(p), "jobs": [runner.job_summary(j) for j in jobs]}
