"""Pipelines, jobs and projects as keys in the revisioned store (no tables of their own).

``/pitwall/pipelines/seq/<kind>`` counters (compare-and-swap), ``projects/<id>``, ``project-path/<hash>``,
``pipelines/<id>``, ``jobs/<pipeline>/<job>`` and ``job-index/<job>`` -> pipeline. Values are JSON.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from pitwall.storage.revstore import Compare, Op, RevStore

__all__ = ["PipelineStore"]

PREFIX = "/pitwall/pipelines/"
_W = 12  # zero-padded ids keep keys in numeric order


def _id(n: int) -> str:
    return f"{n:0{_W}d}"


class PipelineStore:
    """Typed access to the pipeline keys; every write is one revision."""

    def __init__(self, store: RevStore) -> None:
        self.store = store

    async def next_id(self, kind: str) -> int:
        """The next number of ``kind`` (pipeline, job, project, iid-<project>), unique across servers."""
        key = f"{PREFIX}seq/{kind}"
        while True:
            kv = await self.store.get(key)
            cur = int(kv.value) if kv is not None else 0
            nxt = cur + 1
            res = await self.store.txn([Compare(key, "mod", "=", kv.mod_revision if kv else 0)],
                                       [Op.put(key, str(nxt).encode())])
            if res.succeeded:
                return nxt

    async def _get(self, key: str) -> dict[str, Any] | None:
        kv = await self.store.get(key)
        return orjson.loads(kv.value) if kv is not None else None

    async def _list(self, prefix: str, limit: int = 0) -> list[dict[str, Any]]:
        res = await self.store.range(prefix, limit=limit)
        return [orjson.loads(kv.value) for kv in res.kvs]

    # projects

    async def project_for_path(self, path: str, name: str | None = None) -> dict[str, Any]:
        """The project of a repository directory, created on first use (named ``name``, else after the
        directory)."""
        h = hashlib.sha256(path.encode()).hexdigest()[:32]
        idx = f"{PREFIX}project-path/{h}"
        kv = await self.store.get(idx)
        if kv is not None:
            found = await self.project(int(kv.value))
            if found is not None:
                return found
        pid = await self.next_id("project")
        name = name or path.rstrip("/").rsplit("/", 1)[-1] or "project"
        proj = {"id": pid, "name": name, "path": name, "path_with_namespace": f"pitwall/{name}",
                "name_with_namespace": f"pitwall / {name}", "repo": path}
        res = await self.store.txn([Compare(idx, "version", "=", 0)],
                                   [Op.put(idx, str(pid).encode()),
                                    Op.put(f"{PREFIX}projects/{_id(pid)}", orjson.dumps(proj))])
        if not res.succeeded:  # another server created it first
            return await self.project_for_path(path, name)
        return proj

    async def project(self, pid: int) -> dict[str, Any] | None:
        return await self._get(f"{PREFIX}projects/{_id(pid)}")

    async def projects(self) -> list[dict[str, Any]]:
        return await self._list(f"{PREFIX}projects/")

    # pipelines

    async def put_pipeline(self, p: dict[str, Any]) -> None:
        await self.store.put(f"{PREFIX}pipelines/{_id(p['id'])}", orjson.dumps(p))

    async def pipeline(self, pid: int) -> dict[str, Any] | None:
        return await self._get(f"{PREFIX}pipelines/{_id(pid)}")

    async def pipelines(self) -> list[dict[str, Any]]:
        return await self._list(f"{PREFIX}pipelines/")

    # jobs

    async def put_job(self, j: dict[str, Any], *, new: bool = False) -> None:
        key = f"{PREFIX}jobs/{_id(j['pipeline_id'])}/{_id(j['id'])}"
        ops = [Op.put(key, orjson.dumps(j))]
        if new:
            ops.append(Op.put(f"{PREFIX}job-index/{_id(j['id'])}", str(j["pipeline_id"]).encode()))
        await self.store.txn([], ops)

    async def jobs(self, pipeline_id: int) -> list[dict[str, Any]]:
        """Every job of a pipeline, retried ones included, in id order."""
        return await self._list(f"{PREFIX}jobs/{_id(pipeline_id)}/")

    async def job(self, job_id: int) -> dict[str, Any] | None:
        kv = await self.store.get(f"{PREFIX}job-index/{_id(job_id)}")
        if kv is None:
            return None
        return await self._get(f"{PREFIX}jobs/{_id(int(kv.value))}/{_id(job_id)}")

