"""GitLab environments and deployments as keys in the revisioned store.

A job with ``environment: {action: start}`` (the default) that starts running creates a deployment of its
pipeline's commit to that environment (created on first use, ``available``); the job's verdict becomes the
deployment's status (``running`` -> ``success``/``failed``/``canceled``). A successful ``action: stop`` job
stops the environment; ``on_stop`` names the job that ``POST environments/:id/stop`` plays, ``auto_stop_in``
stops it that long after its last deployment (the runner's sweep).

Keys: ``environments/<project>/<id>``, ``environment-name/<project>/<hash>`` -> id, ``deployments/<id>``.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

import orjson

from pitwall.pipelines.durations import parse_human_duration
from pitwall.pipelines.store import PREFIX, PipelineStore, _id
from pitwall.storage.revstore import Compare, Op

__all__ = ["DEPLOYMENT_STATUSES", "DeploymentStore", "slug"]

DEPLOYMENT_STATUSES = ("created", "running", "success", "failed", "canceled", "skipped", "blocked")
_FINAL = {"success": "success", "failed": "failed", "canceled": "canceled", "skipped": "skipped"}


def slug(name: str) -> str:
    """GitLab's environment slug (``Gitlab::Slug::Environment``): lower case, non-alphanumerics to ``-``,
    ``env-`` before a leading non-letter, dashes squeezed; when that changed the name or is longer than 24,
    the first 17 characters, ``-`` and 6 base-36 digits of the name's SHA-256 (so it stays unique)."""
    s = re.sub(r"[^a-z0-9]", "-", name.lower())
    if not s[:1].isalpha() or not s[:1].isascii():
        s = f"env-{s}"
    s = re.sub(r"-+", "-", s)
    if len(s) > 24 or s != name:
        n = int(hashlib.sha256(name.encode()).hexdigest(), 16)
        digits = ""
        while n:
            n, r = divmod(n, 36)
            digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
        s = s[:17]
        return (s if s.endswith("-") else s + "-") + digits[-6:]
    return s.removesuffix("-")


