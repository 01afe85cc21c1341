"""``pitwall.dev/v1`` RestoreDrill: restore a backup on a schedule and prove it is usable.

A run (leader only, like the Velero controllers): pick the snapshot(s) (a
Velero Backup, a Schedule's newest Completed Backup, or a restic repository's
newest snapshot), ``restic check --read-data-subset`` each repository (the
pack side), ``restic restore`` into a scratch directory under the data
directory, compare every restored file's sha256 with the ``pitwall-sha256.json``
manifest the backup wrote (the file side), run the ``expect`` checks and the
``verify`` command, remove the scratch directory. The status records the
result, the measured RTO (``durationSeconds``) and RPO (``dataAgeSeconds``:
restore time minus the snapshot's time) and the last runs; each run is an
Event, a change event and the ``pitwall_restore_drill_*`` gauges.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pitwall.backup.checksums import verify_checksums
from pitwall.backup.restic import Restic, ResticError, _read_bounded
from pitwall.backup.selfbackup import RepoLocks
from pitwall.backup.stats import BackupStats
from pitwall.backup.velero import (
    API_VERSION as VELERO,
)
from pitwall.backup.velero import (
    LABEL_SCHEDULE_NAME,
    SNAPSHOTS_ANNOTATION,
    LocationError,
    location_of,
    parse_duration,
    parse_time,
    repository_for,
    rfc3339,
)
from pitwall.controllers import CronError, Schedule, object_key, record_event
from pitwall.kube import KubeClient, NotFoundError

__all__ = ["DRILL_API_VERSION", "DrillReconciler", "DrillRun"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
DRILL_API_VERSION = "pitwall.dev/v1"
KIND = "RestoreDrill"
DEFAULT_HISTORY = 10
DEFAULT_VERIFY_TIMEOUT = timedelta(minutes=5)
DEFAULT_SECRET_KEY = "repository-password"
_MAX_OUTPUT = 4000  # characters of a verify command's output kept in the message
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
DrillChangeHook = Callable[[str, Obj], Awaitable[None]]  # (summary, drill)


class DrillFailure(Exception):
    """The drill ran and the backup did not pass (the message says which check)."""


class DrillInvalid(Exception):
    """The drill's spec cannot run (no source, a bad duration...): phase Invalid."""


@dataclass
class _Target:
    """One snapshot to restore: its repository, id, time and the sub-directory it goes to."""

    restic: Restic
    snapshot: str
    time: datetime
    subdir: str


@dataclass
class DrillRun:
    """One drill run as the status history records it."""

    time: str
    result: str = "fail"
    message: str = ""
    durationSeconds: float = 0.0
    dataAgeSeconds: float | None = None
    snapshot: str = ""
    files: int = 0
    notes: list[str] = field(default_factory=list)

    def doc(self) -> Obj:
        d: Obj = {"time": self.time, "result": self.result, "message": self.message,
                  "durationSeconds": round(self.durationSeconds, 3), "snapshot": self.snapshot, "files": self.files}
        if self.dataAgeSeconds is not None:
            d["dataAgeSeconds"] = round(self.dataAgeSeconds, 3)
        return d


def _snapshot_time(doc: Obj) -> datetime:
    """restic's snapshot ``time`` (RFC 3339 with nanoseconds and an offset)."""
    text = str(doc.get("time", ""))
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if m is None:
        raise DrillFailure(f"snapshot {doc.get('short_id')}: unreadable time {text!r}")
    frac = (m.group(2) or ".0")[:7]
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(m.group(1) + frac + zone).astimezone(UTC)


