"""``pitwall backup self``: the running server's data directory into a restic repository, and back.

A run: a consistent copy of the data directory (``snapshot.copy_data_dir``)
into a staging directory inside it, the checksums of what was copied, then
``restic backup`` tagged ``pitwall-self`` of that copy together with the
entries the copy left live (read in place; files restic could not read,
e.g. removed meanwhile, are warnings). The repository is created when restic
finds none (no extra restic run before each backup). The staging directory
is set aside and removed in the background, off the run's critical path
(the next run waits for it). restic's JSON summary is
recorded (the run list, the metrics, a change event). Runs against one
repository are serialised (``RepoLocks``), in this process and with the
Velero-kind backups; a restic lock left by a pitwall that crashed mid-run
(restic#2736) is removed with ``restic unlock`` (it removes only locks whose
process is gone or that are older than 30 minutes) and the run retried once,
with a note.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitwall.backup.checksums import write_checksums_of
from pitwall.backup.restic import BackupSummary, Restic, ResticError
from pitwall.backup.snapshot import MANIFEST, STAGING, NotSqlite, copy_data_dir, read_manifest
from pitwall.backup.stats import BackupStats

if TYPE_CHECKING:
    from pitwall.storage.duckdb import TelemetryDB

__all__ = ["RepoLocks", "RestoreError", "SelfBackup", "SelfRun", "restore_self", "with_stale_lock_retry"]

log = logging.getLogger(__name__)

SELF_TAG = "pitwall-self"
_MAX_RUNS = 100  # kept in memory for the API


class RepoLocks:
    """One asyncio lock per repository: concurrent backups to one repository run one after another."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def of(self, repo: str) -> asyncio.Lock:
        return self._locks.setdefault(repo.rstrip("/"), asyncio.Lock())


async def with_stale_lock_retry(restic: Restic, op: Callable[[], Awaitable[Any]], notes: list[str]) -> Any:
    """Run ``op``; if restic finds the repository locked, remove stale locks and retry once. The caller holds
    the repository's ``RepoLocks`` lock, so a lock restic reports is not one of this process's live runs."""
    try:
        return await op()
    except ResticError as e:
        if e.reason != "locked":
            raise
        before = await restic.locks()
        await restic.unlock()
        after = await restic.locks()
        removed = len(before) - len(after)
        notes.append(f"repository was locked; removed {removed} stale restic lock(s) (restic#2736)")
        log.warning("removed stale restic locks", extra={"repository": restic.repo, "removed": removed})
        return await op()


@dataclass
class SelfRun:
    """One self-backup as the API reports it."""

    repository: str
    started: float
    phase: str = "InProgress"  # Completed, Failed
    snapshot_id: str = ""
    finished: float = 0.0
    duration_s: float = 0.0
    lock_held_s: float = 0.0
    files: int = 0
    bytes: int = 0
    created_repository: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    wal: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str = ""
    reason: str = ""
    trigger: str = "api"  # api, schedule
    retention: dict[str, Any] = field(default_factory=dict)  # after a scheduled run: the policy, what it removed
    # while InProgress: the step (copy, checksums, upload) and restic's progress of the upload
    step: str = ""
    steps_s: dict[str, float] = field(default_factory=dict)  # wall time of each step once done
    percent_done: float = 0.0
    bytes_done: int = 0
    total_bytes: int = 0

    def doc(self) -> dict[str, Any]:
        return asdict(self)

    def on_status(self, status: dict[str, Any]) -> None:
        """restic's JSON ``status`` message during the upload."""
        self.percent_done = float(status.get("percent_done") or 0.0)
        self.bytes_done = int(status.get("bytes_done") or 0)
        self.total_bytes = int(status.get("total_bytes") or self.total_bytes)


ChangeHook = Callable[[SelfRun], Awaitable[None]]
AfterHook = Callable[[Restic, SelfRun], Awaitable[None]]


