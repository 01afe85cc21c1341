"""The scheduled self-backup (``backup.self``): ``SelfBackup.run`` at each cron time, then retention.

One loop, so one run at a time; runs share ``RepoLocks`` with ``POST
/api/backup/v1/self`` and the Velero backups, so a scheduled run waits for an
API run to the same repository. With an election (the control plane's) only
the leader runs it, checked at each due time, as the controllers are gated:
servers sharing a state store back up once per schedule. After a Completed
run, still holding the repository's lock, ``restic forget --tag pitwall-self
--keep-*`` then ``prune`` apply the retention; the run records what it removed
(a retention failure is a warning of the run). A missed time (the server was
down) is not caught up: the next one is the next cron time, as CronJobs
without a deadline do after a long outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from pitwall.backup.restic import Restic, ResticError
from pitwall.backup.selfbackup import SELF_TAG, SelfBackup, SelfRun, with_stale_lock_retry
from pitwall.backup.settings import SelfBackupSettings
from pitwall.controllers import Schedule
from pitwall.core.tasks import Supervisor
from pitwall.storage.revstore.election import Election

__all__ = ["SelfSchedule"]

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
_GAUGE_LABELS = {"kind": "self", "name": "pitwall"}


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SelfSchedule:
    """Backs this server up on ``settings.schedule`` while it leads ``election`` (always without one)."""

    name = "self-backup-schedule"

    def __init__(self, backup: SelfBackup, settings: SelfBackupSettings, *, election: Election | None = None,
                 clock: Clock = _utcnow, activate: Callable[[], Awaitable[None]] | None = None) -> None:
        self.backup = backup
        self.settings = settings
        self.cron = Schedule.parse(settings.schedule, settings.time_zone)  # validated with the settings
        self.election = election
        self.clock = clock
        self.activate = activate  # loads the shipped alert rules ("no successful backup within 2x")
        self.tasks = Supervisor("self-backup")

    async def start(self) -> None:
        self._gauges()
        if self.activate is not None:
            await self.activate()
        self.tasks.spawn(self._loop(), name="schedule")

    async def stop(self) -> None:
        await self.tasks.stop()
        self.backup.stats.drop_gauges(**_GAUGE_LABELS)

    @property
    def healthy(self) -> bool:
        return self.tasks.healthy

    def _gauges(self) -> None:
        """The interval and start time, for the shipped "no successful backup within twice the schedule" rule."""
        first = self.cron.next(self.clock())
        second = self.cron.next(first) if first is not None else None
        if first is None or second is None:
            return
        self.backup.stats.set_gauge("pitwall_backup_schedule_interval_seconds", _GAUGE_LABELS,
                                    (second - first).total_seconds())
        self.backup.stats.set_gauge("pitwall_backup_schedule_created_timestamp_seconds", _GAUGE_LABELS, time.time())

    async def _loop(self) -> None:
        due = self.cron.next(self.clock())
        while due is not None:
            await asyncio.sleep(max((due - self.clock()).total_seconds(), 0.0))
            if self.election is None or self.election.is_leader:
                try:
                    await self.run_once()
                except Exception:  # a bug must not end the schedule: logged, the next time runs
                    log.exception("scheduled self-backup failed")
            due = self.cron.next(max(self.clock(), due))

    async def run_once(self) -> SelfRun:
        """One scheduled run: the backup, then the retention (the run, Completed or Failed)."""
        s = self.settings
        try:
            text = await asyncio.to_thread(s.password_file.read_text)
        except OSError as e:
            return await self.backup.failed(s.repository, "password",
                                            f"backup.self.password_file: {e.strerror or e}: {s.password_file}",
                                            trigger="schedule")
        password = text.splitlines()[0] if text else ""
        if not password:
            return await self.backup.failed(s.repository, "password",
                                            f"backup.self.password_file: {s.password_file} is empty",
                                            trigger="schedule")
        return await self.backup.run(Restic(s.repository, password), trigger="schedule", after=self._retain)

    async def _retain(self, restic: Restic, run: SelfRun) -> None:
        keep = self.settings.keep_args()
        if not keep:
            return
        run.step = "retention"
        try:
            removed = await with_stale_lock_retry(restic, lambda: restic.forget_policy([SELF_TAG], keep),
                                                  run.warnings)
            run.retention = {"policy": keep, "removed": removed}
        except (ResticError, ValueError) as e:  # ValueError: a forget report that is not restic's JSON
            run.warnings.append(f"retention (restic forget --tag {SELF_TAG} {' '.join(keep)} --prune) failed: "
                                f"{e.message if isinstance(e, ResticError) else e}")
        finally:
            run.step = ""