class DrillReconciler:
    """Reconciles pitwall.dev/v1 RestoreDrills: a run at once, then at each cron time."""

    name = "restore-drill"
    primary = (DRILL_API_VERSION, KIND)
    secondary: Sequence[tuple[str, str]] = ()

    def __init__(self, client: KubeClient, *, locks: RepoLocks, stats: BackupStats, scratch_root: Path,
                 on_change: DrillChangeHook | None = None,
                 activate: Callable[[], Awaitable[None]] | None = None) -> None:
        self.client = client
        self.activate = activate  # loads the shipped alert rules once a drill exists
        self.locks = locks
        self.stats = stats
        self.scratch_root = scratch_root
        self.on_change = on_change

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        return [object_key(obj)]

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            d = await self.client.get(DRILL_API_VERSION, KIND, name, ns)
        except NotFoundError:
            self.stats.drop_gauges(drill=key)
            return None
        spec, st = d.get("spec") or {}, d.get("status") or {}
        if self.activate is not None:
            await self.activate()
        try:
            cron = Schedule.parse(str(spec.get("schedule") or ""))
        except CronError as e:
            if st.get("message") != f"invalid schedule: {e}":
                await self._status(d, {"phase": "Invalid", "message": f"invalid schedule: {e}"})
            return None
        now = datetime.now(UTC)
        last = parse_time(st.get("lastRunTime"))
        due = now if last is None else cron.next(last)
        if spec.get("suspend") or due is None:
            return None
        if due > now:
            return min((due - now).total_seconds(), 3600.0)
        d = await self._status(d, {"phase": "Running", "message": ""})
        run = await self.run(d)
        nxt = cron.next(datetime.now(UTC))
        await self._finish(d, run, nxt)
        return None if nxt is None else max((nxt - datetime.now(UTC)).total_seconds(), 0.05)

    async def _status(self, d: Obj, status: Obj) -> Obj:
        d.setdefault("apiVersion", DRILL_API_VERSION)
        d.setdefault("kind", KIND)
        out = await self.client.modify(d, lambda o: o.__setitem__("status", {**(o.get("status") or {}), **status}),
                                       status=True)
        return d if out is None else out

    async def _finish(self, d: Obj, run: DrillRun, nxt: datetime | None) -> None:
        m, spec = d["metadata"], d.get("spec") or {}
        key = f"{m['namespace']}/{m['name']}"
        limit = int(spec.get("historyLimit") or DEFAULT_HISTORY)
        history = [*((d.get("status") or {}).get("history") or []), run.doc()][-limit:]
        status: Obj = {"phase": "Invalid" if run.result == "invalid" else "Idle", "lastRunTime": run.time,
                       "lastResult": "fail" if run.result == "invalid" else run.result, "message": run.message,
                       "durationSeconds": round(run.durationSeconds, 3), "snapshot": run.snapshot,
                       "history": history}
        if run.dataAgeSeconds is not None:
            status["dataAgeSeconds"] = round(run.dataAgeSeconds, 3)
        if nxt is not None:
            status["nextRunTime"] = rfc3339(nxt)
        d = await self._status(d, status)
        ok = run.result == "pass"
        self.stats.set_gauge("pitwall_restore_drill_success", {"drill": key}, 1.0 if ok else 0.0)
        self.stats.set_gauge("pitwall_restore_drill_duration_seconds", {"drill": key}, run.durationSeconds)
        if run.dataAgeSeconds is not None:
            self.stats.set_gauge("pitwall_restore_drill_data_age_seconds", {"drill": key}, run.dataAgeSeconds)
        for n in run.notes:
            await record_event(self.client, d, "Warning", "DrillNote", n, self.name)
        summary = (f"restore drill {key}: passed, {run.files} files restored and verified in "
                   f"{run.durationSeconds:.1f}s, data {run.dataAgeSeconds or 0:.0f}s old" if ok
                   else f"restore drill {key}: failed: {run.message}")
        await record_event(self.client, d, "Normal" if ok else "Warning", "DrillPassed" if ok else "DrillFailed",
                           summary[:1000], self.name)
        if self.on_change is not None:
            try:
                await self.on_change(summary[:1000], d)
            except Exception:
                log.exception("recording the restore drill's change event failed")

    async def run(self, d: Obj) -> DrillRun:
        """One drill of ``d`` now; never raises for the backup's own failures (they are the result)."""
        run = DrillRun(time=rfc3339(datetime.now(UTC)))
        t0 = time.monotonic()
        m = d["metadata"]
        scratch = self.scratch_root / f"drill-{hashlib.sha256(object_key(d).encode()).hexdigest()[:16]}"
        try:
            targets = await self._targets(m["namespace"], d.get("spec") or {})
            run.snapshot = ",".join(t.snapshot[:8] for t in targets)
            await asyncio.to_thread(shutil.rmtree, scratch, True)  # left by a crash
            scratch.mkdir(parents=True)
            await self._restore_and_verify(d, targets, scratch, run)
            run.result = "pass"
        except DrillInvalid as e:
            run.result, run.message = "invalid", str(e)
        except DrillFailure as e:
            run.message = str(e)
        except (ResticError, LocationError) as e:
            run.message = str(e)
        except OSError as e:
            run.message = f"scratch directory {scratch}: {e}"
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        run.durationSeconds = time.monotonic() - t0
        return run

    async def _restore_and_verify(self, d: Obj, targets: list[_Target], scratch: Path, run: DrillRun) -> None:
        spec = d.get("spec") or {}
        subset = str(spec.get("readDataSubset") or "100%")
        for t in targets:
            async with self.locks.of(t.restic.repo):
                try:
                    await t.restic.check(subset=subset)
                except ResticError as e:
                    self.stats.set_gauge("pitwall_backup_repository_check_success", {"repository": t.restic.repo}, 0)
                    raise DrillFailure(f"repository {t.restic.repo} failed restic check "
                                       f"--read-data-subset={subset}: {e.message}") from None
                self.stats.set_gauge("pitwall_backup_repository_check_success", {"repository": t.restic.repo}, 1)
                dest = scratch / t.subdir if t.subdir else scratch
                dest.mkdir(parents=True, exist_ok=True)
                await t.restic.restore(t.snapshot, dest)
        restored_at = datetime.now(UTC)
        run.dataAgeSeconds = max((restored_at - min(t.time for t in targets)).total_seconds(), 0.0)
        for t in targets:
            dest = scratch / t.subdir if t.subdir else scratch
            got = await asyncio.to_thread(verify_checksums, dest)
            if got is None:
                run.notes.append(f"snapshot {t.snapshot[:8]} has no pitwall-sha256.json (made before checksum "
                                 "manifests); its files are verified by restic check only")
                continue
            n, problems = got
            if problems:
                raise DrillFailure(f"snapshot {t.snapshot[:8]}: {len(problems)} of {n} restored files do not match "
                                   f"the backup's checksums: " + "; ".join(problems[:10]))
        run.files = await asyncio.to_thread(_count_files, scratch)
        await asyncio.to_thread(_expect, spec.get("expect") or {}, scratch, run.files)
        if spec.get("verify"):
            await _verify(spec["verify"], scratch)

    async def _targets(self, ns: str, spec: Obj) -> list[_Target]:
        src = spec.get("source") or {}
        given = [k for k in ("backupName", "scheduleName", "repository") if src.get(k)]
        if len(given) != 1:
            raise DrillInvalid("source: exactly one of backupName, scheduleName or repository is required")
        if src.get("repository"):
            return [await self._repository_target(ns, src)]
        b = await self._backup(ns, src)
        snaps = json.loads((b["metadata"].get("annotations") or {}).get(SNAPSHOTS_ANNOTATION) or "{}")
        if not snaps:
            raise DrillFailure(f"backup {b['metadata']['name']} holds no snapshots (no namespace was backed up)")
        bsl = await location_of(self.client, ns, (b.get("spec") or {}).get("storageLocation"))
        out: list[_Target] = []
        for bns, snap in sorted(snaps.items()):
            restic = await repository_for(self.client, bsl, bns, writing=False)
            out.append(_Target(restic, snap, await _time_of(restic, snap), bns))
        return out

    async def _backup(self, ns: str, src: Obj) -> Obj:
        if src.get("backupName"):
            try:
                b = await self.client.get(VELERO, "Backup", src["backupName"], ns)
            except NotFoundError:
                raise DrillFailure(f"backup {ns}/{src['backupName']} not found") from None
            phase = (b.get("status") or {}).get("phase")
            if phase != "Completed":
                raise DrillFailure(f"backup {ns}/{src['backupName']} is {phase or 'New'}, not Completed")
            return b
        items = (await self.client.list(VELERO, "Backup", ns,
                                        label_selector=f"{LABEL_SCHEDULE_NAME}={src['scheduleName']}")).items
        done = [x for x in items if (x.get("status") or {}).get("phase") == "Completed"]
        if not done:
            raise DrillFailure(f"schedule {ns}/{src['scheduleName']} has no Completed backup")
        return max(done, key=lambda x: (x.get("status") or {}).get("startTimestamp") or "")

    async def _repository_target(self, ns: str, src: Obj) -> _Target:
        ref = src.get("passwordSecretRef") or {}
        if not ref.get("name"):
            raise DrillInvalid("source.passwordSecretRef.name: the Secret with the repository password is required")
        key = str(ref.get("key") or DEFAULT_SECRET_KEY)
        try:
            secret = await self.client.get("v1", "Secret", ref["name"], ns)
        except NotFoundError:
            raise DrillFailure(f"secret {ns}/{ref['name']} not found") from None
        raw = (secret.get("data") or {}).get(key)
        password = base64.b64decode(raw).decode() if raw else ""
        if not password:
            raise DrillFailure(f"secret {ns}/{ref['name']} has no key {key}")
        restic = Restic(str(src["repository"]), password)
        snaps = await restic.snapshots()
        want = str(src.get("snapshot") or "")
        match = [s for s in snaps if not want or str(s.get("id", "")).startswith(want) or s.get("short_id") == want]
        if not match:
            raise DrillFailure(f"no snapshot {want or ''} in {restic.repo}".replace("  ", " "))
        chosen = match[-1]
        return _Target(restic, str(chosen["id"]), _snapshot_time(chosen), "")


