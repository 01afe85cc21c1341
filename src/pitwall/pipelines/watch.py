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
from dataclasses import dataclass
from pathlib import Path

import orjson

from pitwall.core.errors import PitwallError
from pitwall.pipelines.runner import ZERO_SHA, PipelineRunner
from pitwall.pipelines.settings import WatchedRepo
from pitwall.pipelines.store import PREFIX
from pitwall.storage.revstore import Compare, Op

__all__ = ["RefUpdate", "RepoWatcher", "fetch_commit", "list_refs"]

log = logging.getLogger(__name__)
GIT_TIMEOUT_S = 30.0
FETCH_TIMEOUT_S = 8.0  # GitHub gives a webhook 10 s to answer
MAX_CAS_TRIES = 8


@dataclass(frozen=True)
class RefUpdate:
    """One pushed ref as git's post-receive and GitHub's push payload report it."""

    before: str
    after: str
    ref: str  # refs/heads/NAME or refs/tags/NAME

    @property
    def short(self) -> tuple[str, bool] | None:
        """(name, is tag); None for refs that are neither branches nor tags."""
        for prefix, tag in (("refs/heads/", False), ("refs/tags/", True)):
            if self.ref.startswith(prefix) and len(self.ref) > len(prefix):
                return self.ref[len(prefix):], tag
        return None

    @property
    def deleted(self) -> bool:
        return self.after == ZERO_SHA


async def _git(repo: Path, *args: str, timeout_s: float = GIT_TIMEOUT_S) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "git", "-C", str(repo), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, f"git {args[0]} took longer than {timeout_s:g} s"
    return proc.returncode or 0, out.decode("utf-8", "replace").strip()[-500:]


async def fetch_commit(repo: Path, u: RefUpdate) -> str:
    """Make ``u.after`` the local ``u.ref`` of ``repo`` (a mirror of the pushed repository), fetching it from
    the repository's ``origin`` when it is not there yet; "" when done, else why not."""
    code, _ = await _git(repo, "rev-parse", "-q", "--verify", f"{u.ref}^{{commit}}")
    if code == 0:
        _, sha = await _git(repo, "rev-parse", f"{u.ref}^{{commit}}")
        if sha == u.after:
            return ""
    code, out = await _git(repo, "fetch", "-q", "origin", f"+{u.ref}:{u.ref}", timeout_s=FETCH_TIMEOUT_S)
    if code != 0:
        return f"git fetch origin {u.ref} failed: {out}"
    _, sha = await _git(repo, "rev-parse", f"{u.ref}^{{commit}}")
    return "" if sha == u.after else f"{u.ref} is at {sha[:12]} after fetching origin, not {u.after[:12]}"


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

    def watched(self, path: Path) -> WatchedRepo | None:
        """The ``pipelines.watch`` entry of the repository at ``path`` (resolved), if any."""
        for w in self.watch:
            if w.repo.expanduser().resolve() == path:
                return w
        return None

    async def pushed(self, path: Path, updates: list[RefUpdate], *, user: str) -> list[int]:
        """Pushed refs reported by a hook or a webhook: pipelines started for those that moved (their ids).

        The refs are recorded in the same key as the polls', by compare-and-swap, so a poll racing the
        hook (or a repeated delivery) does not start the same push twice; deleted branches start nothing."""
        path = path.expanduser().resolve()
        w = self.watched(path)
        key = _key(path)
        store = self.runner.store.store
        todo: list[tuple[RefUpdate, str, bool]] = []
        for _ in range(MAX_CAS_TRIES):
            kv = await store.get(key)
            if kv is not None:
                seen: dict[str, str] = orjson.loads(kv.value)
            else:  # first report: the other refs as they are, the pushed ones as they were
                seen = {r: s for r, (s, _) in (await list_refs(path)).items()}
                seen.update({u.short[0]: u.before for u in updates if u.short is not None})
            new, todo = dict(seen), []
            for u in updates:
                if u.short is None:
                    continue
                name, is_tag = u.short
                if u.deleted:
                    new.pop(name, None)
                    continue
                new[name] = u.after
                if seen.get(name) != u.after and _wanted(name, is_tag, w.refs if w is not None else []):
                    todo.append((u, name, is_tag))
            claim = await store.txn([Compare(key, "mod", "=", kv.mod_revision if kv is not None else 0)],
                                    [Op.put(key, orjson.dumps(new))])
            if claim.succeeded:
                break
        else:
            return []
        started: list[int] = []
        for u, name, _tag in todo:
            try:
                p = await self.runner.create(str(path), name, [], source="push", user=user, before_sha=u.before)
            except PitwallError as e:
                log.warning("push to %s %s did not start a pipeline: %s", path, name, e.message)
                continue
            started.append(p["id"])
            self.triggered += 1
        return started

    async def poll(self, w: WatchedRepo) -> list[int]:
        """One look at ``w``: pipelines started for the refs that moved (their ids)."""
        path = w.repo.expanduser().resolve()
        key = _key(path)
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


def _key(path: Path) -> str:
    return f"{PREFIX}watch/{hashlib.sha256(str(path).encode()).hexdigest()[:32]}"


def _wanted(ref: str, is_tag: bool, patterns: list[str]) -> bool:
    if not patterns:
        return not is_tag
    return any(fnmatch.fnmatchcase(ref, p) for p in patterns)
