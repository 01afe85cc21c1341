"""Backup and recovery: pitwall's own data directory (and, with the control plane, Velero's kinds) into
restic repositories that the real ``restic`` reads."""

from pitwall.backup.restic import BackupSummary, Restic, ResticError, password_from_env
from pitwall.backup.selfbackup import RepoLocks, RestoreError, SelfBackup, SelfRun, restore_self
from pitwall.backup.views import BackupReads

__all__ = ["BackupReads", "BackupSummary", "RepoLocks", "Restic", "ResticError", "RestoreError", "SelfBackup", "SelfRun",
           "password_from_env", "restore_self"]
