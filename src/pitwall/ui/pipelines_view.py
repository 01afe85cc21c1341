"""What the pipelines pages show: projects, recent pipelines, one pipeline's stage/needs graph, DORA figures.

``PipelinesSource`` is the UI's interface onto the pipelines pillar (reads, and the actions the GitLab-shaped
API offers: run, retry, cancel, play); ``RunnerPipelines`` implements it over ``pitwall.pipelines``'
``PipelineRunner``, so a pipeline run from the UI takes the same code as ``POST /projects/:id/pipeline``.
Everything else here is pure functions from the stored pipeline and job dicts to template rows, unit tested
without a server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

from pitwall.core.durations import parse_duration_ms, short_age
from pitwall.core.errors import BadData
from pitwall.pipelines import PipelineRunner
from pitwall.ui.objects import quote

__all__ = [
    "ACTIVE_STATUSES",
    "DORA_SERIES",
    "STATUS_TEXT",
    "DoraRow",
    "JobCell",
    "PipelineRow",
    "PipelinesSource",
    "RunnerPipelines",
    "StageColumn",
    "default_job",
    "dora_chart_expr",
    "dora_row",
    "dora_targets",
    "fmt_seconds",
    "graph_layout",
    "job_log_query",
    "latest",
    "logs_link",
    "parse_variables",
    "parse_window",
    "pipeline_row",
    "stage_graph",
]

Obj = dict[str, Any]
MAX_FORM_VARIABLES = 50
MAX_WINDOW_MS = 366 * 86400 * 1000
# GitLab's names of the statuses as its pipeline pages print them (``detailed_status.text``).
STATUS_TEXT = {"success": "passed", "failed": "failed", "running": "running", "pending": "pending",
               "canceled": "canceled", "skipped": "skipped", "manual": "manual", "created": "created",
               "scheduled": "delayed", "waiting_for_resource": "waiting", "preparing": "preparing"}
ACTIVE_STATUSES = frozenset({"created", "pending", "running", "preparing", "waiting_for_resource", "scheduled"})
LOG_JOB = "pitwall-pipelines"  # the ``job`` label the pipelines pillar gives its job logs
# The DORA series the pipelines pillar appends (``pitwall_dora_<key>{project, environment, window}``).
DORA_SERIES = (("deployment_frequency_per_day", "Deployment frequency", "per day"),
               ("lead_time_seconds", "Lead time for changes", "seconds"),
               ("change_failure_rate", "Change failure rate", "ratio"),
               ("time_to_restore_seconds", "Time to restore service", "seconds"))


class PipelinesSource(Protocol):
    """Reads and actions of the pipelines pages; pipelines and jobs are the pillar's stored dicts."""

    async def projects(self) -> list[Obj]:
        """Every project (a repository pipelines ran for)."""
        ...

    async def pipelines(self) -> list[Obj]:
        """Every pipeline, oldest first."""
        ...

    async def pipeline(self, pipeline_id: int) -> Obj | None:
        """One pipeline, or None."""
        ...

    async def jobs(self, pipeline_id: int) -> list[Obj]:
        """Every job of a pipeline, retried ones included, in id order."""
        ...

    async def job(self, job_id: int) -> Obj | None:
        """One job, or None."""
        ...

    async def deployments(self) -> list[Obj]:
        """Every recorded deployment (GitLab's deployments of environments)."""
        ...

    async def dora(self, project_id: int | None, environment: str, window_s: float) -> Obj:
        """DORA's four keys for ``environment`` over the last ``window_s`` seconds."""
        ...

    def trace(self, job_id: int, limit: int) -> bytes:
        """The last ``limit`` bytes of a job's log file (when the log store is not available)."""
        ...

    async def run(self, project_id: int, ref: str, variables: list[Obj], user: str) -> Obj:
        """A new pipeline of the project's repository for ``ref``; ``BadData`` for a bad ref/definition."""
        ...

    async def act(self, action: str, pipeline_id: int, job_id: int | None = None) -> None:
        """``retry``/``cancel`` the pipeline, or ``retry``/``cancel``/``play`` one job of it."""
        ...