class SelfBackup:
    """Backs up ``data_dir`` of this server (``db`` is its telemetry database, whose lock freezes flushes)."""

    def __init__(self, data_dir: Path, db: TelemetryDB | None, *, locks: RepoLocks, stats: BackupStats,
                 on_change: ChangeHook | None = None, host: str | None = None, outside: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.db = db
        self.locks = locks
        self.stats = stats
        self.on_change = on_change
        self.host = host or socket.gethostname()
        self.runs: list[SelfRun] = []
        self.outside = list(outside)  # state not in the data directory: named in every run's warnings
        self._removals: dict[Path, asyncio.Task[None]] = {}  # staging directories being removed
        self._not_sqlite: NotSqlite = {}  # files found not to be SQLite databases: not opened again unchanged

    def _staging(self, repo: str) -> Path:
        """One fixed directory per repository: restic finds the previous snapshot of the same path as its
        parent and skips unchanged files; runs to one repository are serialised, so it is never shared."""
        return self.data_dir / STAGING / f"self-{hashlib.sha256(repo.encode()).hexdigest()[:16]}"

    async def settled(self) -> None:
        """Wait until the staging directories of finished runs are removed."""
        while self._removals:
            await asyncio.gather(*self._removals.values(), return_exceptions=True)

    def _remove_later(self, staging: Path) -> None:
        """Set ``staging`` (and what a crashed run left beside it) aside at once and remove it in a thread:
        removing 20k hard links takes most of a second, which the run need not wait for."""
        try:
            old = _set_aside(staging)
        except OSError as e:  # the next run tries again; this one's outcome stands
            log.warning("setting the staging directory aside failed", extra={"path": str(staging), "error": str(e)})
            return
        for p in old:
            if p not in self._removals:
                task = asyncio.get_running_loop().create_task(asyncio.to_thread(shutil.rmtree, p, True))
                self._removals[p] = task
                task.add_done_callback(lambda _t, p=p: self._removals.pop(p, None))  # type: ignore[misc]

    async def run(self, restic: Restic, *, trigger: str = "api", after: AfterHook | None = None) -> SelfRun:
        """One self-backup into ``restic``'s repository (created if absent); the run, Completed or Failed.
        ``after`` runs once the snapshot is written, still holding the repository's lock (the schedule's
        retention; it handles its own failures)."""
        run = self._start(restic.repo, trigger)
        t0 = time.monotonic()
        async with self.locks.of(restic.repo):
            try:
                await self._run(restic, run)
                if after is not None:  # before Completed: a listed Completed run has its retention done
                    await after(restic, run)
                run.phase = "Completed"
            except ResticError as e:
                run.phase, run.reason, run.error = "Failed", e.reason, e.message
            except OSError as e:
                run.phase, run.reason, run.error = "Failed", "copy", f"copying the data directory: {e}"
        return await self._finish(run, t0)

    def _start(self, repository: str, trigger: str) -> SelfRun:
        run = SelfRun(repository=repository, started=time.time(), trigger=trigger)
        self.runs = [*self.runs[-(_MAX_RUNS - 1):], run]
        return run

    async def failed(self, repository: str, reason: str, error: str, *, trigger: str) -> SelfRun:
        """Record a run that could not start (no password): listed, counted and a change event, as any run."""
        run = self._start(repository, trigger)
        run.phase, run.reason, run.error = "Failed", reason, error
        return await self._finish(run, time.monotonic())

    async def _finish(self, run: SelfRun, t0: float) -> SelfRun:
        run.finished = time.time()
        run.duration_s = time.monotonic() - t0
        self.stats.observe("self", "pitwall", run.repository, ok=run.phase == "Completed", duration_s=run.duration_s,
                           bytes_added=int(run.summary.get("data_added", 0)))
        if self.on_change is not None:
            try:
                await self.on_change(run)
            except Exception:
                log.exception("recording the self-backup change event failed")
        return run

    async def _run(self, restic: Restic, run: SelfRun) -> None:
        staging = self._staging(restic.repo)
        await self.settled()  # the last run's removal, normally long done
        self._remove_later(staging)  # left by a crash
        t = time.monotonic()

        def step(name: str) -> None:  # the next step; the one before timed in ``steps_s``
            nonlocal t
            now = time.monotonic()
            if run.step:
                run.steps_s[run.step] = round(now - t, 3)
            run.step, t = name, now

        try:
            step("copy")
            copy = await asyncio.to_thread(partial(copy_data_dir, self.data_dir, staging, self.db, self._not_sqlite,
                                                   in_place=_reaches(staging, self.data_dir)))
            run.files, run.bytes, run.lock_held_s = copy.files, copy.bytes, copy.lock_held_s
            run.wal, run.warnings = copy.wal, list(copy.warnings)
            run.warnings += [f"{what} is outside the data directory and not in this backup" for what in self.outside]
            step("checksums")  # what a restore drill verifies: the copies hashed, the links listed
            await asyncio.to_thread(write_checksums_of, staging, [*copy.copied, MANIFEST], copy.linked)
            step("upload")
            targets = _targets(staging, self.data_dir, copy.live)

            async def backup() -> BackupSummary:
                return await restic.backup(staging, tags=[SELF_TAG], host=self.host, ignore_ctime=True,
                                           on_status=run.on_status, targets=targets, partial_ok=True)

            summary: BackupSummary = await with_stale_lock_retry(restic, lambda: self._backup_or_init(
                restic, run, backup), run.warnings)
            run.snapshot_id, run.summary = summary.snapshot_id, summary.raw
            run.warnings += [f"restic: {e}" for e in summary.errors]  # e.g. a pod's file removed meanwhile
            run.percent_done = 1.0
            step("")
        finally:
            self._remove_later(staging)

    @staticmethod
    async def _backup_or_init(restic: Restic, run: SelfRun,
                              backup: Callable[[], Awaitable[BackupSummary]]) -> BackupSummary:
        """``backup``; where restic finds no repository, create it and back up again. restic opens the
        repository itself, so asking first (``restic cat config``: a key derivation, about a second) is a
        cost every run would pay for what only the first needs. A wrong password fails ``backup`` as it
        failed the check."""
        try:
            return await backup()
        except ResticError as e:
            if e.reason != "no-repository":
                raise
        await restic.init()
        run.created_repository = True
        return await backup()


def _reaches(staging: Path, data_dir: Path) -> bool:
    """Whether ``../..`` from ``staging`` is the data directory itself, so restic can read live entries as
    ``../../NAME`` (not when the staging directory is a link to another disk: then everything is staged)."""
    staging.parent.mkdir(parents=True, exist_ok=True)
    return os.path.samefile(os.path.join(staging.parent, ".."), data_dir)  # ".." as the kernel resolves it


def _targets(staging: Path, data_dir: Path, live: Sequence[str]) -> list[str]:
    """restic's targets from inside ``staging``: what it holds, and the ``live`` entries of the data directory
    as ``../../NAME`` (restic drops a leading ``..`` in the tree: both land at the snapshot's root, as one
    staged tree would)."""
    # ./NAME: a name starting with "-" is never read as a flag
    return sorted([*(f"./{n}" for n in os.listdir(staging)), *(os.path.relpath(data_dir / n, staging) for n in live)])


def _set_aside(staging: Path) -> list[Path]:
    """Rename ``staging`` to a unique name beside it (one rename, however many files it holds); that and any
    earlier set-aside copy of it (a crash before their removal), to remove."""
    old: list[Path] = []
    if staging.exists():
        aside = staging.with_name(f"{staging.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        staging.rename(aside)
    if staging.parent.is_dir():
        old = [p for p in staging.parent.iterdir() if p.name.startswith(f"{staging.name}.old-")]
    return old


class RestoreError(Exception):
    """A self-restore that cannot go on (target not empty, no such snapshot, not a pitwall backup)."""


RestoreProgress = Callable[[int, int, int, int], None]  # bytes done, bytes in all, files done, files in all


async def restore_self(restic: Restic, data_dir: Path, snapshot: str | None = None, *,
                       on_progress: RestoreProgress | None = None, every_s: float = 0.5) -> dict[str, Any]:
    """Restore a self-backup into the empty (or absent) ``data_dir``; the restored manifest plus the snapshot.

    ``snapshot`` is an id (or ``latest``); by default the newest ``pitwall-self`` snapshot. Nothing is
    overwritten: a non-empty ``data_dir`` is refused. ``on_progress`` is called every ``every_s`` while restic
    runs, with what the directory holds so far against the snapshot's restore size (restic 0.14 reports no
    progress of a restore itself)."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise RestoreError(f"{data_dir} is not empty; restore into a fresh directory")
    snaps = await restic.snapshots(tags=[SELF_TAG])
    if not snaps:
        raise RestoreError(f"no {SELF_TAG} snapshot in {restic.repo}")
    if snapshot in (None, "", "latest"):
        chosen = snaps[-1]
    else:
        match = [s for s in snaps if str(s.get("id", "")).startswith(snapshot or "")
                 or s.get("short_id") == snapshot]
        if not match:
            raise RestoreError(f"no {SELF_TAG} snapshot {snapshot!r} in {restic.repo}")
        chosen = match[-1]
    data_dir.mkdir(parents=True, exist_ok=True)
    if on_progress is None:
        await restic.restore(str(chosen["id"]), data_dir)
    else:
        await _restore_watched(restic, str(chosen["id"]), data_dir, on_progress, every_s)
    manifest = read_manifest(data_dir)
    if manifest is None:
        raise RestoreError(f"snapshot {chosen['short_id']} has no {MANIFEST}: not a pitwall self-backup")
    _check_wal(data_dir, manifest)
    return {"snapshot": chosen, "manifest": manifest}


async def _restore_watched(restic: Restic, snap: str, data_dir: Path, on_progress: RestoreProgress,
                           every_s: float) -> None:
    total_bytes, total_files = await restic.restore_size(snap)
    task = asyncio.create_task(restic.restore(snap, data_dir))
    while not task.done():
        await asyncio.wait([task], timeout=every_s)
        done_bytes, done_files = await asyncio.to_thread(_tree_usage, data_dir)
        on_progress(min(done_bytes, total_bytes), total_bytes, min(done_files, total_files), total_files)
    await task


def _tree_usage(root: Path) -> tuple[int, int]:
    """(bytes, nodes) under ``root`` now: restic's restore size counts directories as files too."""
    size = files = 0
    for dirpath, dirs, names in os.walk(root):
        files += len(dirs)
        for n in names:
            try:
                size += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                continue
            files += 1
    return size, files


def _check_wal(data_dir: Path, manifest: dict[str, Any]) -> None:
    """Every WAL segment the manifest names is back at its recorded size (restic restores whole files)."""
    for pillar, segs in (manifest.get("wal") or {}).items():
        for seg in segs:
            if seg["segment"] < 0:
                continue
            p = data_dir / "wal" / pillar / f"{seg['segment']:08d}.wal"
            if not p.is_file() or p.stat().st_size != seg["bytes"]:
                raise RestoreError(f"restored WAL segment {p.name} of {pillar} does not match the manifest: "
                                   + json.dumps(seg))
