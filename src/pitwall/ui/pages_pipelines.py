"""The pipelines pages: ``/pipelines`` (projects, recent pipelines, the "Run pipeline" form),
``/pipelines/{project}/{id}`` (the stage/needs graph, each job's status and duration, a job's log tailing
live, retry/cancel/play), ``/pipelines/dora`` (DORA's four keys per project and environment, with their
series as charts).

They read through ``UIDeps.pipelines`` (a ``PipelinesSource``); without it they say the pipelines pillar is
not available. Pipelines belong to the whole server (their API is server-wide), so the pages are too.
Actions are POST forms (CSRF field, the write scope when auth is on) answered with a redirect (303).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from pitwall.core.body import read_form
from pitwall.core.errors import BadData, NotFound, PitwallError
from pitwall.core.params import tenant_of
from pitwall.core.tenancy import PRINCIPAL_KEY
from pitwall.core.tenancy import server_wide as whole_server
from pitwall.ui.logs_view import LogLine, to_line
from pitwall.ui.pipelines_view import (
    ACTIVE_STATUSES,
    DORA_SERIES,
    STATUS_TEXT,
    default_job,
    dora_chart_expr,
    dora_row,
    dora_targets,
    graph_layout,
    job_log_query,
    logs_link,
    parse_variables,
    parse_window,
    pipeline_row,
    stage_graph,
)
from pitwall.ui.timerange import TimeRange
from pitwall.ui.web import Pages, call, int_param

__all__ = ["add_routes"]

Obj = dict[str, Any]
MAX_LOG_LINES = 2000
MAX_TRACE_BYTES = 256 << 10
MAX_LIST = 200  # pipelines one page lists


def _id(v: str, what: str) -> int:
    if not v.isdigit() or not 0 < int(v) < 1 << 62:
        raise NotFound(f"{what} {v[:40]!r} not found")
    return int(v)


def _who(request: Request) -> str:
    return str(getattr(request.scope.get(PRINCIPAL_KEY), "name", "") or "anonymous")


def add_routes(r: APIRouter, pages: Pages) -> None:
    deps = pages.deps
    server_wide = [Depends(whole_server)]

    async def names() -> dict[int, str]:
        assert deps.pipelines is not None
        return {int(p["id"]): str(p["name"]) for p in await deps.pipelines.projects()}

    async def index(request: Request, problem: str = "", status: int = 200, form: Obj | None = None) -> Response:
        tr, err = pages.range_or_error(request)
        src = deps.pipelines
        if src is None:
            return pages.render(request, "pipelines.html", "pipelines", tr, error=err, available=False)
        projects = await src.projects()
        by_id = {int(p["id"]): str(p["name"]) for p in projects}
        only = request.query_params.get("project", "")
        ps = [p for p in await src.pipelines() if not only or str(p["project_id"]) == only]
        now = time.time()
        rows = [pipeline_row(p, by_id.get(int(p["project_id"]), "?"), now) for p in reversed(ps[-MAX_LIST:])]
        last: dict[int, Any] = {}
        counts: dict[int, int] = {}
        for p in await src.pipelines() if only else ps:
            last[int(p["project_id"])] = p
            counts[int(p["project_id"])] = counts.get(int(p["project_id"]), 0) + 1
        summary = [{"id": int(p["id"]), "name": str(p["name"]), "repo": str(p.get("repo", "")),
                    "count": counts.get(int(p["id"]), 0),
                    "last": pipeline_row(last[int(p["id"])], str(p["name"]), now) if int(p["id"]) in last else None}
                   for p in projects]
        return pages.render(request, "pipelines.html", "pipelines", tr, error=err, available=True, status=status,
                            projects=summary, pipelines=rows, project=only, problem=problem,
                            form=form or {"project": only, "ref": "", "vars": []})

    @r.get("/pipelines", response_class=HTMLResponse, dependencies=server_wide)
    async def pipelines(request: Request) -> Response:
        return await index(request)

    @r.post("/pipelines/run", response_class=HTMLResponse, dependencies=server_wide)
    async def run(request: Request) -> Response:
        if deps.pipelines is None:
            return await index(request, "the pipelines pillar is not available", 503)
        form = await read_form(request)
        raw_project, ref = str(form.get("project", "")), str(form.get("ref", "")).strip()
        keys, values = [str(v) for v in form.getlist("var_key")], [str(v) for v in form.getlist("var_value")]
        kept = {"project": raw_project, "ref": ref, "vars": list(zip(keys, values, strict=False))}
        try:
            if not raw_project.isdigit():
                raise BadData("choose the project to run")
            p = await deps.pipelines.run(int(raw_project), ref, parse_variables(keys, values), _who(request))
        except PitwallError as e:
            return await index(request, e.message, 400, kept)
        return RedirectResponse(f"/pipelines/{p['project_id']}/{p['id']}", 303)

    @r.get("/pipelines/dora", response_class=HTMLResponse, dependencies=server_wide)
    async def dora(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        src = deps.pipelines
        window = request.query_params.get("window", "30d")
        ctx: Obj = {"window": window, "series": DORA_SERIES, "chart_expr": dora_chart_expr}
        if src is None:
            return pages.render(request, "pipelines_dora.html", "pipelines", tr, error=err, available=False, **ctx)
        try:
            window_s = parse_window(window)
        except PitwallError as e:
            return pages.render(request, "pipelines_dora.html", "pipelines", tr, error=e.message, available=True,
                                rows=[], status=400, **ctx)
        rows = []
        for pid, name, env in dora_targets(await src.deployments(), await names()):
            rows.append(dora_row(await src.dora(pid, env, window_s), pid, name))
        return pages.render(request, "pipelines_dora.html", "pipelines", tr, error=err, available=True, rows=rows,
                            **ctx)

    async def load(project: str, pipeline_id: str) -> tuple[Obj, str]:
        assert deps.pipelines is not None
        p = await deps.pipelines.pipeline(_id(pipeline_id, "pipeline"))
        if p is None or str(p["project_id"]) != project:
            raise NotFound(f"pipeline {project}/{pipeline_id} not found")
        return p, (await names()).get(int(p["project_id"]), "?")

    async def detail_ctx(request: Request, project: str, pipeline_id: str) -> Obj:
        assert deps.pipelines is not None
        p, name = await load(project, pipeline_id)
        now = time.time()
        cols = stage_graph(p, await deps.pipelines.jobs(p["id"]), now)
        want = request.query_params.get("job", "")
        cells = {str(c.id): c for col in cols for c in col.jobs}
        return {"p": pipeline_row(p, name, now), "pipeline": p, "cols": cols, "layout": graph_layout(cols),
                "selected": cells.get(want) or default_job(cols), "logs_link": logs_link,
                "variables": [(v["key"], "[MASKED]" if v.get("masked") else v["value"]) for v in p.get("variables")
                              or []]}

    @r.get("/pipelines/{project}/{pipeline_id}", response_class=HTMLResponse, dependencies=server_wide)
    async def detail(project: str, pipeline_id: str, request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        if deps.pipelines is None:
            return pages.render(request, "pipeline.html", "pipelines", tr, error=err, available=False,
                                title=f"{project}/{pipeline_id}")
        try:
            ctx = await detail_ctx(request, project, pipeline_id)
        except NotFound as e:
            return pages.render(request, "pipeline.html", "pipelines", tr, error=e.message, available=True,
                                status=404, p=None, title=f"{project}/{pipeline_id}")
        problem = request.query_params.get("problem", "")[:300]
        return pages.render(request, "pipeline.html", "pipelines", tr, error=err, available=True, problem=problem,
                            title=f"#{pipeline_id}", **ctx)

    @r.get("/ui/fragment/pipelines/{project}/{pipeline_id}/graph", response_class=HTMLResponse,
           dependencies=server_wide)
    async def graph_fragment(project: str, pipeline_id: str, request: Request) -> Response:
        """The graph and jobs table again (the page polls it while the pipeline runs)."""
        if deps.pipelines is None:
            raise NotFound("the pipelines pillar is not available")
        return pages.render(request, "_pipeline_graph.html", "pipelines", None,
                            **await detail_ctx(request, project, pipeline_id))

    @r.get("/ui/fragment/pipelines/jobs/{job_id}/log", response_class=HTMLResponse, dependencies=server_wide)
    async def job_log(job_id: str, request: Request) -> Response:
        """A job's log from the log store (its file when the log store is off); polled while the job runs."""
        if deps.pipelines is None:
            raise NotFound("the pipelines pillar is not available")
        j = await deps.pipelines.job(_id(job_id, "job"))
        if j is None:
            raise NotFound(f"job {job_id} not found")
        limit = int_param(request, "limit", 500, 10, MAX_LOG_LINES)
        lines, source = await _job_lines(j, limit, request)
        return pages.render(request, "_job_log.html", "pipelines", None, job=j, lines=lines, source=source,
                            active=j["status"] in ACTIVE_STATUSES, limit=limit, status_text=STATUS_TEXT)

    async def _job_lines(j: Obj, limit: int, request: Request) -> tuple[list[LogLine], str]:
        assert deps.pipelines is not None
        if deps.logs is None:
            text = deps.pipelines.trace(int(j["id"]), MAX_TRACE_BYTES).decode("utf-8", "replace")
            return [to_line(0, ln, {}) for ln in text.splitlines()[-limit:]], "file"
        start = float(j.get("started_at") or j.get("created_at") or time.time()) - 1
        end = float(j.get("finished_at") or time.time()) + 5
        tr = TimeRange("", "", "off", int(start * 1000), max(int(end * 1000), int(start * 1000) + 1000))
        res = await call(deps.logs.run, job_log_query(int(j["pipeline_id"]), str(j["name"])), tr, limit, 10,
                         tenant_of(request))
        return sorted(res.lines, key=lambda ln: ln.ts_ns), "log store"

    @r.post("/pipelines/{project}/{pipeline_id}/{action}", dependencies=server_wide)
    async def pipeline_action(project: str, pipeline_id: str, action: str, request: Request) -> Response:
        return await _act(project, pipeline_id, action, None)

    @r.post("/pipelines/{project}/{pipeline_id}/jobs/{job_id}/{action}", dependencies=server_wide)
    async def job_action(project: str, pipeline_id: str, job_id: str, action: str, request: Request) -> Response:
        return await _act(project, pipeline_id, action, job_id)

    async def _act(project: str, pipeline_id: str, action: str, job_id: str | None) -> Response:
        """Retry/cancel a pipeline, or retry/cancel/play a job of it; back to the pipeline's page (a refusal,
        such as retrying a pipeline with nothing failed, is shown there)."""
        if deps.pipelines is None:
            raise NotFound("the pipelines pillar is not available")
        allowed = ("retry", "cancel", "play") if job_id is not None else ("retry", "cancel")
        if action not in allowed:
            raise NotFound(f"no action {action[:20]!r}")
        p, _ = await load(project, pipeline_id)
        jid = None
        if job_id is not None:
            j = await deps.pipelines.job(_id(job_id, "job"))
            if j is None or j["pipeline_id"] != p["id"]:
                raise NotFound(f"job {job_id} of pipeline {pipeline_id} not found")
            jid = int(j["id"])
        back = f"/pipelines/{project}/{pipeline_id}"
        try:
            await deps.pipelines.act(action, int(p["id"]), jid)
        except PitwallError as e:
            return RedirectResponse(back + "?" + urlencode({"problem": e.message}), 303)
        return RedirectResponse(back + (f"?job={jid}" if action == "play" else ""), 303)