class RunnerPipelines:
    """``PipelinesSource`` over the pillar's ``PipelineRunner`` (the same calls its GitLab API makes)."""

    def __init__(self, runner: PipelineRunner) -> None:
        self.runner = runner

    async def projects(self) -> list[Obj]:
        return await self.runner.store.projects()

    async def pipelines(self) -> list[Obj]:
        return await self.runner.store.pipelines()

    async def pipeline(self, pipeline_id: int) -> Obj | None:
        return await self.runner.store.pipeline(pipeline_id)

    async def jobs(self, pipeline_id: int) -> list[Obj]:
        return await self.runner.store.jobs(pipeline_id)

    async def job(self, job_id: int) -> Obj | None:
        return await self.runner.store.job(job_id)

    async def deployments(self) -> list[Obj]:
        return await self.runner.deployments.deployments()

    async def dora(self, project_id: int | None, environment: str, window_s: float) -> Obj:
        return await self.runner.dora_figures(project_id, environment, time.time(), window_s)

    def trace(self, job_id: int, limit: int) -> bytes:
        path = self.runner.executor.trace_path(job_id)
        size = path.stat().st_size if path.exists() else 0
        return self.runner.trace(job_id, max(0, size - limit), limit)

    async def run(self, project_id: int, ref: str, variables: list[Obj], user: str) -> Obj:
        proj = await self.runner.store.project(project_id)
        if proj is None:
            raise BadData(f"project {project_id} does not exist")
        return await self.runner.create(proj["repo"], ref or None, variables, source="web", user=user)

    async def act(self, action: str, pipeline_id: int, job_id: int | None = None) -> None:
        r = self.runner
        if job_id is None:
            await {"retry": r.retry_pipeline, "cancel": r.cancel_pipeline}[action](pipeline_id)
        elif action == "play":
            await r.play_job(job_id, [])
        else:
            await {"retry": r.retry_job, "cancel": r.cancel_job}[action](job_id)


def fmt_seconds(s: float | None) -> str:
    """A duration as GitLab prints job durations: ``42s``, ``3m 5s``, ``1h 2m``; ``—`` when unknown."""
    if s is None:
        return "—"
    n = round(s)
    if n < 60:
        return f"{n}s"
    if n < 3600:
        return f"{n // 60}m {n % 60}s"
    if n < 86400:
        return f"{n // 3600}h {n % 3600 // 60}m"
    return f"{n // 86400}d {n % 86400 // 3600}h"


def _elapsed(start: float | None, end: float | None, now: float) -> float | None:
    if start is None:
        return None
    return max(0.0, float(end or now) - float(start))


def latest(jobs: list[Obj]) -> list[Obj]:
    """The current job of each name (a retry supersedes the job it retried), in id order."""
    by_name: dict[str, Obj] = {}
    for j in sorted(jobs, key=lambda j: j["id"]):
        by_name[j["name"]] = j
    return sorted(by_name.values(), key=lambda j: j["id"])


@dataclass(frozen=True)
class PipelineRow:
    """A pipeline as GitLab's pipelines list shows it."""

    id: int
    iid: int
    project_id: int
    project: str
    status: str
    status_text: str
    ref: str
    sha: str
    title: str
    duration: str
    trigger: str  # the source (push, web, api, schedule, ...) and who
    age: str
    active: bool


def pipeline_row(p: Obj, project: str, now: float | None = None) -> PipelineRow:
    """The row of pipeline ``p`` of project ``project`` (its name)."""
    t = time.time() if now is None else now
    who = p.get("user") or ""
    return PipelineRow(
        id=int(p["id"]), iid=int(p.get("iid") or 0), project_id=int(p["project_id"]), project=project,
        status=str(p["status"]), status_text=STATUS_TEXT.get(str(p["status"]), str(p["status"])), ref=str(p.get("ref", "")),
        sha=str(p.get("sha", ""))[:8], title=str(p.get("commit_message", "")).split("\n", 1)[0][:120],
        duration=fmt_seconds(_elapsed(p.get("started_at"), p.get("finished_at"), t)),
        trigger=str(p.get("source", "")) + (f" by {who}" if who else ""),
        age=short_age(t - float(p.get("created_at") or t)), active=p["status"] in ACTIVE_STATUSES)


@dataclass(frozen=True)
class JobCell:
    """One job in the stage graph."""

    id: int
    name: str
    stage: str
    status: str
    status_text: str
    duration: str
    allow_failure: bool
    when: str
    needs: list[str]
    failure_reason: str
    attempts: int  # runs of this name (retries included)
    can_retry: bool
    can_cancel: bool
    can_play: bool
    environment: str


