"""Velero's CustomResourceDefinitions (``velero.io/v1`` Backup, Restore, Schedule, BackupStorageLocation),
vendored at a release tag, and pitwall's own RestoreDrill kind.

See ``PROVENANCE.md`` beside this file for where they come from.
"""

from __future__ import annotations

import copy
from typing import Any

from pitwall.core.vendored import yaml_documents

__all__ = ["CRD_FILES", "restore_drill_crd", "velero_crds"]

CRD_FILES = ("backupstoragelocations", "backups", "restores", "schedules")


def _load(name: str, group: str = "velero.io") -> dict[str, Any]:
    (doc,) = yaml_documents(__package__, f"{group}_{name}.yaml")
    return dict(doc)  # shared: the callers copy


def velero_crds() -> list[dict[str, Any]]:
    """The CRD objects for ``KubeAPI.add_builtin_crds`` (parsed once per process; callers get copies)."""
    return [copy.deepcopy(_load(n)) for n in CRD_FILES]


def restore_drill_crd() -> dict[str, Any]:
    """pitwall's own ``pitwall.dev/v1`` RestoreDrill CRD (a copy)."""
    return copy.deepcopy(_load("restoredrills", "pitwall.dev"))
