"""Runs pipelines: creates them from a repository's ``.gitlab-ci.yml``, moves their jobs through GitLab's
statuses (stage order and ``needs``), runs them on a bounded pool with the shell executor, retries, cancels,
plays manual jobs, and recovers after a restart (jobs a dead server left running are failed: runner restarted).

All state is keys in the revisioned store (``store.PipelineStore``); one driver task per active pipeline
re-evaluates its jobs whenever one of them changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pitwall import __version__
from pitwall.core.errors import BadData, NotFound, Unavailable
from pitwall.incidents import ChangeEvent
from pitwall.pipelines.canary import CANARY_TIMEOUT_VAR, CANARY_VAR, KubeCanaryWaiter
from pitwall.pipelines.deployments import DeploymentStore
from pitwall.pipelines.deployments import slug as env_slug
from pitwall.pipelines.dora import Incident, dora_figures
from pitwall.pipelines.durations import parse_human_duration
from pitwall.pipelines.executor import Executor, JobResult, JobRun, Podman, expand
from pitwall.pipelines.gitrepo import Commit, GitRepo
from pitwall.pipelines.plan import Context, PlannedJob, PlannedPipeline, plan
from pitwall.pipelines.report import Reporter
from pitwall.pipelines.settings import PipelinesSettings
from pitwall.pipelines.spec import CI_FILE, load_config
from pitwall.pipelines.status import ACTIVE, COMPLETED, composite, next_status
from pitwall.pipelines.store import PipelineStore
from pitwall.pipelines.yamlload import SpecError
from pitwall.storage.revstore import RevStore

__all__ = ["PipelineRunner", "iso", "latest_jobs"]

log = logging.getLogger(__name__)
MAX_VARIABLES = 200
MAX_VAR_BYTES = 64 << 10
RESTARTED = "runner restarted"
ZERO_SHA = "0" * 40
SWEEP_INTERVAL_S = 600.0
RUNNER_TTL_S = 30.0  # a runner whose lease lapsed this long ago is dead: its pipelines are taken over
RUNNERS = "/pitwall/pipelines/runners/"
DORA_WINDOW_S = 30 * 86400.0


def iso(ts: float | None) -> str | None:
    """GitLab's timestamps: ISO 8601 in UTC with milliseconds."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def slug(text: str) -> str:
    """GitLab's ``*_SLUG``: lower case, non-alphanumerics to ``-``, at most 63 bytes, no leading/trailing ``-``."""
    return re.sub(r"[^a-z0-9]", "-", text.lower())[:63].strip("-")


