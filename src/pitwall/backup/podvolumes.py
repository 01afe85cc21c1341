"""File-system restore of pod volumes, as Velero's ``restore-wait`` init container and PodVolumeRestore do it.

A Backup copies a pod's emptyDir/hostPath volumes into its snapshot at
``volumes/<pod>/<volume>/...``; that layout is the backup's record of pod
volumes. When a Restore creates such a pod, the pod gets ``restore-wait``
as its first init container (Velero's name): a shell loop that waits until
each restored volume holds ``.velero/<restore uid>`` (the done file Velero's
node agent writes) and fails, printing the reason, if it holds
``.velero/<restore uid>.failed``. The Restore controller meanwhile waits for
the kubelet to create the pod's volume directories, copies the snapshot's
data into them and writes the done (or failed) file. So the pod's own
containers start only once their data is in place, and never on a volume
whose restore failed (the init container fails, and is retried by the pod's
restartPolicy, as a failing init container is).

Only emptyDir volumes are restored: Velero's file-system backup does not
restore hostPath volumes (their data is the host's), so a hostPath volume in
the snapshot is a warning naming where it is.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DONE_DIR", "RESTORE_WAIT", "PodVolumes", "add_restore_wait", "fill_volumes", "pod_volumes_in", "restorable"]

Obj = dict[str, Any]
RESTORE_WAIT = "restore-wait"
_LEGACY_WAIT = "restic-wait"  # the pre-1.10 name: a pod backed up after an old restore may carry it
DONE_DIR = ".velero"
_MOUNT_ROOT = "/restores"
_PRESENT_EVERY_S = 1.0  # how often a restore waiting for a pod to start checks that it still exists
_IMAGE = "velero/velero-restore-helper"  # a label only: pitwall runs the command as a host process


@dataclass
class PodVolumes:
    """A restored pod whose volumes come from the snapshot: where the data is, and where it goes."""

    namespace: str  # the pod's namespace after namespaceMapping
    name: str
    sources: dict[str, Path]  # volume name -> its data restored from the snapshot
    errors: list[str] = field(default_factory=list)


def pod_volumes_in(root: Path, pod_name: str) -> dict[str, Path]:
    """The volumes of ``pod_name`` (its name when backed up) in a snapshot restored under ``root``."""
    base = root / "volumes" / pod_name
    return {p.name: p for p in sorted(base.iterdir())} if base.is_dir() else {}


def _mount_env(volume: str) -> str:
    # the kubelet's rule (pitwall.node.volumes.mount_env), restated: the backup pillar imports no node internals
    return "PITWALL_MOUNT_" + "".join(c if c.isalnum() and c.isascii() else "_" for c in volume).upper()


def _wait_script(volumes: list[str], restore_uid: str) -> str:
    """What ``restore-wait`` runs: until every volume has its done file; a failed file fails it."""
    lines = []
    for v in volumes:
        d = f'"${{{_mount_env(v)}}}/{DONE_DIR}"'
        done, failed = f"{d}/{shlex.quote(restore_uid)}", f"{d}/{shlex.quote(restore_uid)}.failed"
        lines.append(f'until [ -f {done} ]; do if [ -f {failed} ]; then echo "volume {v}: restore failed:" >&2; '
                     f'cat {failed} >&2; exit 1; fi; sleep 0.2; done')
    lines.append(f'echo "restored volumes: {" ".join(volumes)}"')
    return "\n".join(lines)


def add_restore_wait(pod: Obj, volumes: list[str], restore_uid: str) -> None:
    """Make ``restore-wait`` the pod's first init container, mounting ``volumes`` (as Velero's restore
    action does; an earlier one, carried over from a previous restore, is replaced)."""
    spec = pod.setdefault("spec", {})
    inits = [c for c in spec.get("initContainers") or [] if c.get("name") not in (RESTORE_WAIT, _LEGACY_WAIT)]
    wait = {"name": RESTORE_WAIT, "image": _IMAGE, "command": ["sh", "-c", _wait_script(volumes, restore_uid)],
            "volumeMounts": [{"name": v, "mountPath": f"{_MOUNT_ROOT}/{v}"} for v in volumes]}
    spec["initContainers"] = [wait, *inits]


def restorable(pod: Obj, backed_up: dict[str, Path]) -> tuple[dict[str, Path], list[str]]:
    """The backed-up volumes to restore (those the pod declares as emptyDir) and a warning for each other."""
    kinds = {str(v.get("name")): v for v in (pod.get("spec") or {}).get("volumes") or []}
    keep: dict[str, Path] = {}
    warnings: list[str] = []
    m = pod.get("metadata") or {}
    for name, src in backed_up.items():
        v = kinds.get(name)
        if v is not None and "emptyDir" in v:
            keep[name] = src
        elif v is not None and "hostPath" in v:
            warnings.append(f"pod {m.get('namespace')}/{m.get('name')} volume {name}: hostPath volumes are not "
                            f"restored (their data is in the snapshot at /volumes/{m.get('name')}/{name})")
        else:
            warnings.append(f"pod {m.get('namespace')}/{m.get('name')} volume {name}: the pod has no such "
                            "emptyDir volume; not restored")
    return keep, warnings


async def fill_volumes(pv: PodVolumes, restore_uid: str, dirs_of: Callable[[str, str], dict[str, Path]],
                       timeout_s: float, present: Callable[[], Awaitable[bool]] | None = None) -> list[str]:
    """Wait (up to ``timeout_s``) for the kubelet to create the pod's volume directories, copy each volume's
    data in and write its done file, or its failed file with the reason; the errors, one per volume.
    ``present`` (checked every ``_PRESENT_EVERY_S`` while waiting) says whether the pod still exists: one
    deleted meanwhile never starts, so the wait ends at once with that error instead of at the timeout."""
    deadline = time.monotonic() + timeout_s
    checked = time.monotonic()
    dirs = dirs_of(pv.namespace, pv.name)
    while not all(v in dirs for v in pv.sources):
        if time.monotonic() >= deadline:
            return _not_restored(pv, dirs, f"the pod did not start on this node within {timeout_s:g}s")
        if present is not None and time.monotonic() - checked >= _PRESENT_EVERY_S:
            checked = time.monotonic()
            if not await present():
                return _not_restored(pv, dirs, "the pod was deleted before it started")
        await asyncio.sleep(0.2)
        dirs = dirs_of(pv.namespace, pv.name)
    errors = []
    for v, src in sorted(pv.sources.items()):
        err = await asyncio.to_thread(_fill_one, src, dirs[v], restore_uid)
        if err:
            errors.append(f"pod {pv.namespace}/{pv.name} volume {v}: {err}")
    return errors


def _not_restored(pv: PodVolumes, dirs: dict[str, Path], why: str) -> list[str]:
    return [f"pod {pv.namespace}/{pv.name} volume {v}: {why}; its data was not restored"
            for v in sorted(set(pv.sources) - set(dirs))]


def _fill_one(src: Path, dst: Path, restore_uid: str) -> str:
    marks = dst / DONE_DIR
    try:
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
        else:
            raise OSError(f"the snapshot holds a file, not a directory, at {src.name}")
        marks.mkdir(exist_ok=True)
        (marks / restore_uid).write_text("")
        return ""
    except (OSError, shutil.Error) as e:
        msg = str(e)[:1000]
        try:
            marks.mkdir(parents=True, exist_ok=True)
            (marks / f"{restore_uid}.failed").write_text(msg + "\n")
        except OSError:
            pass
        return msg
