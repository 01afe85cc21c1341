"""The ``backup:`` section of pitwall.yaml: the scheduled self-backup (``backup.self``).

Retention takes restic's ``forget --keep-*`` flags, named as restic names them
(``keep_last`` is ``--keep-last``); it applies to the ``pitwall-self`` snapshots
of the repository after each successful scheduled run.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = ["KEEP_FLAGS", "BackupSettings", "SelfBackupSettings"]

KEEP_FLAGS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


class SelfBackupSettings(BaseModel):
    """``backup.self``: back this server's data directory up on a cron schedule, leader only."""

    model_config = ConfigDict(extra="forbid")

    time_zone: str | None = Field(None, description="IANA zone the schedule is read in (UTC when unset)")
    schedule: str = Field(description="cron spec as the CronJob controller takes it (5 fields, @daily, "
                                      "@every 6h)")
    repository: str = Field(min_length=1, description="restic repository: a path or an sftp:/rest:/s3: URL")
    password_file: Path = Field(description="file whose first line is the repository password")
    keep_last: int | None = Field(None, ge=1, description="restic forget --keep-last")
    keep_hourly: int | None = Field(None, ge=1, description="restic forget --keep-hourly")
    keep_daily: int | None = Field(None, ge=1, description="restic forget --keep-daily")
    keep_weekly: int | None = Field(None, ge=1, description="restic forget --keep-weekly")
    keep_monthly: int | None = Field(None, ge=1, description="restic forget --keep-monthly")
    keep_yearly: int | None = Field(None, ge=1, description="restic forget --keep-yearly")
    keep_within: str | None = Field(None, description="restic forget --keep-within (a restic duration: 7d, 1y2m)")

    @field_validator("password_file")
    @classmethod
    def _password_file(cls, v: Path) -> Path:
        if not v.is_file():
            raise ValueError(f"no such file: {v}")
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str, info: ValidationInfo) -> str:
        # the CronJob controller's parser, imported when a schedule is set (config loads stay light)
        from pitwall.controllers import CronError, Schedule

        try:
            Schedule.parse(v, info.data.get("time_zone"))
        except CronError as e:
            raise ValueError(str(e)) from None
        return v

    def keep_args(self) -> list[str]:
        """restic ``forget`` flags for the retention set (empty: keep everything)."""
        out = [f"--{k.replace('_', '-')}={getattr(self, k)}" for k in KEEP_FLAGS if getattr(self, k) is not None]
        return out + ([f"--keep-within={self.keep_within}"] if self.keep_within else [])


class BackupSettings(BaseModel):
    """``backup``: the scheduled self-backup (Velero's kinds need no settings)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    self_: SelfBackupSettings | None = Field(None, alias="self")
