"""Builds the backup capability as a part of the server: the self-backup admin API, the backup metrics and,
with the control plane, Velero's CRDs and their controllers (leader-gated like the others)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitwall.backup.alerts import RuleSink, load_shipped_rules
from pitwall.backup.api import backup_router
from pitwall.backup.controllers import (
    BackupReconciler,
    ChangeHook,
    LocationReconciler,
    RestoreReconciler,
    ScheduleReconciler,
)
from pitwall.backup.crds import restore_drill_crd, velero_crds
from pitwall.backup.drill import DRILL_API_VERSION, DrillReconciler
from pitwall.backup.selfbackup import RepoLocks, SelfBackup, SelfRun
from pitwall.backup.selfschedule import SelfSchedule
from pitwall.backup.settings import SelfBackupSettings
from pitwall.backup.snapshot import STAGING
from pitwall.backup.stats import BackupStats
from pitwall.backup.velero import API_VERSION as VELERO
from pitwall.backup.velero import PodHost
from pitwall.backup.views import BackupReads
from pitwall.controllers import ControllerManager, ControllerRunner
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.kube import KubeAPI, KubeClient
from pitwall.metrics import Appender
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.revstore.election import Election

__all__ = ["BackupPart", "build_backup_part", "build_velero_runners"]

log = logging.getLogger(__name__)


def _change_hook(changes: ChangeSink) -> Callable[[SelfRun], Any]:
    async def record(run: SelfRun) -> None:
        ok = run.phase == "Completed"
        summary = (f"pitwall self-backup to {run.repository}: snapshot {run.snapshot_id}, "
                   f"{int(run.summary.get('data_added', 0))} bytes added" if ok else
                   f"pitwall self-backup to {run.repository} failed ({run.reason}): {run.error[:300]}")
        await changes.record(ChangeEvent(kind="backup", summary=summary, source="pitwall-backup",
                                         details={"phase": run.phase, "repository": run.repository,
                                                  "snapshot": run.snapshot_id, "duration_s": run.duration_s,
                                                  "data_added": run.summary.get("data_added", 0)}))
    return record


def _drill_change_hook(changes: ChangeSink) -> Callable[[str, dict[str, Any]], Any]:
    async def record(summary: str, obj: dict[str, Any]) -> None:
        m, st = obj["metadata"], obj.get("status") or {}
        await changes.record(ChangeEvent(kind="restore", summary=summary, source="pitwall-restore-drill",
                                         service=f"{m['namespace']}/{m['name']}",
                                         details={"result": st.get("lastResult", ""),
                                                  "duration_s": st.get("durationSeconds"),
                                                  "data_age_s": st.get("dataAgeSeconds"),
                                                  "snapshot": st.get("snapshot", "")}))
    return record


class ShippedRules:
    """Loads the shipped backup alert rules into the rule manager once there is something they watch: a Velero
    Schedule or a RestoreDrill (at start, or when a controller first reconciles one). Their series exist only
    then, so a server without them carries no idle rules."""

    name = "backup-rules"

    def __init__(self, rules: RuleSink, client: KubeClient) -> None:
        self.rules = rules
        self.client = client
        self.loaded = False
        self._lock = asyncio.Lock()

    async def activate(self) -> None:
        """Load the rules (once; a failure is logged and retried at the next call)."""
        if self.loaded:
            return
        async with self._lock:
            if self.loaded:
                return
            try:
                await load_shipped_rules(self.rules)
                self.loaded = True
            except Exception:
                log.exception("loading the shipped backup alert rules failed")

    async def start(self) -> None:
        """Load at once when objects exist (every server, the leader or not: each runs its own rules)."""
        for api_version, kind in ((VELERO, "Schedule"), (DRILL_API_VERSION, "RestoreDrill")):
            if (await self.client.list(api_version, kind, limit=1)).items:
                await self.activate()
                return

    async def stop(self) -> None:
        """The groups stay with the rule manager, which stops them itself."""


def _velero_change_hook(changes: ChangeSink) -> ChangeHook:
    async def record(kind: str, summary: str, obj: dict[str, Any]) -> None:
        m = obj["metadata"]
        await changes.record(ChangeEvent(kind="backup" if kind == "backup" else "restore", summary=summary,
                                         source="velero", service=f"{m['namespace']}/{m['name']}",
                                         details={"phase": (obj.get("status") or {}).get("phase", "")}))
    return record


@dataclass
class BackupPart:
    """The backup capability: ``/api/backup/v1`` and the backup metrics."""

    self_backup: SelfBackup
    stats: BackupStats
    locks: RepoLocks
    manager: ControllerManager | None = None  # Velero's controllers and drills, with the control plane
    rules: ShippedRules | None = None
    kube: KubeAPI | None = None
    schedule: SelfSchedule | None = None  # backup.self: the scheduled self-backup
    name: str = "backup"

    def components(self) -> Sequence[Component]:
        return [self.stats, *([self.manager] if self.manager is not None else []),
                *([self.rules] if self.rules is not None else []),
                *([self.schedule] if self.schedule is not None else [])]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        client = self.kube.client if self.kube is not None else None
        return [Mount(backup_router(self.self_backup, lambda: client), server_wide=True)]

    def reads(self) -> BackupReads:
        """The read view of backups the UI's backups pages take."""
        client = self.kube.client if self.kube is not None else None
        return BackupReads(lambda: client, self.self_backup)

    async def reload(self, settings: Any) -> None:
        """Nothing to reload."""

    def register_metrics(self, metrics: SelfMetrics) -> None:
        metrics.registry.register(self.stats)