@dataclass(frozen=True)
class StageColumn:
    """A stage and its jobs, in the order GitLab draws them (stages left to right)."""

    name: str
    status: str
    status_text: str
    jobs: list[JobCell] = field(default_factory=list)


def _stage_status(jobs: list[Obj]) -> str:
    """A stage's status from its jobs, the main cases of GitLab's composite status."""
    seen = {("success" if j["status"] == "failed" and j.get("allow_failure") else j["status"]) for j in jobs}
    for st in ("failed", "running", "pending", "canceled", "manual", "scheduled", "created"):
        if st in seen:
            return st
    return "skipped" if seen == {"skipped"} else "success"


def stage_graph(p: Obj, jobs: list[Obj], now: float | None = None) -> list[StageColumn]:
    """The pipeline's stages as columns of their current jobs, each with the names it ``needs`` (the DAG edges
    drawn on the page); stages without jobs are left out, as GitLab does."""
    t = time.time() if now is None else now
    plan = {pj["name"]: pj for pj in (p.get("plan") or {}).get("jobs") or []}
    attempts: dict[str, int] = {}
    for j in jobs:
        attempts[j["name"]] = attempts.get(j["name"], 0) + 1
    cur = latest(jobs)
    stages = list((p.get("plan") or {}).get("stages") or [])
    for j in cur:
        if j["stage"] not in stages:
            stages.append(j["stage"])
    cols = []
    for stage in stages:
        mine = sorted((j for j in cur if j["stage"] == stage), key=lambda j: j["name"])
        if not mine:
            continue
        cells = []
        for j in mine:
            pj = plan.get(j["name"]) or {}
            st = str(j["status"])
            cells.append(JobCell(
                id=int(j["id"]), name=str(j["name"]), stage=stage, status=st, status_text=STATUS_TEXT.get(st, st),
                duration=fmt_seconds(_elapsed(j.get("started_at"), j.get("finished_at"), t)),
                allow_failure=bool(j.get("allow_failure")), when=str(j.get("when") or pj.get("when") or ""),
                needs=[str(n[0]) for n in pj.get("needs") or []], failure_reason=str(j.get("failure_reason") or ""),
                attempts=attempts.get(j["name"], 1), can_retry=st in ("success", "failed", "canceled"),
                can_cancel=st in ACTIVE_STATUSES, can_play=st == "manual",
                environment=str(j.get("environment_name") or (j.get("environment") or {}).get("name") or "")))
        status = _stage_status(mine)
        cols.append(StageColumn(stage, status, STATUS_TEXT.get(status, status), cells))
    return cols


def default_job(cols: list[StageColumn]) -> JobCell | None:
    """The job whose log the page opens with: a running one, else the first failed one, else the last that ran."""
    cells = [c for col in cols for c in col.jobs]
    for want in ("running", "failed"):
        hit = next((c for c in cells if c.status == want), None)
        if hit is not None:
            return hit
    ran = [c for c in cells if c.duration != "—"]
    return ran[-1] if ran else (cells[0] if cells else None)


def job_log_query(pipeline_id: int, job_name: str) -> str:
    """The LogQL selector of a job's log as the pipelines pillar stores it (``job``, ``pipeline``,
    ``job_name`` and ``project`` labels)."""
    return f'{{job="{LOG_JOB}",pipeline="{pipeline_id}",job_name="{quote(job_name)}"}}'


def logs_link(pipeline_id: int, job_name: str) -> str:
    """The logs explorer on a job's log."""
    return "/logs?" + urlencode({"query": job_log_query(pipeline_id, job_name), "from": "now-7d"})


def parse_variables(keys: list[str], values: list[str]) -> list[Obj]:
    """The "Run pipeline" form's variable rows as GitLab's API takes them (rows with an empty key are unused
    rows and skipped); the runner checks names and sizes as for its API."""
    if len(keys) > MAX_FORM_VARIABLES:
        raise BadData(f"at most {MAX_FORM_VARIABLES} variables")
    out = []
    for k, v in zip(keys, values, strict=False):
        k = k.strip()
        if k:
            out.append({"key": k, "value": v, "variable_type": "env_var"})
    return out


