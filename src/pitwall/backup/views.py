"""Read-only views of backups for the admin API, the CLI's ``describe`` and the UI's backups pages.

``describe_backup`` and ``backup_log_lines`` are the one computation behind
``GET /api/backup/v1/backups/NS/NAME[/logs]`` (so ``pitwall backup describe``)
and the UI's backup page. ``BackupReads`` matches the UI's ``BackupsSource``
Protocol (structural typing: backup does not import the UI); the composition
root hands it over.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from pitwall.backup.drill import DRILL_API_VERSION
from pitwall.backup.restic import ResticError
from pitwall.backup.selfbackup import SelfBackup
from pitwall.backup.velero import API_VERSION as VELERO
from pitwall.backup.velero import (
    LABEL_SCHEDULE_NAME,
    LABEL_STORAGE_LOCATION,
    SNAPSHOTS_ANNOTATION,
    LocationError,
    location_of,
    repository_for,
)
from pitwall.kube import KubeClient, NotFoundError

__all__ = ["BACKUP_KINDS", "MAX_LIST", "BackupReads", "backup_log_lines", "backup_resources", "describe_backup",
           "events_about", "snapshot_contents"]

Obj = dict[str, Any]
MAX_LIST = 1000  # objects (and Events) one answer carries
MAX_RESOURCES = 5000  # resources one listing carries
LS_TIMEOUT_S = 60.0
# The kinds the backups pages show: name in the URL -> (apiVersion, kind).
BACKUP_KINDS: dict[str, tuple[str, str]] = {
    "backup": (VELERO, "Backup"),
    "restore": (VELERO, "Restore"),
    "schedule": (VELERO, "Schedule"),
    "restoredrill": (DRILL_API_VERSION, "RestoreDrill"),
}


async def events_about(client: KubeClient, kind: str, ns: str, name: str) -> list[Obj]:
    """The Events about one object, oldest first."""
    items = (await client.list("v1", "Event", ns, field_selector=f"involvedObject.name={name}",
                               limit=MAX_LIST)).items
    mine = [e for e in items if (e.get("involvedObject") or {}).get("kind") == kind
            and (e.get("involvedObject") or {}).get("name") == name]
    return sorted(mine, key=lambda e: (e.get("firstTimestamp") or "", e.get("lastTimestamp") or ""))


async def describe_backup(client: KubeClient, b: Obj) -> Obj:
    """``{"backup", "restores", "drills", "events"}``: the Backup with the Restores and RestoreDrills naming it
    (directly, or through its Schedule) and its Events, as ``velero backup describe`` gathers them."""
    ns, name = b["metadata"]["namespace"], b["metadata"]["name"]
    sched = (b["metadata"].get("labels") or {}).get(LABEL_SCHEDULE_NAME)
    restores = [x for x in (await client.list(VELERO, "Restore", ns, limit=MAX_LIST)).items
                if (x.get("spec") or {}).get("backupName") == name]
    drills = [x for x in (await client.list(DRILL_API_VERSION, "RestoreDrill", ns, limit=MAX_LIST)).items
              if ((x.get("spec") or {}).get("source") or {}).get("backupName") == name
              or (sched and ((x.get("spec") or {}).get("source") or {}).get("scheduleName") == sched)]
    return {"backup": b, "restores": restores, "drills": drills, "events": await events_about(client, "Backup", ns,
                                                                                              name)}


def _line(when: str, level: str, reason: str, msg: str) -> str:
    """One logfmt line as Velero's logs print them."""
    esc = msg.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'time="{when}" level={level} reason={reason} msg="{esc}"'


def _logfmt(e: Obj) -> str:
    count = int(e.get("count") or 1)
    return _line(str(e.get("lastTimestamp") or e.get("firstTimestamp") or ""),
                 "warning" if e.get("type") == "Warning" else "info", str(e.get("reason", "")),
                 str(e.get("message", ""))) + (f" count={count}" if count > 1 else "")


async def backup_log_lines(client: KubeClient, b: Obj) -> list[str]:
    """The Backup's log (``velero backup logs``): its Events (the controller's record of the run: phases, item
    errors and warnings, hook failures) oldest first as logfmt lines, then its restic snapshots."""
    m = b["metadata"]
    lines = [_logfmt(e) for e in await events_about(client, "Backup", m["namespace"], m["name"])]
    snaps = (m.get("annotations") or {}).get(SNAPSHOTS_ANNOTATION)
    if snaps:
        when = str((b.get("status") or {}).get("completionTimestamp") or "")
        lines.append(_line(when, "info", "Snapshots", f"restic snapshots by namespace: {snaps}"))
    return lines