def build_backup_part(data_dir: Path, db: TelemetryDB, *, appender: Appender | None = None,
                      changes: ChangeSink | None = None, kube: KubeAPI | None = None,
                      election: Election | None = None, host: PodHost | None = None,
                      outside: Sequence[str] = (), rules: RuleSink | None = None,
                      self_settings: SelfBackupSettings | None = None) -> BackupPart:
    """Self-backup of ``data_dir`` (whose telemetry database is ``db``); figures appended to ``appender``,
    each run a change event in ``changes``. With ``kube`` (call before it starts): Velero's CRDs and
    controllers, run while ``election`` is won, hooks and volumes through ``host`` (the kubelet). ``outside``
    names state kept outside the data directory (each self-backup warns that it does not hold it). ``rules``:
    the rule manager the shipped alert rules are loaded into (with the control plane, once a Velero Schedule or a
    RestoreDrill exists). ``self_settings`` (``backup.self``): the scheduled self-backup, leader-gated by
    ``election``."""
    locks = RepoLocks()
    stats = BackupStats(appender)
    self_backup = SelfBackup(data_dir, db, locks=locks, stats=stats,
                             on_change=_change_hook(changes) if changes is not None else None, outside=outside)
    manager = None
    shipped = None
    if kube is not None:
        kube.add_builtin_crds([*velero_crds(), restore_drill_crd()])
        shipped = ShippedRules(rules, kube.client) if rules is not None else None
        activate = shipped.activate if shipped is not None else None
        runners = build_velero_runners(kube, locks=locks, stats=stats, host=host, changes=changes,
                                       staging_root=data_dir / STAGING, activate=activate)
        drills = DrillReconciler(kube.client, locks=locks, stats=stats, scratch_root=data_dir / STAGING,
                                 on_change=_drill_change_hook(changes) if changes is not None else None,
                                 activate=activate)
        runners.append(ControllerRunner(kube.client, drills, workers=1, resync_s=300.0))
        manager = ControllerManager(runners, election=election)
    schedule = None
    if self_settings is not None:
        schedule = SelfSchedule(self_backup, self_settings, election=election,
                                activate=shipped.activate if shipped is not None else None)
    return BackupPart(self_backup=self_backup, stats=stats, locks=locks, manager=manager, kube=kube,
                      rules=shipped, schedule=schedule)


def build_velero_runners(kube: KubeAPI, *, locks: RepoLocks, stats: BackupStats, host: PodHost | None = None,
                         changes: ChangeSink | None = None, staging_root: Path | None = None,
                         activate: Callable[[], Awaitable[None]] | None = None) -> list[ControllerRunner]:
    """A runner each for Backup, Restore, Schedule and BackupStorageLocation (start them after the API)."""
    hook = _velero_change_hook(changes) if changes is not None else None
    client = kube.client
    return [ControllerRunner(client, BackupReconciler(kube, locks=locks, stats=stats, host=host, on_change=hook,
                                                              staging_root=staging_root),
                             workers=2, resync_s=300.0),
            ControllerRunner(client, RestoreReconciler(kube, locks=locks, on_change=hook, host=host), workers=1,
                             resync_s=300.0),
            ControllerRunner(client, ScheduleReconciler(client, stats, activate), workers=1, resync_s=60.0),
            ControllerRunner(client, LocationReconciler(client), workers=1, resync_s=60.0)]