@dataclass(frozen=True)
class DoraRow:
    """The four keys of one project and environment, formatted."""

    project_id: int
    project: str
    environment: str
    deployments: int
    changes: int
    failed_changes: int
    frequency: str
    lead_time: str
    failure_rate: str
    restore: str


def dora_targets(deployments: list[Obj], projects: dict[int, str]) -> list[tuple[int, str, str]]:
    """``(project_id, project name, environment)`` of every environment deployments went to, sorted."""
    seen = {(int(d["project_id"]), projects.get(int(d["project_id"]), str(d.get("project") or d["project_id"])),
             str(d["environment"])) for d in deployments if d.get("environment")}
    return sorted(seen, key=lambda t: (t[1], t[2]))


def dora_row(f: Obj, project_id: int, project: str) -> DoraRow:
    """``pipelines.dora.dora_figures``' answer as a table row."""
    rate = f.get("change_failure_rate")
    return DoraRow(
        project_id=project_id, project=project, environment=str(f["environment"]),
        deployments=int(f["deployments"]), changes=int(f["changes"]), failed_changes=int(f["failed_changes"]),
        frequency=f"{float(f['deployment_frequency_per_day']):.2f}/day",
        lead_time=fmt_seconds(f.get("lead_time_seconds")),
        failure_rate="—" if rate is None else f"{float(rate) * 100:.1f}%",
        restore=fmt_seconds(f.get("time_to_restore_seconds")))


def parse_window(text: str) -> float:
    """Seconds of a DORA window (``7d``, ``30d``, ``12w``: Prometheus' durations), more than 0 and at most
    366 days as the pipelines API takes them; ``BadData`` otherwise."""
    try:
        ms = parse_duration_ms(text.strip()[:40])
    except ValueError as e:
        raise BadData(f"window: {e}") from None
    if not 0 < ms <= MAX_WINDOW_MS:
        raise BadData(f"window {text[:20]!r} must be more than 0 and at most 366d")
    return ms / 1000


def dora_chart_expr(key: str, project: str, environment: str) -> str:
    """PromQL of one DORA series of a project's environment. The pillar appends the figures when a deployment
    ends and every sweep (10 minutes), so each step takes the last value of the 15 minutes before it."""
    return f'last_over_time(pitwall_dora_{key}{{project="{quote(project)}",environment="{quote(environment)}"}}[15m])'


# The graph's geometry (px): stage columns left to right, jobs top to bottom; the template places the boxes and
# draws the needs edges in one SVG with the same numbers, so no script lays anything out.
COL_W, COL_GAP, BOX_H, BOX_GAP, HEAD_H = 200, 56, 40, 10, 30


@dataclass(frozen=True)
class GraphBox:
    cell: JobCell
    x: int
    y: int


@dataclass(frozen=True)
class GraphEdge:
    need: str
    job: str
    path: str  # an SVG path from the need's right edge to the job's left edge


@dataclass(frozen=True)
class GraphLayout:
    width: int
    height: int
    heads: list[tuple[StageColumn, int]]
    boxes: list[GraphBox]
    edges: list[GraphEdge]


def graph_layout(cols: list[StageColumn]) -> GraphLayout:
    """Where each stage header and job box goes, and the ``needs`` edges between boxes as SVG paths."""
    heads, boxes = [], []
    where: dict[str, tuple[int, int]] = {}
    for i, col in enumerate(cols):
        x = i * (COL_W + COL_GAP)
        heads.append((col, x))
        for k, cell in enumerate(col.jobs):
            y = HEAD_H + k * (BOX_H + BOX_GAP)
            boxes.append(GraphBox(cell, x, y))
            where[cell.name] = (x, y)
    edges = []
    for b in boxes:
        for need in b.cell.needs:
            if need not in where:
                continue
            nx, ny = where[need]
            x1, y1, x2, y2 = nx + COL_W, ny + BOX_H // 2, b.x, b.y + BOX_H // 2
            bend = max(24, abs(x2 - x1) // 2)
            edges.append(GraphEdge(need, b.cell.name,
                                   f"M{x1} {y1} C{x1 + bend} {y1} {x2 - bend} {y2} {x2} {y2}"))
    rows = max((len(c.jobs) for c in cols), default=0)
    return GraphLayout(width=max(COL_W, len(cols) * (COL_W + COL_GAP) - COL_GAP),
                       height=HEAD_H + rows * (BOX_H + BOX_GAP), heads=heads, boxes=boxes, edges=edges)
