"""Builds the backup capability as a part of the server: the self-backup admin API and the backup metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitwall.backup.api import backup_router
from pitwall.backup.selfbackup import RepoLocks, SelfBackup, SelfRun
from pitwall.backup.stats import BackupStats
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.metrics import Appender
from pitwall.storage.duckdb import TelemetryDB

__all__ = ["BackupPart", "build_backup_part"]


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


@dataclass
class BackupPart:
    """The backup capability: ``/api/backup/v1`` and the backup metrics."""

    self_backup: SelfBackup
    stats: BackupStats
    locks: RepoLocks
    name: str = "backup"

    def components(self) -> Sequence[Component]:
        return [self.stats]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return [Mount(backup_router(self.self_backup), server_wide=True)]

    async def reload(self, settings: Any) -> None:
        """Nothing to reload."""

    def register_metrics(self, metrics: SelfMetrics) -> None:
        metrics.registry.register(self.stats)


def build_backup_part(data_dir: Path, db: TelemetryDB, *, appender: Appender | None = None,
                      changes: ChangeSink | None = None) -> BackupPart:
    """Self-backup of ``data_dir`` (whose telemetry database is ``db``); figures appended to ``appender``,
    each run a change event in ``changes``."""
    locks = RepoLocks()
    stats = BackupStats(appender)
    self_backup = SelfBackup(data_dir, db, locks=locks, stats=stats,
                             on_change=_change_hook(changes) if changes is not None else None)
    return BackupPart(self_backup=self_backup, stats=stats, locks=locks)