async def _time_of(restic: Restic, snap: str) -> datetime:
    for s in await restic.snapshots():
        if str(s.get("id", "")).startswith(snap) or s.get("short_id") == snap:
            return _snapshot_time(s)
    raise DrillFailure(f"snapshot {snap[:8]} is not in {restic.repo} (forgotten?)")


def _count_files(root: Path) -> int:
    return sum(len(files) for _d, _s, files in os.walk(root))


def _inside(root: Path, rel: str, what: str) -> Path:
    p = (root / rel).resolve()
    if not p.is_relative_to(root.resolve()):
        raise DrillInvalid(f"expect.{what}: {rel!r} is outside the restored directory")
    return p


def _expect(expect: Obj, root: Path, files: int) -> None:
    """The spec's ``expect`` checks on the restored tree; DrillFailure naming the first that fails."""
    want = expect.get("minFiles")
    if want is not None and files < int(want):
        raise DrillFailure(f"expect.minFiles: {files} files restored, at least {want} expected")
    for rel in expect.get("paths") or []:
        if not _inside(root, str(rel), "paths").exists():
            raise DrillFailure(f"expect.paths: {rel} is not in the restored backup")
    for chk in expect.get("sqlite") or []:
        path, table, min_rows = str(chk.get("path")), str(chk.get("table")), int(chk.get("minRows", 0))
        if not _TABLE.match(table):
            raise DrillInvalid(f"expect.sqlite: table {table!r} is not a plain SQL identifier")
        db = _inside(root, path, "sqlite")
        if not db.is_file():
            raise DrillFailure(f"expect.sqlite: {path} is not in the restored backup")
        try:
            with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
                rows = int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
        except sqlite3.Error as e:
            raise DrillFailure(f"expect.sqlite: {path} table {table}: {e}") from None
        if rows < min_rows:
            raise DrillFailure(f"expect.sqlite: {path} table {table} has {rows} rows, at least {min_rows} expected")


async def _verify(verify: Obj, root: Path) -> None:
    """Run the verify command in the restored directory; DrillFailure on a non-zero exit or timeout."""
    argv = [str(x) for x in verify.get("command") or []]
    if not argv:
        raise DrillInvalid("verify.command: a command (list of arguments) is required")
    try:
        timeout = parse_duration(verify.get("timeout"), DEFAULT_VERIFY_TIMEOUT).total_seconds()
    except ValueError as e:
        raise DrillInvalid(f"verify.timeout: {e}") from None
    env = {**os.environ, "PITWALL_RESTORE_DIR": str(root)}
    try:
        proc = await asyncio.create_subprocess_exec(*argv, cwd=root, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        raise DrillFailure(f"verify: cannot run {argv[0]}: {e}") from None
    try:
        out = await asyncio.wait_for(_read_bounded(proc.stdout, _MAX_OUTPUT * 4), timeout)
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise DrillFailure(f"verify: {json.dumps(argv)} did not finish in {timeout:.0f}s") from None
    if proc.returncode != 0:
        text = out.decode(errors="replace").strip()[-_MAX_OUTPUT:]
        raise DrillFailure(f"verify: {json.dumps(argv)} exited {proc.returncode}: {text}")
