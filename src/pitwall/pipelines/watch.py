"""Push triggers: watched repositories' refs are polled; a ref that moved starts a pipeline for it with
``CI_PIPELINE_SOURCE=push`` and the push's before SHA (so ``rules:changes`` sees what the push changed).

The last SHA seen per ref is a key in the revisioned store, so a restart neither re-runs old pushes nor
misses the ones made while pitwall was down. A repository seen for the first time is recorded, not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
from pathlib import Path

import orjson

from pitwall.core.errors import PitwallError
from pitwall.pipelines.runner import ZERO_SHA, PipelineRunner
from pitwall.pipelines.settings import WatchedRepo
from pitwall.pipelines.store import PREFIX
from pitwall.storage.revstore import Compare, Op

__all__ = ["RepoWatcher", "list_refs"]

log = logging.getLogger(__name__)
GIT_TIMEOUT_S = 30.0


async def list_refs(repo: Path) -> dict[str, tuple[str, bool]]:
    """``{short ref name: (commit sha, is tag)}`` of a repository's branches and tags."""
    proc = await asyncio.create_subprocess_exec(
        "git", "-C", str(repo), "for-each-ref", "--format=%(refname) %(objectname) %(*objectname)",
        "refs/heads", "refs/tags", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), GIT_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {}
    refs: dict[str, tuple[str, bool]] = {}
    for line in out.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, sha = parts[0], parts[2] if len(parts) > 2 else parts[1]  # annotated tags: the peeled commit
        if name.startswith("refs/heads/"):
            refs[name[len("refs/heads/"):]] = (sha, False)
        elif name.startswith("refs/tags/"):
            refs[name[len("refs/tags/"):]] = (sha, True)
    return refs


class RepoWatcher:
    """The component polling ``watch`` repositories every ``interval_s``."""

    name = "pipelines-watch"

    def __init__(self, runner: PipelineRunner, watch: list[WatchedRepo], interval_s: float) -> None:
        self.runner = runner
        self.watch = watch
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.triggered = 0
        self.polls = 0

    async def start(self) -> None:
        if self.watch:
            self._task = asyncio.create_task(self._loop(), name="pipelines-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            for w in self.watch:
                try:
                    await self.poll(w)
                except Exception:
                    log.exception("watching a repository failed", extra={"repo": str(w.repo)})
            await asyncio.sleep(self.interval_s)

    async def poll(self, w: WatchedRepo) -> list[int]:
        """One look at ``w``: pipelines started for the refs that moved (their ids)."""
        path = w.repo.expanduser().resolve()
        key = f"{PREFIX}watch/{hashlib.sha256(str(path).encode()).hexdigest()[:32]}"
        store = self.runner.store.store
        kv = await store.get(key)
        seen: dict[str, str] | None = orjson.loads(kv.value) if kv is not None else None
        refs = await list_refs(path)
        started: list[int] = []
        # Claim what moved: of servers sharing the store, only the one whose write lands starts the pipelines.
        claim = await store.txn([Compare(key, "mod", "=", kv.mod_revision if kv is not None else 0)],
                                [Op.put(key, orjson.dumps({r: s for r, (s, _) in refs.items()}))])
        self.polls += 1
        if not claim.succeeded:
            return started
        if seen is not None:
            for ref, (sha, is_tag) in sorted(refs.items()):
                if seen.get(ref) == sha or not _wanted(ref, is_tag, w.refs):
                    continue
                try:
                    p = await self.runner.create(str(path), ref, [], source="push", user="push",
                                                 before_sha=seen.get(ref, ZERO_SHA))
                except PitwallError as e:  # a bad .gitlab-ci.yml in the push: nothing to run, as in GitLab
                    log.warning("push to %s %s did not start a pipeline: %s", path, ref, e.message)
                    continue
                started.append(p["id"])
                self.triggered += 1
        return started


def _wanted(ref: str, is_tag: bool, patterns: list[str]) -> bool:
    if not patterns:
        return not is_tag
    return any(fnmatch.fnmatchcase(ref, p) for p in patterns)