class DeploymentStore:
    """Environments and deployments over the pipeline keys; every write is one revision."""

    def __init__(self, store: PipelineStore) -> None:
        self.ps = store
        self.kv = store.store

    # ------------------------------------------------------------ environments

    async def environment(self, project_id: int, env_id: int) -> dict[str, Any] | None:
        return await self.ps._get(f"{PREFIX}environments/{_id(project_id)}/{_id(env_id)}")

    async def environments(self, project_id: int) -> list[dict[str, Any]]:
        return await self.ps._list(f"{PREFIX}environments/{_id(project_id)}/")

    async def put_environment(self, env: dict[str, Any]) -> None:
        env["updated_at"] = time.time()
        await self.kv.put(f"{PREFIX}environments/{_id(env['project_id'])}/{_id(env['id'])}", orjson.dumps(env))

    async def environment_named(self, project_id: int, name: str) -> dict[str, Any] | None:
        kv = await self.kv.get(self._name_key(project_id, name))
        return await self.environment(project_id, int(kv.value)) if kv is not None else None

    @staticmethod
    def _name_key(project_id: int, name: str) -> str:
        return f"{PREFIX}environment-name/{_id(project_id)}/{hashlib.sha256(name.encode()).hexdigest()[:32]}"

    async def ensure_environment(self, project_id: int, name: str, now: float) -> dict[str, Any]:
        """The project's environment ``name``, created (``available``) on first use."""
        found = await self.environment_named(project_id, name)
        if found is not None:
            return found
        eid = await self.ps.next_id("environment")
        env = {"id": eid, "project_id": project_id, "name": name, "slug": slug(name), "external_url": None,
               "state": "available", "tier": "other", "created_at": now, "updated_at": now, "on_stop": None,
               "auto_stop_at": None}
        idx = self._name_key(project_id, name)
        res = await self.kv.txn([Compare(idx, "version", "=", 0)], [
            Op.put(idx, str(eid).encode()),
            Op.put(f"{PREFIX}environments/{_id(project_id)}/{_id(eid)}", orjson.dumps(env))])
        if not res.succeeded:  # another server created it first
            return await self.ensure_environment(project_id, name, now)
        return env

    # ------------------------------------------------------------ deployments

    async def deployment(self, dep_id: int) -> dict[str, Any] | None:
        return await self.ps._get(f"{PREFIX}deployments/{_id(dep_id)}")

    async def deployments(self) -> list[dict[str, Any]]:
        """Every deployment of every project, in id order."""
        return await self.ps._list(f"{PREFIX}deployments/")

    async def put_deployment(self, d: dict[str, Any]) -> None:
        await self.kv.put(f"{PREFIX}deployments/{_id(d['id'])}", orjson.dumps(d))

    async def create(self, p: dict[str, Any], j: dict[str, Any], name: str, now: float,
                     project: str = "") -> dict[str, Any]:
        """A ``created`` deployment of pipeline ``p``'s commit by job ``j`` to environment ``name`` (created on
        first use), as GitLab records one when the job is created."""
        env = await self.ensure_environment(p["project_id"], name, now)
        did = await self.ps.next_id("deployment")
        iid = await self.ps.next_id(f"deployment-iid-{p['project_id']}")
        d = {"id": did, "iid": iid, "project_id": p["project_id"], "environment_id": env["id"],
             "environment": name, "project": project, "ref": p["ref"], "sha": p["sha"], "tag": p["tag"],
             "status": "created", "created_at": now, "updated_at": now, "finished_at": None, "pipeline_id": p["id"],
             "job_id": j["id"], "job_name": j["name"], "user": p.get("user", ""),
             "commit_timestamp": p.get("commit_timestamp"),
             "commit_title": p.get("commit_message", "").split("\n")[0], "canary": None}
        await self.put_deployment(d)
        return d

    async def start(self, dep_id: int, spec: dict[str, str], url: str | None, now: float) -> dict[str, Any] | None:
        """The deployment runs: its environment is available again; its URL, tier, on_stop and auto_stop_in
        follow the job's ``environment:``."""
        d = await self.deployment(dep_id)
        if d is None:
            return None
        env = await self.environment(d["project_id"], d["environment_id"])
        if env is not None:
            env.update(state="available")
            if url:
                env["external_url"] = url
            if "deployment_tier" in spec:
                env["tier"] = spec["deployment_tier"]
            env["on_stop"] = {"pipeline_id": d["pipeline_id"], "job_name": spec["on_stop"]} \
                if spec.get("on_stop") else None
            env["auto_stop_at"] = now + parse_human_duration(spec["auto_stop_in"]) \
                if spec.get("auto_stop_in") and spec["auto_stop_in"] != "never" else None
            await self.put_environment(env)
        d.update(status="running", updated_at=now, finished_at=None)
        await self.put_deployment(d)
        return d

    async def reset(self, dep_id: int, now: float) -> None:
        """A skipped job runs again (a retry reached it): its deployment is ``created`` again."""
        d = await self.deployment(dep_id)
        if d is not None:
            d.update(status="created", updated_at=now, finished_at=None)
            await self.put_deployment(d)

    async def finish(self, dep_id: int, job_status: str, now: float,
                     commit_times: list[float] | None = None) -> dict[str, Any] | None:
        """The deployment takes its job's final status (and, when it succeeded, the times of the commits it
        brought to its environment, for DORA's lead time)."""
        d = await self.deployment(dep_id)
        if d is None or job_status not in _FINAL:
            return d
        d.update(status=_FINAL[job_status], updated_at=now, finished_at=now)
        if commit_times is not None:
            d["commit_times"] = commit_times
        await self.put_deployment(d)
        return d

    async def set_canary(self, dep_id: int, canary: str, passed: bool, message: str) -> None:
        """The verdict of the Canary the deployment waited for."""
        d = await self.deployment(dep_id)
        if d is not None:
            d["canary"] = {"name": canary, "passed": passed, "message": message}
            await self.put_deployment(d)

    async def stopped(self, project_id: int, name: str) -> dict[str, Any] | None:
        """An ``action: stop`` job succeeded: the environment is stopped."""
        env = await self.environment_named(project_id, name)
        if env is not None:
            env.update(state="stopped", auto_stop_at=None)
            await self.put_environment(env)
        return env

    async def previous_success(self, d: dict[str, Any]) -> dict[str, Any] | None:
        """The last successful deployment to ``d``'s environment before ``d``."""
        best = None
        for x in await self.deployments():
            if x["id"] < d["id"] and x["environment_id"] == d["environment_id"] and x["status"] == "success":
                best = x
        return best

    async def last_deployment(self, env: dict[str, Any]) -> dict[str, Any] | None:
        """The environment's newest deployment (GitLab's ``last_deployment``: the newest successful one)."""
        best = None
        for d in await self.deployments():
            if d["environment_id"] == env["id"] and d["status"] == "success":
                best = d
        return best

    async def expired(self, now: float) -> list[dict[str, Any]]:
        """Available environments whose ``auto_stop_in`` has passed."""
        out: list[dict[str, Any]] = []
        for proj in await self.ps.projects():
            out.extend(e for e in await self.environments(proj["id"])
                       if e["state"] == "available" and e.get("auto_stop_at") and e["auto_stop_at"] <= now)
        return out