def snapshot_contents(namespace_snapshot: str, nodes: list[Obj]) -> tuple[list[Obj], list[Obj]]:
    """What one snapshot of a Velero Backup holds, from ``restic ls --json`` nodes: the resources
    (``resources/<resource>/namespaces/<ns>/<name>.json``, as the backup controller writes them, and
    ``resources/<resource>/cluster/<name>.json`` with namespace "" for cluster-scoped ones) and, per pod
    volume (``volumes/<pod>/<volume>/...``), its files and bytes."""
    resources: list[Obj] = []
    volumes: dict[tuple[str, str], Obj] = {}
    for n in nodes:
        if n.get("type") != "file":
            continue
        parts = str(n.get("path", "")).strip("/").split("/")
        if len(parts) == 5 and parts[0] == "resources" and parts[2] == "namespaces":
            resources.append({"namespace": parts[3], "resource": parts[1], "name": parts[4].removesuffix(".json"),
                              "snapshot": namespace_snapshot[:8]})
        elif len(parts) == 4 and parts[0] == "resources" and parts[2] == "cluster":
            resources.append({"namespace": "", "resource": parts[1], "name": parts[3].removesuffix(".json"),
                              "snapshot": namespace_snapshot[:8]})
        elif len(parts) >= 4 and parts[0] == "volumes":
            v = volumes.setdefault((parts[1], parts[2]), {"pod": parts[1], "volume": parts[2], "files": 0,
                                                          "bytes": 0, "snapshot": namespace_snapshot[:8]})
            v["files"] += 1
            v["bytes"] += int(n.get("size") or 0)
    return resources, list(volumes.values())


async def backup_resources(client: KubeClient, b: Obj) -> Obj:
    """``{"resources", "volumes", "problems", "truncated"}``: what a Backup holds, listed from its restic
    snapshots (one ``restic ls`` per namespace, with its storage location's password); a repository that
    cannot be read is a problem line, the others are still listed."""
    m, spec = b["metadata"], b.get("spec") or {}
    try:
        snaps = json.loads((m.get("annotations") or {}).get(SNAPSHOTS_ANNOTATION) or "{}")
    except ValueError:
        snaps = {}
    out: Obj = {"resources": [], "volumes": [], "problems": [], "truncated": False}
    if not isinstance(snaps, dict) or not snaps:
        return out
    try:
        bsl = await location_of(client, m["namespace"], spec.get("storageLocation")
                                or (m.get("labels") or {}).get(LABEL_STORAGE_LOCATION))
    except LocationError as e:
        out["problems"].append(str(e))
        return out
    for ns, snap in sorted(snaps.items()):
        try:
            restic = await repository_for(client, bsl, str(ns), writing=False)
            nodes = await asyncio.wait_for(restic.ls(str(snap)), LS_TIMEOUT_S)
        except LocationError as e:
            out["problems"].append(f"{ns}: {e}")
            continue
        except ResticError as e:
            out["problems"].append(f"{ns}: restic ls {snap}: {e.message}")
            continue
        except TimeoutError:
            out["problems"].append(f"{ns}: restic ls {snap} took more than {LS_TIMEOUT_S:.0f}s")
            continue
        resources, volumes = snapshot_contents(str(snap), nodes)
        out["resources"].extend(resources)
        out["volumes"].extend(volumes)
    if len(out["resources"]) > MAX_RESOURCES:
        out["resources"], out["truncated"] = out["resources"][:MAX_RESOURCES], True
    return out


class BackupReads:
    """The reads the UI's backups pages make: Velero's kinds and RestoreDrills through the Kubernetes API
    (``client`` gives the control plane's client, None when it is off) and this server's self-backup runs."""

    def __init__(self, client: Callable[[], KubeClient | None], self_backup: SelfBackup) -> None:
        self.client = client
        self.self_backup = self_backup

    def kube_enabled(self) -> bool:
        """Whether there is a control plane (without one there are no Velero kinds, only self-backups)."""
        return self.client() is not None

    async def objects(self, kind: str, namespace: str = "") -> list[Obj]:
        """Objects of ``kind`` (a key of ``BACKUP_KINDS``) in ``namespace`` (all when empty)."""
        c = self.client()
        if c is None:
            return []
        api_version, k = BACKUP_KINDS[kind]
        try:
            return list((await c.list(api_version, k, namespace, limit=MAX_LIST)).items)
        except NotFoundError:
            return []

    async def object(self, kind: str, namespace: str, name: str) -> Obj | None:
        """One object, or None when absent."""
        c = self.client()
        if c is None:
            return None
        api_version, k = BACKUP_KINDS[kind]
        try:
            return await c.get(api_version, k, name, namespace)
        except NotFoundError:
            return None

    async def describe(self, namespace: str, name: str) -> Obj | None:
        """``describe_backup`` of one Backup with its log lines under ``"logs"``; None when absent."""
        c = self.client()
        b = await self.object("backup", namespace, name)
        if c is None or b is None:
            return None
        return {**await describe_backup(c, b), "logs": await backup_log_lines(c, b)}

    async def resources(self, namespace: str, name: str) -> Obj | None:
        """``backup_resources`` of one Backup (its restic snapshots listed); None when absent."""
        c = self.client()
        b = await self.object("backup", namespace, name)
        if c is None or b is None:
            return None
        return await backup_resources(c, b)

    async def events(self, kind: str, namespace: str, name: str) -> list[Obj]:
        """The Events about one object of ``kind`` (a key of ``BACKUP_KINDS``), oldest first."""
        c = self.client()
        return [] if c is None else await events_about(c, BACKUP_KINDS[kind][1], namespace, name)

    def self_runs(self) -> list[Obj]:
        """The self-backup runs since this server started, newest last (``SelfRun.doc()``)."""
        return [run.doc() for run in self.self_backup.runs]