def latest_jobs(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The current attempt of each job name (retried attempts left out), in id order."""
    return [j for j in jobs if not j.get("retried")]


class PipelineRunner:
    """The runner component: ``start`` recovers, ``stop`` kills what runs."""

    name = "pipelines-runner"

    def __init__(self, store: RevStore, root: Path, settings: PipelinesSettings, reporter: Reporter,
                 base_url: str = "") -> None:
        self.store = PipelineStore(store)
        self.deployments = DeploymentStore(self.store)
        self.incidents: Callable[[], Awaitable[list[Incident]]] | None = None  # DORA joins them when set
        self.canary_waiter: KubeCanaryWaiter | None = None  # set when the server has a Kubernetes API
        self.root = root
        self.settings = settings
        self.reporter = reporter
        self.base_url = base_url.rstrip("/")
        self.executor = Executor(root, max_log_bytes=settings.max_log_bytes,
                                 max_artifacts_bytes=settings.max_artifacts_bytes,
                                 podman=Podman(tuple(settings.podman), tuple(settings.podman_run_args),
                                               settings.image_fallback),
                                 wait_for_services_s=settings.wait_for_services_timeout / 1000)
        self.pool = asyncio.Semaphore(settings.concurrency)
        self._drivers: dict[int, asyncio.Task[None]] = {}
        self._wake: dict[int, asyncio.Event] = {}
        self._running: dict[int, asyncio.Event] = {}  # job id -> cancel
        self._tasks: set[asyncio.Task[Any]] = set()
        self._locks: dict[int, asyncio.Lock] = {}
        self._groups: dict[str, asyncio.Lock] = {}
        self._stopping = False
        # stable across restarts of one server (one data directory), distinct between servers sharing an etcd
        self.runner_id = f"{socket.gethostname()}:{root.resolve()}"
        self._lease = 0

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Announce this runner (a key on a lease), fail the jobs dead runners left running and drive their
        unfinished pipelines on; pipelines of live runners (servers sharing an etcd) are left to them."""
        self._lease = await self.store.store.grant(RUNNER_TTL_S)
        await self.store.store.put(RUNNERS + self.runner_id, b"", lease=self._lease)
        keeper = asyncio.create_task(self._keepalive(), name="pipelines-runner-lease")
        self._tasks.add(keeper)
        keeper.add_done_callback(self._tasks.discard)
        await self._recover()
        t = asyncio.create_task(self._sweep_loop(), name="pipelines-artifact-sweep")
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _recover(self) -> None:
        """Take over unfinished pipelines whose runner is gone (this server before a restart, or a dead peer)."""
        for p in await self.store.pipelines():
            if p["status"] in COMPLETED or p["id"] in self._drivers or await self._owner_alive(p):
                continue
            if p.get("runner") == self.runner_id and self._drivers:
                continue  # ours and this process is up: nothing was lost
            p["runner"] = self.runner_id
            await self.store.put_pipeline(p)
            for j in await self.store.jobs(p["id"]):
                if j["status"] in ACTIVE:
                    self.executor.kill_leftovers(j["id"])  # what this server ran before a crash
                    if _planned(p, j["name"]).image or _planned(p, j["name"]).services:
                        await self.executor.remove_containers(j["id"])
                    j.update(status="failed", failure_reason="runner_system_failure", finished_at=time.time())
                    await self.store.put_job(j)
                    with contextlib.suppress(OSError), self.executor.trace_path(j["id"]).open("a") as f:
                        f.write(f"ERROR: Job failed: {RESTARTED}\n")
            self.kick(p["id"])

    async def _keepalive(self) -> None:
        while not self._stopping:
            await asyncio.sleep(RUNNER_TTL_S / 3)
            try:
                await self.store.store.keepalive(self._lease)
            except Exception as e:  # a lapsed lease: announce again (our pipelines may have been taken over)
                log.warning("pipelines runner lease lost: %s", e)
                with contextlib.suppress(Exception):
                    self._lease = await self.store.store.grant(RUNNER_TTL_S)
                    await self.store.store.put(RUNNERS + self.runner_id, b"", lease=self._lease)

    async def _owner_alive(self, p: dict[str, Any]) -> bool:
        """Whether another live runner drives ``p``."""
        owner = p.get("runner")
        if not owner or owner == self.runner_id:
            return False
        return await self.store.store.get(RUNNERS + owner) is not None

    async def _sweep_loop(self) -> None:
        while not self._stopping:
            try:
                await self.sweep_artifacts(time.time())
                await self.stop_expired_environments(time.time())
                await self._dora_sweep(time.time())
                await self._recover()
            except Exception:
                log.exception("artifact sweep failed")
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def sweep_artifacts(self, now: float) -> int:
        """Delete the artifacts of finished pipelines' jobs past their expiry; returns how many jobs'."""
        removed = 0
        for p in await self.store.pipelines():
            if p["status"] not in COMPLETED and p["status"] != "manual":
                continue
            for j in await self.store.jobs(p["id"]):
                exp = j.get("artifacts_expire_at")
                if exp is not None and exp <= now and j["artifacts_files"]:
                    await asyncio.to_thread(shutil.rmtree, self.executor.artifacts_dir(j["id"]) / "files", True)
                    j.update(artifacts_files=0, artifacts_size=0)
                    await self.store.put_job(j)
                    removed += 1
        return removed

    async def stop(self) -> None:
        self._stopping = True
        for ev in list(self._running.values()):
            ev.set()
        tasks = [*self._drivers.values(), *self._tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._lease:
            with contextlib.suppress(Exception):
                await self.store.store.revoke(self._lease)

    # ------------------------------------------------------------ creating

    async def create(self, repo: str, ref: str | None, variables: list[dict[str, Any]], *, source: str = "api",
                     user: str = "", before_sha: str = ZERO_SHA, schedule_id: int | None = None) -> dict[str, Any]:
        """A new pipeline for ``ref`` of the repository at ``repo``; ``BadData`` for a definition GitLab's
        lint would reject (nothing is stored then)."""
        uvars = _check_variables(variables)
        path = Path(repo).expanduser().resolve()
        commit = await GitRepo(path).commit(ref)
        project = await self.store.project_for_path(str(path))
        pid = await self.store.next_id("pipeline")
        iid = await self.store.next_id(f"iid-{project['id']}")
        now = time.time()
        predefined = self._pipeline_vars(project, commit, pid, iid, source, now, path)
        predefined["CI_COMMIT_BEFORE_SHA"] = before_sha
        user_env = {v["key"]: v["value"] for v in uvars}
        try:
            planned = await asyncio.to_thread(_load_and_plan, path, commit, source, {**predefined, **user_env},
                                              before_sha)
        except SpecError as e:
            raise BadData(str(e)) from None
        p = {"id": pid, "iid": iid, "project_id": project["id"], "sha": commit.sha, "ref": commit.ref,
             "tag": commit.is_tag, "source": source, "status": "created", "created_at": now, "updated_at": now,
             "started_at": None, "finished_at": None, "before_sha": before_sha, "name": planned.name or None,
             "schedule_id": schedule_id,
             "user": user, "runner": self.runner_id, "variables": uvars, "predefined": predefined, "commit_message": commit.message,
             "commit_author": commit.author, "commit_timestamp": commit.timestamp,
             "plan": {"stages": planned.stages, "variables": planned.variables,
                      "auto_cancel_on_new_commit": planned.auto_cancel_on_new_commit,
                      "auto_cancel_on_job_failure": planned.auto_cancel_on_job_failure,
                      "jobs": [j.to_dict() for j in planned.jobs]}}
        await self.store.put_pipeline(p)
        for pj in planned.jobs:
            await self._new_job(p, pj, now)
        await self._auto_cancel(p)
        self.kick(pid)
        return p

    def _pipeline_vars(self, project: dict[str, Any], c: Commit, pid: int, iid: int, source: str, now: float,
                       path: Path) -> dict[str, str]:
        url = self.base_url or "http://pitwall"
        proj_url = f"{url}/{project['path_with_namespace']}"
        title = c.message.split("\n", 1)[0]
        out = {"CI": "true", "GITLAB_CI": "true", "CI_SERVER": "yes", "CI_SERVER_NAME": "pitwall",
               "CI_SERVER_VERSION": __version__, "CI_SERVER_URL": url, "CI_API_V4_URL": f"{url}/gitlab/api/v4",
               "CI_PIPELINE_ID": str(pid), "CI_PIPELINE_IID": str(iid), "CI_PIPELINE_SOURCE": source,
               "CI_PIPELINE_CREATED_AT": iso(now) or "", "CI_PIPELINE_URL": f"{proj_url}/-/pipelines/{pid}",
               "CI_COMMIT_SHA": c.sha, "CI_COMMIT_SHORT_SHA": c.sha[:8], "CI_COMMIT_BEFORE_SHA": ZERO_SHA,
               "CI_COMMIT_REF_NAME": c.ref, "CI_COMMIT_REF_SLUG": slug(c.ref), "CI_COMMIT_MESSAGE": c.message,
               "CI_COMMIT_TITLE": title, "CI_COMMIT_DESCRIPTION": c.message[len(title):].strip(),
               "CI_COMMIT_AUTHOR": c.author, "CI_COMMIT_TIMESTAMP": c.timestamp,
               "CI_DEFAULT_BRANCH": c.default_branch, "CI_PROJECT_ID": str(project["id"]),
               "CI_PROJECT_NAME": project["name"], "CI_PROJECT_TITLE": project["name"],
               "CI_PROJECT_PATH": project["path_with_namespace"],
               "CI_PROJECT_PATH_SLUG": slug(project["path_with_namespace"]), "CI_PROJECT_NAMESPACE": "pitwall",
               "CI_PROJECT_URL": proj_url, "CI_CONFIG_PATH": CI_FILE, "CI_PROJECT_REPOSITORY": str(path)}
        out["CI_COMMIT_TAG" if c.is_tag else "CI_COMMIT_BRANCH"] = c.ref
        return out

    async def _new_job(self, p: dict[str, Any], pj: PlannedJob, now: float, attempt: int = 1) -> dict[str, Any]:
        jid = await self.store.next_id("job")
        j = {"id": jid, "pipeline_id": p["id"], "project_id": p["project_id"], "name": pj.name, "stage": pj.stage,
             "stage_idx": pj.stage_idx, "status": "created", "allow_failure": pj.allow_failure, "when": pj.when,
             "created_at": now, "queued_at": None, "started_at": None, "finished_at": None, "failure_reason": None,
             "retried": False, "exit_code": None, "attempt": attempt, "artifacts_size": 0, "artifacts_files": 0,
             "artifacts_expire_at": None, "junit": False, "tag_list": pj.tags, "user": p.get("user", ""),
             "environment": pj.environment}
        await self.store.put_job(j, new=True)
        if pj.environment:  # GitLab records the deployment (created) with the job
            env, _ = self._job_env(p, j, pj)
            j["environment_name"] = env["CI_ENVIRONMENT_NAME"]
            if pj.environment.get("action", "start") == "start":
                d = await self.deployments.create(p, j, j["environment_name"], now, project=env["CI_PROJECT_NAME"])
                j["deployment_id"] = d["id"]
            await self.store.put_job(j)
        return j

    async def _auto_cancel(self, p: dict[str, Any]) -> None:
        """A newer pipeline on the same ref cancels older ones (``workflow:auto_cancel:on_new_commit``):
        ``conservative`` cancels a whole pipeline while every job that has started is interruptible,
        ``interruptible`` cancels only its interruptible jobs, ``none`` nothing."""
        mode = p["plan"]["auto_cancel_on_new_commit"]
        if mode == "none":
            return
        for old in await self.store.pipelines():
            if old["id"] >= p["id"] or old["project_id"] != p["project_id"] or old["ref"] != p["ref"] \
                    or old["status"] in COMPLETED:
                continue
            jobs = latest_jobs(await self.store.jobs(old["id"]))
            interruptible = {pj["name"]: pj["interruptible"] for pj in old["plan"]["jobs"]}
            if mode == "conservative":
                if not all(interruptible[j["name"]] for j in jobs if j["started_at"] is not None):
                    continue
                doomed = [j for j in jobs if j["status"] not in COMPLETED]
            else:
                doomed = [j for j in jobs if interruptible[j["name"]] and j["status"] not in COMPLETED]
            async with self._lock(old["id"]):
                for j in doomed:
                    await self._cancel_job(j)
            self.kick(old["id"])

    # ------------------------------------------------------------ actions

    async def retry_pipeline(self, pid: int) -> dict[str, Any]:
        """Retry the failed and canceled jobs; the jobs they skipped go back to created."""
        p = await self._own(await self._pipeline(pid))
        async with self._lock(pid):
            jobs = latest_jobs(await self.store.jobs(pid))
            retried = [j for j in jobs if j["status"] in ("failed", "canceled")]
            if not retried:
                raise BadData("The pipeline has no failed or canceled jobs to retry")
            for j in retried:
                await self._clone_job(p, j)
            await self._reset_skipped(p, {j["stage_idx"] for j in retried})
            p.update(status="running", finished_at=None, updated_at=time.time())
            await self.store.put_pipeline(p)
        self.kick(pid)
        return p

    async def cancel_pipeline(self, pid: int) -> dict[str, Any]:
        await self._own(await self._pipeline(pid))
        async with self._lock(pid):
            for j in latest_jobs(await self.store.jobs(pid)):
                if j["status"] not in COMPLETED:
                    await self._cancel_job(j)
        self.kick(pid)
        return await self._pipeline(pid)

    async def retry_job(self, job_id: int) -> dict[str, Any]:
        j = await self._job(job_id)
        if j["status"] not in COMPLETED or j.get("retried"):
            raise BadData(f"Job is not retryable (status {j['status']})")
        p = await self._own(await self._pipeline(j["pipeline_id"]))
        async with self._lock(p["id"]):
            new = await self._clone_job(p, j)
            await self._reset_skipped(p, {j["stage_idx"]})
        self.kick(p["id"])
        return new

    async def cancel_job(self, job_id: int) -> dict[str, Any]:
        j = await self._job(job_id)
        if j["status"] in COMPLETED:
            return j
        await self._own(await self._pipeline(j["pipeline_id"]))
        async with self._lock(j["pipeline_id"]):
            await self._cancel_job(j)
        self.kick(j["pipeline_id"])
        return await self._job(job_id)

    async def play_job(self, job_id: int, variables: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        j = await self._job(job_id)
        if j["status"] != "manual":
            raise BadData(f"Unplayable Job (status {j['status']})")
        await self._own(await self._pipeline(j["pipeline_id"]))
        async with self._lock(j["pipeline_id"]):
            j.update(status="pending", queued_at=time.time(), manual_variables=_check_variables(variables or []))
            await self.store.put_job(j)
        self.kick(j["pipeline_id"])
        return j

    async def _own(self, p: dict[str, Any]) -> dict[str, Any]:
        """``p``, driven from now on by this runner; ``Unavailable`` while another live runner drives it
        (its processes run on that server)."""
        if await self._owner_alive(p):
            raise Unavailable(f"pipeline {p['id']} is run by {p['runner']}; send the request to that server")
        if p.get("runner") != self.runner_id:
            p["runner"] = self.runner_id
            await self.store.put_pipeline(p)
        return p

    async def _cancel_job(self, j: dict[str, Any]) -> None:
        ev = self._running.get(j["id"])
        if ev is not None:
            ev.set()  # the job's task records the verdict when its process group is gone
            return
        j.update(status="canceled", finished_at=time.time())
        await self.store.put_job(j)
        if j.get("deployment_id"):
            await self.deployments.finish(j["deployment_id"], "canceled", j["finished_at"])

    async def _clone_job(self, p: dict[str, Any], j: dict[str, Any]) -> dict[str, Any]:
        j["retried"] = True
        await self.store.put_job(j)
        pj = _planned(p, j["name"])
        return await self._new_job(p, pj, time.time(), attempt=j.get("attempt", 1) + 1)

    async def _reset_skipped(self, p: dict[str, Any], stages: set[int]) -> None:
        low = min(stages)
        for j in latest_jobs(await self.store.jobs(p["id"])):
            if j["status"] == "skipped" and j["stage_idx"] >= low:
                j.update(status="created", finished_at=None)
                await self.store.put_job(j)
                if j.get("deployment_id"):
                    await self.deployments.reset(j["deployment_id"], time.time())

    # ------------------------------------------------------------ reading

    async def _pipeline(self, pid: int) -> dict[str, Any]:
        p = await self.store.pipeline(pid)
        if p is None:
            raise NotFound("404 Pipeline Not Found")
        return p

    async def _job(self, job_id: int) -> dict[str, Any]:
        j = await self.store.job(job_id)
        if j is None:
            raise NotFound("404 Job Not Found")
        return j

    # ------------------------------------------------------------ driving

    def kick(self, pid: int) -> None:
        """Re-evaluate pipeline ``pid`` (start its driver when none runs)."""
        if self._stopping:
            return
        ev = self._wake.setdefault(pid, asyncio.Event())
        ev.set()
        task = self._drivers.get(pid)
        if task is None or task.done():
            self._drivers[pid] = asyncio.create_task(self._drive(pid), name=f"pipeline-{pid}")

    def _lock(self, pid: int) -> asyncio.Lock:
        return self._locks.setdefault(pid, asyncio.Lock())

    async def _drive(self, pid: int) -> None:
        ev = self._wake[pid]
        try:
            while not self._stopping:
                ev.clear()
                async with self._lock(pid):
                    busy = await self._step(pid)
                if not busy and not ev.is_set():
                    return
                await ev.wait()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pipeline driver failed", extra={"pipeline": pid})

    async def _step(self, pid: int) -> bool:
        """One evaluation; True while jobs of the pipeline are queued, running or scheduled."""
        p = await self._pipeline(pid)
        jobs = latest_jobs(await self.store.jobs(pid))
        by_name = {j["name"]: j for j in jobs}
        changed = True
        while changed:
            changed = False
            for j in sorted((j for j in jobs if j["status"] == "created"), key=lambda x: x["stage_idx"]):
                pj = _planned(p, j["name"])
                dag = pj.needs is not None and len(pj.needs) > 0
                preds = [by_name[n] for n, _ in pj.needs if n in by_name] if pj.needs is not None else \
                    [x for x in jobs if x["stage_idx"] < j["stage_idx"]]
                nxt = next_status(j["when"], preds, dag)
                if nxt is None:
                    continue
                now = time.time()
                j.update(status=nxt, queued_at=now if nxt == "pending" else None,
                         finished_at=now if nxt == "skipped" else None)
                if nxt == "scheduled":
                    j["scheduled_at"] = now + (pj.start_in or 0)
                await self.store.put_job(j)
                if nxt == "skipped" and j.get("deployment_id"):
                    await self.deployments.finish(j["deployment_id"], "skipped", now)
                changed = True
        for j in jobs:
            if j["status"] == "pending" and j["id"] not in self._running:
                self._spawn(p, j)
            elif j["status"] == "scheduled" and j["id"] not in self._running:
                self._spawn_timer(p, j)
        await self._update_pipeline(p, jobs)
        return any(j["status"] in ACTIVE or j["status"] == "scheduled" for j in jobs)

    def _spawn(self, p: dict[str, Any], j: dict[str, Any]) -> None:
        self._running[j["id"]] = asyncio.Event()
        t = asyncio.create_task(self._execute(p, j), name=f"job-{j['id']}")
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _spawn_timer(self, p: dict[str, Any], j: dict[str, Any]) -> None:
        cancel = self._running[j["id"]] = asyncio.Event()

        async def wait() -> None:
            delay = max(0.0, float(j.get("scheduled_at") or 0) - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), delay)
            self._running.pop(j["id"], None)
            async with self._lock(p["id"]):
                cur = await self._job(j["id"])
                if cur["status"] == "scheduled":
                    cur.update(status="canceled" if cancel.is_set() else "pending",
                               queued_at=time.time(), finished_at=time.time() if cancel.is_set() else None)
                    await self.store.put_job(cur)
            self.kick(p["id"])

        t = asyncio.create_task(wait(), name=f"delayed-{j['id']}")
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _execute(self, p: dict[str, Any], j: dict[str, Any]) -> None:
        cancel = self._running[j["id"]]
        try:
            async with self.pool:
                if cancel.is_set():
                    await self._finish(p, j, JobResult("canceled"))
                    return
                pj = _planned(p, j["name"])
                group = self._groups.setdefault(pj.resource_group, asyncio.Lock()) if pj.resource_group else None
                if group is not None and group.locked():
                    j["status"] = "waiting_for_resource"  # as GitLab shows a job queued on its resource group
                    await self.store.put_job(j)
                    self.kick(p["id"])
                async with group or contextlib.nullcontext():
                    result = await self._attempt(p, j, pj, cancel)
                await self._finish(p, j, result)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("pipeline job failed to run", extra={"job": j["id"]})
            await self._finish(p, j, JobResult("failed", failure_reason="runner_system_failure", notes=[str(e)]))
        finally:
            self._running.pop(j["id"], None)
            self.kick(p["id"])

    async def _attempt(self, p: dict[str, Any], j: dict[str, Any], pj: PlannedJob,
                       cancel: asyncio.Event) -> JobResult:
        now = time.time()
        j.update(status="running", started_at=now)
        await self.store.put_job(j)
        self.kick(p["id"])  # the pipeline turns running
        project = await self.store.project(p["project_id"]) or {"name": str(p["project_id"]), "repo": ""}
        env, masks = self._job_env(p, j, pj)
        timeout = min(pj.timeout_s or 1e12, self.settings.job_timeout / 1000)
        env["CI_JOB_TIMEOUT"] = str(int(timeout))
        await self._deployment_starts(p, j, pj, env, now)
        jl = self.reporter.job_log(p, project, j["name"])
        run = JobRun(job_id=j["id"], project_id=p["project_id"], repo=Path(project["repo"]), sha=p["sha"], job=pj,
                     env=env, masks=masks, timeout_s=timeout, artifacts_from=await self._artifact_sources(p, pj),
                     on_lines=jl.add, flush=jl.flush, gate=self._canary_gate(j, pj, env),
                     outside_vars=frozenset(v["key"] for v in [*p["variables"], *j.get("manual_variables", [])]))
        return await self.executor.run(run, cancel)

    def _canary_gate(self, j: dict[str, Any], pj: PlannedJob, env: dict[str, str]
                     ) -> Callable[[Callable[[str], None], asyncio.Event], Awaitable[str | None]] | None:
        """For a deploy job with ``PITWALL_CANARY``: after its script, wait for that Canary's verdict (recorded
        on the deployment); the job fails with the Canary's message when it rolls back."""
        target = env.get(CANARY_VAR)
        if not target or not pj.environment or pj.environment.get("action", "start") != "start":
            return None

        async def gate(say: Callable[[str], None], cancel: asyncio.Event) -> str | None:
            if self.canary_waiter is None:
                return f"{CANARY_VAR} needs the Kubernetes API (kube.enabled)"
            try:
                timeout = parse_human_duration(env.get(CANARY_TIMEOUT_VAR) or "10m")
            except ValueError as e:
                return f"{CANARY_TIMEOUT_VAR}: {e}"
            say(f"Waiting for the verdict of canary {target} (up to {timeout:.0f}s)")
            v = await self.canary_waiter.wait(target, timeout, cancel, say)
            if j.get("deployment_id"):
                await self.deployments.set_canary(j["deployment_id"], target, v.passed, v.message)
            if v.passed:
                say(v.message)
                return None
            return v.message

        return gate

    async def _deployment_starts(self, p: dict[str, Any], j: dict[str, Any], pj: PlannedJob, env: dict[str, str],
                                 now: float) -> None:
        """A job deploying to an environment (``action: start``): its deployment runs."""
        if not pj.environment:
            return
        j["environment_name"] = env["CI_ENVIRONMENT_NAME"]  # now with the job's final variables
        if pj.environment.get("action", "start") == "start":
            if not j.get("deployment_id"):
                d = await self.deployments.create(p, j, j["environment_name"], now, project=env["CI_PROJECT_NAME"])
                j["deployment_id"] = d["id"]
            await self.deployments.start(j["deployment_id"], pj.environment, env.get("CI_ENVIRONMENT_URL"), now)
        await self.store.put_job(j)

    async def _deployment_ends(self, p: dict[str, Any], j: dict[str, Any], pj: PlannedJob, now: float) -> None:
        """The deployment takes the job's verdict; a successful ``action: stop`` job stops the environment."""
        if j.get("deployment_id"):
            times = await self._commit_times(p, j["deployment_id"]) if j["status"] == "success" else None
            d = await self.deployments.finish(j["deployment_id"], j["status"], now, times)
            if d is not None:
                await self.dora_samples(d["project_id"], d["environment"], d.get("project", ""), now)
        action = (pj.environment or {}).get("action", "start")
        if action == "stop" and j["status"] == "success" and j.get("environment_name"):
            await self.deployments.stopped(p["project_id"], j["environment_name"])

    async def _commit_times(self, p: dict[str, Any], dep_id: int) -> list[float] | None:
        """Commit times of what deployment ``dep_id`` brings: the commits since the environment's previous
        successful deployment (at most 1000), or just its own commit for the first one."""
        d = await self.deployments.deployment(dep_id)
        project = await self.store.project(p["project_id"])
        if d is None or project is None:
            return None
        prev = await self.deployments.previous_success(d)
        rng = f"{prev['sha']}..{d['sha']}" if prev is not None else d["sha"]
        extra = [] if prev is not None else ["-1"]
        r = await asyncio.to_thread(subprocess.run, ["git", "-C", project["repo"], "log", "--format=%ct",
                                                     "--max-count=1000", *extra, rng],
                                    capture_output=True, timeout=30, check=False)
        if r.returncode != 0:
            return None
        return [float(x) for x in r.stdout.split()]

    async def dora_figures(self, project_id: int | None, environment: str, now: float,
                           window_s: float = DORA_WINDOW_S) -> dict[str, Any]:
        """DORA's four keys for ``environment`` (see ``pipelines.dora``), incidents joined when known."""
        incs = await self.incidents() if self.incidents is not None else []
        return dora_figures(await self.deployments.deployments(), incs, environment=environment,
                            project_id=project_id, end=now, window_s=window_s)

    async def dora_samples(self, project_id: int, environment: str, project: str, now: float) -> None:
        """The four keys over the last 30 days as series in the metric store."""
        try:
            f = await self.dora_figures(project_id, environment, now)
        except Exception:
            log.exception("DORA figures failed")
            return
        lbl = {"project": project, "environment": environment, "window": "30d"}
        rows = [(f"pitwall_dora_{k}", lbl, float(f[k])) for k in
                ("deployment_frequency_per_day", "lead_time_seconds", "change_failure_rate",
                 "time_to_restore_seconds") if f[k] is not None]
        await self.reporter.samples(rows)

    async def _dora_sweep(self, now: float) -> None:
        """Refresh the DORA series of every environment that has deployments (the window moves on)."""
        seen: set[tuple[int, str, str]] = set()
        for d in await self.deployments.deployments():
            seen.add((d["project_id"], d["environment"], d.get("project", "")))
        for pid, env, name in sorted(seen):
            await self.dora_samples(pid, env, name, now)

    async def stop_environment(self, project_id: int, env_id: int) -> dict[str, Any]:
        """GitLab's environment stop: play its ``on_stop`` job when that job waits to be played (the environment
        is ``stopping`` until the job succeeds), else mark it stopped. Stopping one that is ``stopping`` while
        its job no longer runs (it failed or was canceled) stops it at once, as GitLab's force stop."""
        env = await self.deployments.environment(project_id, env_id)
        if env is None:
            raise NotFound("404 Environment Not Found")
        stop = env.get("on_stop")
        job = None
        if stop:
            p = await self.store.pipeline(stop["pipeline_id"])
            jobs = latest_jobs(await self.store.jobs(stop["pipeline_id"])) if p is not None else []
            job = next((x for x in jobs if x["name"] == stop["job_name"]), None)
        if env["state"] == "available" and job is not None and job["status"] == "manual":
            await self.play_job(job["id"])
            env["state"] = "stopping"
            await self.deployments.put_environment(env)
            return env
        if env["state"] == "stopping" and job is not None and job["status"] in ACTIVE:
            return env  # its stop job is on its way
        env.update(state="stopped", auto_stop_at=None)
        await self.deployments.put_environment(env)
        return env

    async def stop_expired_environments(self, now: float) -> int:
        """Stop the environments past their ``auto_stop_in``; returns how many."""
        n = 0
        for env in await self.deployments.expired(now):
            try:
                await self.stop_environment(env["project_id"], env["id"])
                n += 1
            except Unavailable:  # its on_stop job belongs to a live peer's pipeline: that server stops it
                continue
        return n

    def _job_env(self, p: dict[str, Any], j: dict[str, Any], pj: PlannedJob) -> tuple[dict[str, str], list[str]]:
        env = dict(p["predefined"])
        builds = self.root / "builds" / str(j["id"])
        env.update({"CI_JOB_ID": str(j["id"]), "CI_JOB_NAME": j["name"], "CI_JOB_NAME_SLUG": slug(j["name"]),
                    "CI_JOB_STAGE": j["stage"], "CI_JOB_URL": f"{env['CI_PROJECT_URL']}/-/jobs/{j['id']}",
                    "CI_JOB_STARTED_AT": iso(j["started_at"]) or "", "CI_PROJECT_DIR": str(builds / "src"),
                    "CI_BUILDS_DIR": str(builds), "CI_RUNNER_DESCRIPTION": "pitwall shell executor",
                    "CI_RUNNER_EXECUTABLE_ARCH": "linux/amd64", "CI_NODE_TOTAL": str(pj.node_total)})
        if pj.node_index:
            env["CI_NODE_INDEX"] = str(pj.node_index)
        if pj.when == "manual":
            env["CI_JOB_MANUAL"] = "true"
        for k, (v, exp) in pj.variables.items():
            env[k] = expand(str(v), env) if exp else str(v)
        if pj.environment:
            e = pj.environment
            env["CI_ENVIRONMENT_NAME"] = expand(e["name"], env)
            env["CI_ENVIRONMENT_SLUG"] = env_slug(env["CI_ENVIRONMENT_NAME"])
            env["CI_ENVIRONMENT_ACTION"] = e.get("action", "start")
            env["CI_ENVIRONMENT_TIER"] = e.get("deployment_tier", "other")
            if "url" in e:
                env["CI_ENVIRONMENT_URL"] = expand(e["url"], env)
        uvars = [*p["variables"], *j.get("manual_variables", [])]
        for v in uvars:
            env[v["key"]] = v["value"]
        if pj.image:  # after every variable: the name may use any of them
            env["CI_JOB_IMAGE"] = expand(pj.image["name"], env)
        return env, [v["value"] for v in uvars if v.get("masked")]

    async def _artifact_sources(self, p: dict[str, Any], pj: PlannedJob) -> list[Path]:
        """Artifact directories of the jobs whose artifacts this one gets (needs with artifacts, else
        ``dependencies``, else every job of earlier stages), current attempts only."""
        jobs = latest_jobs(await self.store.jobs(p["id"]))
        if pj.needs is not None:
            names = [n for n, art in pj.needs if art]
            if pj.dependencies is not None:
                names = [n for n in names if n in pj.dependencies]
        elif pj.dependencies is not None:
            names = pj.dependencies
        else:
            names = [j["name"] for j in jobs if j["stage_idx"] < pj.stage_idx]
        by = {j["name"]: j for j in jobs}
        out = []
        for n in names:
            j = by.get(n)
            if j is not None and j["artifacts_files"]:
                d = self.executor.artifacts_dir(j["id"])
                if d.is_dir():
                    out.append(d)
        return out

    async def _finish(self, p: dict[str, Any], j: dict[str, Any], r: JobResult) -> None:
        now = time.time()
        async with self._lock(p["id"]):
            cur = await self._job(j["id"])
            pj = _planned(p, j["name"])
            allow = pj.allow_failure or (r.exit_code is not None and r.exit_code in pj.allow_failure_exit_codes)
            cur.update(status=r.status, finished_at=now, exit_code=r.exit_code,
                       failure_reason=r.failure_reason or None, allow_failure=allow,
                       artifacts_size=r.artifacts_size, artifacts_files=r.artifacts_files,
                       junit=r.junit is not None, coverage=r.coverage)
            a = pj.artifacts_spec
            expire = a.expire_in if a is not None and a.expire_in is not None else \
                (self.settings.artifacts_retention / 1000 or None)
            if r.artifacts_files and expire:
                cur["artifacts_expire_at"] = now + expire
            if r.junit is not None:
                d = self.executor.artifacts_dir(j["id"])
                d.mkdir(parents=True, exist_ok=True)
                (d / "junit.json").write_bytes(orjson.dumps(r.junit))
            await self.store.put_job(cur)
            await self._deployment_ends(p, cur, pj, now)
            if r.status == "failed" and _should_retry(pj, cur):
                await self._clone_job(p, cur)
            elif r.status == "failed" and not allow and p["plan"]["auto_cancel_on_job_failure"] == "all":
                for other in latest_jobs(await self.store.jobs(p["id"])):
                    if other["status"] not in COMPLETED and other["id"] != cur["id"]:
                        await self._cancel_job(other)
        await self._job_metrics(p, cur, pj)

    async def _job_metrics(self, p: dict[str, Any], j: dict[str, Any], pj: PlannedJob) -> None:
        project = await self.store.project(p["project_id"]) or {"name": ""}
        lbl = {"project": project["name"], "ref": p["ref"], "job_name": j["name"], "stage": j["stage"],
               "status": j["status"]}
        rows = [("pitwall_pipeline_job_duration_seconds", lbl, _duration(j) or 0.0)]
        if j.get("started_at"):  # created -> started: the wait for earlier stages and needs plus the pool's
            rows.append(("pitwall_pipeline_job_wait_seconds", lbl, max(0.0, j["started_at"] - j["created_at"])))
        if j.get("queued_at") and j.get("started_at"):
            rows.append(("pitwall_pipeline_job_queued_seconds", lbl, max(0.0, j["started_at"] - j["queued_at"])))
        await self.reporter.samples(rows)
        env = pj.environment
        if env and j["status"] == "success" and env.get("action", "start") == "start":
            name = j.get("environment_name") or env["name"]  # as the job expanded it
            await self.reporter.change(ChangeEvent(
                kind="deploy", summary=f"pipeline #{p['id']} job {j['name']} deployed {p['ref']}@{p['sha'][:8]} to "
                                       f"{name}", source="pitwall-pipelines", service=name,
                who=p.get("user", ""), details={"pipeline": p["id"], "job": j["id"], "sha": p["sha"],
                                                "environment": {**env, "name": name},
                                                "deployment": j.get("deployment_id")}))

    async def _update_pipeline(self, p: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        status = composite(jobs) or "skipped"
        before = p["status"]
        if status == before:
            return
        now = time.time()
        p.update(status=status, updated_at=now)
        if status in ACTIVE and p["started_at"] is None:
            p["started_at"] = now
        if status in COMPLETED:
            p["finished_at"] = now
            covs = [j["coverage"] for j in jobs if j.get("coverage") is not None]
            p["coverage"] = f"{sum(covs) / len(covs):.2f}" if covs else None  # GitLab: the jobs' average
        await self.store.put_pipeline(p)
        if status in COMPLETED:
            await self._pipeline_finished(p, jobs)

    async def _pipeline_finished(self, p: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        project = await self.store.project(p["project_id"]) or {"name": ""}
        lbl = {"project": project["name"], "ref": p["ref"], "status": p["status"]}
        rows = [("pitwall_pipeline_duration_seconds", lbl, pipeline_duration(p) or 0.0)]
        counts: dict[str, int] = {}
        for j in jobs:
            counts[j["status"]] = counts.get(j["status"], 0) + 1
        rows.extend(("pitwall_pipeline_jobs", {"project": project["name"], "ref": p["ref"],
                                               "pipeline": str(p["id"]), "status": s}, float(n))
                    for s, n in sorted(counts.items()))
        await self.reporter.samples(rows)
        await self.reporter.change(ChangeEvent(
            kind="pipeline", summary=f"pipeline #{p['id']} of {project['name']} on {p['ref']}: {p['status']}",
            source="pitwall-pipelines", service=project["name"], who=p.get("user", ""),
            details={"pipeline": p["id"], "sha": p["sha"], "ref": p["ref"], "status": p["status"],
                     "jobs": counts}))

    # ------------------------------------------------------------ reports

    def trace(self, job_id: int, offset: int = 0, limit: int = 16 << 20) -> bytes:
        path = self.executor.trace_path(job_id)
        try:
            with path.open("rb") as f:
                f.seek(offset)
                return f.read(limit)
        except FileNotFoundError:
            return b""

    def junit(self, job_id: int) -> dict[str, Any] | None:
        path = self.executor.artifacts_dir(job_id) / "junit.json"
        try:
            data: dict[str, Any] = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        return data

    def job_summary(self, j: dict[str, Any]) -> dict[str, Any]:
        return {"id": j["id"], "name": j["name"], "stage": j["stage"], "status": j["status"],
                "allow_failure": j["allow_failure"], "started_at": iso(j["started_at"]),
                "finished_at": iso(j["finished_at"])}


def _duration(j: dict[str, Any]) -> float | None:
    if j.get("started_at") is None:
        return None
    end = float(j.get("finished_at") or time.time())
    return round(end - float(j["started_at"]), 3)


def pipeline_duration(p: dict[str, Any]) -> float | None:
    if p.get("started_at") is None:
        return None
    return round(float(p.get("finished_at") or time.time()) - float(p["started_at"]), 3)


def _planned(p: dict[str, Any], name: str) -> PlannedJob:
    for d in p["plan"]["jobs"]:
        if d["name"] == name:
            return PlannedJob.from_dict(d)
    raise NotFound(f"job {name!r} is not in pipeline {p['id']}")


def _should_retry(pj: PlannedJob, j: dict[str, Any]) -> bool:
    """GitLab's ``retry``: attempts left, a failure reason it names (or ``always``), an exit code it names."""
    if j.get("attempt", 1) > pj.retry_max:
        return False
    reason = j.get("failure_reason") or "unknown_failure"
    if "always" not in pj.retry_when and reason not in pj.retry_when and not (
            reason == "job_execution_timeout" and "stuck_or_timeout_failure" in pj.retry_when):
        return False
    return not pj.retry_exit_codes or j.get("exit_code") in pj.retry_exit_codes


def _check_variables(variables: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pipeline variables as GitLab's API takes them: ``[{key, value, variable_type?, masked?}]``."""
    if not isinstance(variables, list) or len(variables) > MAX_VARIABLES:
        raise BadData(f"variables must be a list of at most {MAX_VARIABLES} entries")
    out = []
    for v in variables:
        if not isinstance(v, dict) or not isinstance(v.get("key"), str) or not isinstance(v.get("value", ""), str):
            raise BadData("each variable needs a string key and a string value")
        key, value = v["key"], v.get("value", "")
        if not re.fullmatch(r"[A-Za-z0-9_]{1,255}", key):
            raise BadData(f"variable key {key!r} can contain only letters, digits and '_'")
        if len(value.encode()) > MAX_VAR_BYTES:
            raise BadData(f"variable {key} is longer than {MAX_VAR_BYTES} bytes")
        masked = bool(v.get("masked", False))
        if masked and (len(value) < 8 or "\n" in value):
            raise BadData(f"variable {key} cannot be masked: it must be one line of at least 8 characters")
        out.append({"key": key, "value": value, "variable_type": v.get("variable_type", "env_var"),
                    "masked": masked})
    return out


def _load_and_plan(path: Path, commit: Commit, source: str, variables: dict[str, str],
                   before_sha: str = ZERO_SHA) -> PlannedPipeline:
    """Read ``.gitlab-ci.yml`` (and includes) at the commit and plan the pipeline (in a worker thread)."""
    def git(*args: str) -> tuple[int, bytes]:
        r = subprocess.run(["git", "-C", str(path), *args], capture_output=True, timeout=30, check=False)
        return r.returncode, r.stdout

    def read(rel: str) -> str | None:
        code, out = git("show", f"{commit.sha}:{rel}")
        return out.decode("utf-8", "replace") if code == 0 else None

    files_cache: list[str] = []

    def files() -> list[str]:
        if not files_cache:
            _, out = git("ls-tree", "-r", "-z", "--name-only", commit.sha)
            files_cache.extend(f for f in out.decode("utf-8", "replace").split("\0") if f)
        return files_cache

    def changed(compare_to: str | None) -> list[str] | None:
        if compare_to is None and before_sha != ZERO_SHA:
            compare_to = before_sha  # a push: what it changed (GitLab compares with the push's before SHA)
        if compare_to is None:
            return None
        code, out = git("diff", "--name-only", "-z", f"{compare_to}...{commit.sha}")
        if code != 0:
            raise SpecError(f"rules:changes:compare_to is not a valid ref: {compare_to}")
        return [f for f in out.decode("utf-8", "replace").split("\0") if f]

    cfg = load_config(read, files)
    return plan(cfg, Context(ref=commit.ref, is_tag=commit.is_tag, source=source, variables=variables, files=files,
                             changed=changed))
