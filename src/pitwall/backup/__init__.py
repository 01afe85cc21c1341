"""Backup and recovery: pitwall's own data directory (and, with the control plane, Velero's kinds) into
restic repositories that the real ``restic`` reads.

Names load on first use (``pitwall.core.exports``), so the CLI imports only what a command uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitwall.core.exports import lazy_exports

if TYPE_CHECKING:
    from pitwall.backup.restic import BackupSummary, Restic, ResticError, password_from_env
    from pitwall.backup.selfbackup import RepoLocks, RestoreError, SelfBackup, SelfRun, restore_self
    from pitwall.backup.views import BackupReads

_EXPORTS = {
    "BackupReads": "pitwall.backup.views",
    "BackupSummary": "pitwall.backup.restic",
    "RepoLocks": "pitwall.backup.selfbackup",
    "Restic": "pitwall.backup.restic",
    "ResticError": "pitwall.backup.restic",
    "RestoreError": "pitwall.backup.selfbackup",
    "SelfBackup": "pitwall.backup.selfbackup",
    "SelfRun": "pitwall.backup.selfbackup",
    "password_from_env": "pitwall.backup.restic",
    "restore_self": "pitwall.backup.selfbackup",
}

__all__ = ["BackupReads", "BackupSummary", "RepoLocks", "Restic", "ResticError", "RestoreError", "SelfBackup", "SelfRun",
           "password_from_env", "restore_self"]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
