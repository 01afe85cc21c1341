"""Velero's Backup, Restore and Schedule controllers (``controllers.Reconciler``s, leader-gated).

Backup: New -> InProgress -> Completed / PartiallyFailed / Failed (FailedValidation
with Velero's messages, ``velero.validate_backup``). The selected
objects (and the pods' emptyDir/hostPath volumes) go, one restic snapshot per
namespace, into the location's repositories; pre hooks run before a pod is
read, post hooks after. Item problems are counted in ``status.errors`` /
``status.warnings``, listed in the snapshot's ``pitwall-results.json`` and
as Events; a location that cannot be used fails the Backup with
``status.failureReason``. At ``status.expiration`` (``spec.ttl``, default
720h) the snapshots are forgotten (``restic forget --prune``) and the Backup
deleted. A Backup found InProgress that this process is not running (pitwall
stopped mid-backup) is marked Failed, as Velero does on start.
Cluster-scoped objects (``velero.ClusterScope``: ``includeClusterResources``,
the Namespace objects of the covered namespaces, the CRDs of backed-up custom
resources) go into one more snapshot, in the ``CLUSTER_KEY`` repository.

Restore: from ``backupName`` (or the newest finished Backup of
``scheduleName``), for ``includedNamespaces``/``includedResources``, with
``namespaceMapping``; in Velero's restore order (its default resource
priorities, CRDs and Namespaces first, each resource across every namespace
before the next; ``velero.restore_order``); an object that exists is left alone with a warning
(``existingResourcePolicy: none``, the default) or updated (``update``):
never silently overwritten. A Pod the restore creates gets its emptyDir
volumes' data back from the snapshot before its containers start
(``podvolumes``: Velero's ``restore-wait`` init container); a volume that
fails is an error of the Restore (PartiallyFailed).

Schedule: a Backup from ``spec.template`` at each cron time (the CronJob
controller's parser); the first one at once unless ``skipImmediately``;
``paused`` stops it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pitwall.backup.checksums import write_checksums
from pitwall.backup.podvolumes import PodVolumes, add_restore_wait, fill_volumes, pod_volumes_in, restorable
from pitwall.backup.restic import Restic, ResticError
from pitwall.backup.restorehooks import ExecHook, add_init_hooks, exec_hooks, run_exec_hooks
from pitwall.backup.selfbackup import RepoLocks, with_stale_lock_retry
from pitwall.backup.stats import BackupStats
from pitwall.backup.velero import (
    API_VERSION,
    CLUSTER_DIR,
    CLUSTER_KEY,
    DEFAULT_TTL,
    DEFAULT_VALIDATION,
    LABEL_BACKUP_NAME,
    LABEL_RESTORE_NAME,
    LABEL_SCHEDULE_NAME,
    LABEL_STORAGE_LOCATION,
    NON_RESTORABLE,
    SKIPPED_GROUPS,
    SKIPPED_KINDS,
    SNAPSHOTS_ANNOTATION,
    STATS_ANNOTATION,
    ClusterScope,
    Hook,
    LocationError,
    PodHost,
    Selection,
    backup_tags,
    hooks_for_pod,
    label_selectors,
    location_of,
    ordered_names,
    parse_duration,
    parse_time,
    repository_for,
    resource_dir,
    restore_order,
    rfc3339,
    run_hook,
    sort_by_order,
    validate_backup,
)
from pitwall.controllers import CronError, Schedule, object_key, record_event
from pitwall.kube import AlreadyExists, KubeAPI, KubeClient, KubeError, NotFoundError

__all__ = ["BackupReconciler", "LocationReconciler", "RestoreReconciler", "ScheduleReconciler"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
RESULTS = "pitwall-results.json"
TERMINAL = frozenset({"Completed", "PartiallyFailed", "Failed", "FailedValidation"})
_MAX_MESSAGES = 200
CRD_GROUP = "apiextensions.k8s.io"
_CRD_WAIT_S = 15.0  # how long a restored CRD may take to be served before its custom resources are created
ChangeHook = Callable[[str, str, Obj], Awaitable[None]]  # (kind "backup"/"restore", summary, object)


@dataclass
class _Result:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    items: int = 0
    total: int = 0
    bytes_added: int = 0
    bytes_processed: int = 0  # restic's total_bytes_processed over the namespaces: the backup's size

    def error(self, msg: str) -> None:
        self.errors.append(msg)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


def _strip(obj: Obj) -> Obj:
    """An object as restore creates it: no server-set metadata, no status."""
    m = dict(obj.get("metadata") or {})
    for k in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink",
              "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences"):
        m.pop(k, None)
    out = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    out["metadata"] = m
    return out


async def _set_status(client: KubeClient, obj: Obj, kind: str, status: Obj) -> Obj:
    """Merge ``status`` into the stored object's status; the object as stored after (as given if deleted)."""
    obj.setdefault("apiVersion", API_VERSION)
    obj.setdefault("kind", kind)
    out = await client.modify(obj, lambda o: o.__setitem__("status", {**(o.get("status") or {}), **status}),
                              status=True)
    return obj if out is None else out


class BackupReconciler:
    """Reconciles velero.io/v1 Backups."""

    name = "velero-backup"
    primary = (API_VERSION, "Backup")
    secondary: Sequence[tuple[str, str]] = ()

    def __init__(self, kube: KubeAPI, *, locks: RepoLocks, stats: BackupStats, host: PodHost | None = None,
                 on_change: ChangeHook | None = None, staging_root: Path | None = None) -> None:
        self.kube = kube
        self.staging_root = staging_root
        self.client = kube.client
        self.locks = locks
        self.stats = stats
        self.host = host
        self.on_change = on_change
        self.running: set[str] = set()

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        return [object_key(obj)]

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            b = await self.client.get(API_VERSION, "Backup", name, ns)
        except NotFoundError:
            return None
        phase = (b.get("status") or {}).get("phase") or "New"
        if phase in TERMINAL:
            return await self._expire(b)
        if phase == "InProgress":
            if key not in self.running:
                await _set_status(self.client, b, "Backup", {
                    "phase": "Failed", "completionTimestamp": rfc3339(datetime.now(UTC)),
                    "failureReason": "found a backup with status InProgress during the server starting, "
                                     "mark it as Failed"})
            return None
        self.running.add(key)
        try:
            await self._run(b)
        finally:
            self.running.discard(key)
        return 1.0  # then the terminal branch schedules the expiry

    async def _expire(self, b: Obj) -> float | None:
        exp = parse_time((b.get("status") or {}).get("expiration"))
        if exp is None:
            return None
        left = (exp - datetime.now(UTC)).total_seconds()
        if left > 0:
            return min(left, 3600.0)
        snaps = json.loads((b["metadata"].get("annotations") or {}).get(SNAPSHOTS_ANNOTATION) or "{}")
        m = b["metadata"]
        try:
            bsl = await location_of(self.client, m["namespace"], (b.get("spec") or {}).get("storageLocation"))
            for ns, snap in sorted(snaps.items()):
                restic = await repository_for(self.client, bsl, ns, writing=True)
                async with self.locks.of(restic.repo):
                    notes: list[str] = []
                    await with_stale_lock_retry(restic, _forget(restic, snap), notes)
                    for n in notes:
                        await record_event(self.client, b, "Warning", "StaleLockRemoved", n, self.name)
        except (LocationError, ResticError) as e:
            await record_event(self.client, b, "Warning", "ExpireFailed", f"expiring the backup failed: {e}",
                               self.name)
            return 300.0
        await self.client.delete(API_VERSION, "Backup", m["name"], m["namespace"])
        await record_event(self.client, b, "Normal", "Expired", f"backup expired; snapshots {sorted(snaps.values())} "
                                                                "forgotten", self.name)
        return None

    async def _run(self, b: Obj) -> None:
        m, spec = b["metadata"], b.get("spec") or {}
        now = datetime.now(UTC)
        t0 = time.monotonic()
        invalid = validate_backup(spec)
        try:
            ttl = parse_duration(spec.get("ttl"), DEFAULT_TTL)
        except ValueError as e:
            invalid.append(str(e))
        if invalid:
            await _set_status(self.client, b, "Backup", {"phase": "FailedValidation", "validationErrors": invalid,
                                                         "completionTimestamp": rfc3339(now)})
            return
        b = await _set_status(self.client, b, "Backup", {
            "phase": "InProgress", "startTimestamp": rfc3339(now), "expiration": rfc3339(now + ttl),
            "version": 1, "formatVersion": "1.1.0"})
        res = _Result()
        status: Obj = {}
        snaps: dict[str, str] = {}
        location = ""
        try:
            bsl = await location_of(self.client, m["namespace"], spec.get("storageLocation"))
            location = bsl["metadata"]["name"]
            if (bsl.get("spec") or {}).get("accessMode") == "ReadOnly":
                raise LocationError(f'backup storage location "{location}" is read-only')
            by_ns = await self._select(spec, res)
            for ns, items in sorted(by_ns.items()):
                restic = await repository_for(self.client, bsl, ns, writing=True)
                snaps[ns] = await self._namespace(b, location, ns, items, restic, res)
            phase = "PartiallyFailed" if res.errors else "Completed"
        except (LocationError, ResticError) as e:
            phase = "Failed"
            status["failureReason"] = str(e)
        status.update({"phase": phase, "completionTimestamp": rfc3339(datetime.now(UTC)),
                       "errors": len(res.errors), "warnings": len(res.warnings),
                       "progress": {"totalItems": res.total, "itemsBackedUp": res.items}})
        ann = {SNAPSHOTS_ANNOTATION: json.dumps(snaps, sort_keys=True),
               STATS_ANNOTATION: json.dumps({"bytes": res.bytes_processed, "bytesAdded": res.bytes_added,
                                             "durationSeconds": round(time.monotonic() - t0, 3)})}
        labels = {LABEL_STORAGE_LOCATION: location} if location else {}
        b = await self.client.patch(API_VERSION, "Backup", m["name"], {"metadata": {"annotations": ann,
                                                                                     "labels": labels}},
                                    namespace=m["namespace"])
        b = await _set_status(self.client, b, "Backup", status)
        for msg in res.errors[:_MAX_MESSAGES]:
            await record_event(self.client, b, "Warning", "ItemError", msg, self.name)
        for msg in res.warnings[:_MAX_MESSAGES]:
            await record_event(self.client, b, "Warning", "ItemWarning", msg, self.name)
        summary = (f"velero backup {m['namespace']}/{m['name']}: {phase}, {res.items}/{res.total} items"
                   + (f", {len(res.errors)} errors" if res.errors else "")
                   + (f" ({status['failureReason']})" if "failureReason" in status else ""))
        await record_event(self.client, b, "Normal" if phase == "Completed" else "Warning", phase, summary, self.name)
        sched = (b["metadata"].get("labels") or {}).get(LABEL_SCHEDULE_NAME)
        self.stats.observe("velero", f"{m['namespace']}/{sched or m['name']}", location, ok=phase == "Completed",
                           duration_s=time.monotonic() - t0, bytes_added=res.bytes_added)
        if self.on_change is not None:
            await self.on_change("backup", summary, b)

    async def _select(self, spec: Obj, res: _Result) -> dict[str, list[tuple[str, Obj]]]:
        """The selected objects by namespace, the cluster-scoped ones under ``CLUSTER_KEY``: (resource
        directory, object)."""
        sel = Selection.of(spec)
        scope = ClusterScope.of(spec)
        selectors = label_selectors(spec)
        out: dict[str, list[tuple[str, Obj]]] = {}
        for rt in list(self.kube.registry):
            if rt.group in SKIPPED_GROUPS or (rt.group, rt.kind) in SKIPPED_KINDS or "list" not in rt.verbs:
                continue
            if rt.namespaced and not sel.namespaced(rt.group, rt.plural, rt.kind, rt.short_names):
                continue
            if not rt.namespaced and not scope.direct(sel, rt.group, rt.plural, rt.kind, rt.short_names):
                continue
            is_ns = (rt.group, rt.kind) == ("", "Namespace")
            # named namespaces are taken whatever their labels, as Velero's namespace tracker does
            items = await self._list(rt.api_version, rt.kind, [None] if is_ns and not scope.all_namespaces
                                     else selectors, resource_dir(rt.group, rt.plural), res)
            for obj in sort_by_order(items, ordered_names(spec, rt.plural)):
                ns = obj["metadata"].get("namespace") or ""
                if (ns and sel.namespace(ns)) or (not rt.namespaced and (not is_ns or sel.namespace(
                        obj["metadata"]["name"]))):
                    obj.setdefault("apiVersion", rt.api_version)
                    obj.setdefault("kind", rt.kind)
                    out.setdefault(ns or CLUSTER_KEY, []).append((resource_dir(rt.group, rt.plural), obj))
        await self._related_crds(sel, scope, out, res)
        res.total = sum(len(v) for v in out.values())
        return out

    async def _list(self, api_version: str, kind: str, selectors: list[str | None], rdir: str,
                    res: _Result) -> list[Obj]:
        """The objects of a kind matching any of ``selectors`` (``orLabelSelectors``: each listed once)."""
        seen: dict[tuple[str, str], Obj] = {}
        for selector in selectors:
            try:
                items = (await self.client.list(api_version, kind, label_selector=selector)).items
            except KubeError as e:
                res.warn(f"listing {rdir}: {e}")
                return []
            for obj in items:
                m = obj["metadata"]
                seen.setdefault((str(m.get("namespace") or ""), str(m["name"])), obj)
        return list(seen.values())

    async def _related_crds(self, sel: Selection, scope: ClusterScope, out: dict[str, list[tuple[str, Obj]]],
                            res: _Result) -> None:
        """Add the CRD of each custom resource backed up, when not taken already (Velero's ``backupCRD``)."""
        crd_dir = resource_dir(CRD_GROUP, "customresourcedefinitions")
        if not scope.related(sel, CRD_GROUP, "customresourcedefinitions", "CustomResourceDefinition"):
            return
        have = {o["metadata"]["name"] for d, o in out.get(CLUSTER_KEY, []) if d == crd_dir}
        wanted = {d for ns, items in out.items() if ns != CLUSTER_KEY for d, _ in items} \
            | {d for d, _ in out.get(CLUSTER_KEY, []) if d != crd_dir}
        for name in sorted(w for w in wanted - have if "." in w):  # a CRD is named <plural>.<group>
            try:
                crd = await self.client.get(f"{CRD_GROUP}/v1", "CustomResourceDefinition", name)
            except NotFoundError:
                continue  # a built-in group (apps, batch...): no CRD
            except KubeError as e:
                res.warn(f"getting the CRD {name}: {e}")
                continue
            crd.setdefault("apiVersion", f"{CRD_GROUP}/v1")
            crd.setdefault("kind", "CustomResourceDefinition")
            out.setdefault(CLUSTER_KEY, []).append((crd_dir, crd))

    async def _hooks(self, b: Obj, pods: list[Obj], phase: str, res: _Result) -> set[str]:
        """Run every pod's ``phase`` hooks; the pods whose Fail hook failed (left out of the backup)."""
        failed: set[str] = set()
        for pod in pods:
            pm = pod["metadata"]
            try:
                hooks = hooks_for_pod(pod, (b.get("spec") or {}).get("hooks"))
            except ValueError as e:  # a bad timeout: the pod's hooks cannot run as asked
                res.error(f"{phase} hooks of pod {pm['namespace']}/{pm['name']}: {e}")
                failed.add(pm["name"])
                continue
            for h in hooks:
                if h.phase != phase:
                    continue
                err = await run_hook(self.host, pod, h)
                if err is None:
                    continue
                msg = _hook_message(h, pm, err)
                if h.on_error == "Continue":
                    res.warn(msg)
                else:
                    res.error(msg)
                    failed.add(pm["name"])
        return failed

    async def _namespace(self, b: Obj, location: str, ns: str, items: list[tuple[str, Obj]], restic: Restic,
                         res: _Result) -> str:
        """One namespace's objects and pod volumes into its repository; the snapshot id."""
        async with self.locks.of(restic.repo):  # the whole step: the staging directory is the repository's
            return await self._namespace_locked(b, location, ns, items, restic, res)

    def _staging(self, repo: str) -> Path:
        """A fixed directory per repository (restic then finds the previous snapshot of the same path as its
        parent and skips unchanged files), or a fresh temporary one without ``staging_root``."""
        if self.staging_root is None:
            return Path(tempfile.mkdtemp(prefix="pitwall-velero-"))
        return self.staging_root / f"velero-{hashlib.sha256(repo.encode()).hexdigest()[:16]}"

    async def _namespace_locked(self, b: Obj, location: str, ns: str, items: list[tuple[str, Obj]],
                                restic: Restic, res: _Result) -> str:
        spec = b.get("spec") or {}
        pods = [o for d, o in items if d == "pods"]
        failed = await self._hooks(b, pods, "pre", res)
        staging = self._staging(restic.repo)
        await asyncio.to_thread(shutil.rmtree, staging, True)  # left by a crash
        staging.mkdir(parents=True, exist_ok=True)
        written: list[str] = []  # in backup order (``orderedResources`` first within their resource)
        try:
            for rdir, obj in items:
                om = obj["metadata"]
                if rdir == "pods" and om["name"] in failed:
                    continue
                where = ("namespaces", ns) if om.get("namespace") else (CLUSTER_DIR,)
                path = staging.joinpath("resources", rdir, *where, f"{om['name']}.json")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(obj, indent=2, sort_keys=True))
                written.append(path.relative_to(staging).as_posix())
                res.items += 1
                if rdir == "pods":
                    await asyncio.to_thread(self._volumes, obj, spec, staging, res)
            post = await self._hooks(b, [p for p in pods if p["metadata"]["name"] not in failed], "post", res)
            del post  # a failed post hook is an error of the backup; the pod is already in it
            (staging / RESULTS).write_text(json.dumps({"errors": res.errors, "warnings": res.warnings,
                                                       "items": written}, indent=2))
            await asyncio.to_thread(write_checksums, staging)  # what a restore drill verifies
            await restic.ensure()
            notes: list[str] = []
            tags = backup_tags(b["metadata"]["name"], location, ns)
            summary = await with_stale_lock_retry(
                restic, lambda: restic.backup(staging, tags=tags, ignore_ctime=True, ignore_inode=True), notes)
            for n in notes:
                res.warn(n)
            res.bytes_added += summary.data_added
            res.bytes_processed += summary.total_bytes_processed
            return str(summary.snapshot_id)
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)

    def _volumes(self, pod: Obj, spec: Obj, staging: Path, res: _Result) -> None:
        """Copy the pod's emptyDir/hostPath volumes that the backup covers (all with
        ``defaultVolumesToFsBackup``, else those named in ``backup.velero.io/backup-volumes``)."""
        pm = pod["metadata"]
        ann = pm.get("annotations") or {}
        opt_in = {v.strip() for v in (ann.get("backup.velero.io/backup-volumes") or "").split(",") if v.strip()}
        opt_out = {v.strip() for v in (ann.get("backup.velero.io/backup-volumes-excludes") or "").split(",")}
        dirs = self.host.volume_dirs(pm["namespace"], pm["name"]) if self.host is not None else {}
        for v in (pod.get("spec") or {}).get("volumes") or []:
            name = str(v.get("name"))
            if "emptyDir" not in v and "hostPath" not in v:
                continue
            wanted = name in opt_in or (bool(spec.get("defaultVolumesToFsBackup")) and name not in opt_out)
            if not wanted:
                continue
            src = dirs.get(name)
            if src is None or not src.exists():
                res.warn(f"pod {pm['namespace']}/{pm['name']} volume {name}: not on this node, not backed up")
                continue
            dst = staging / "volumes" / pm["name"] / name
            try:
                if src.is_dir():
                    shutil.copytree(src, dst, symlinks=True)
                else:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)
            except (OSError, shutil.Error) as e:
                res.error(f"pod {pm['namespace']}/{pm['name']} volume {name}: {e}")


def _forget(restic: Restic, snapshot: str) -> Callable[[], Awaitable[None]]:
    async def forget() -> None:
        await restic.forget([snapshot])
    return forget


def _hook_message(h: Hook, pm: Obj, err: str) -> str:
    return (f"{h.phase} hook ({h.source}) {json.dumps(list(h.command))} in pod {pm['namespace']}/{pm['name']}"
            f" failed: {err}")


class RestoreReconciler:
    """Reconciles velero.io/v1 Restores."""

    name = "velero-restore"
    primary = (API_VERSION, "Restore")
    secondary: Sequence[tuple[str, str]] = ()

    def __init__(self, kube: KubeAPI, *, locks: RepoLocks, on_change: ChangeHook | None = None,
                 host: PodHost | None = None, volume_timeout_s: float = 300.0) -> None:
        self.kube = kube
        self.client = kube.client
        self.locks = locks
        self.on_change = on_change
        self.host = host  # the kubelet: where a restored pod's volume directories are
        self.volume_timeout_s = volume_timeout_s  # how long a restored pod may take to start here

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        return [object_key(obj)]

    async def _backup(self, ns: str, spec: Obj) -> Obj:
        if spec.get("backupName"):
            try:
                b = await self.client.get(API_VERSION, "Backup", spec["backupName"], ns)
            except NotFoundError:
                raise LocationError(f"backup {spec['backupName']!r} not found") from None
        elif spec.get("scheduleName"):
            items = (await self.client.list(API_VERSION, "Backup", ns,
                                            label_selector=f"{LABEL_SCHEDULE_NAME}={spec['scheduleName']}")).items
            done = [x for x in items if (x.get("status") or {}).get("phase") in ("Completed", "PartiallyFailed")]
            if not done:
                raise LocationError(f"no completed backup of schedule {spec['scheduleName']!r}")
            b = max(done, key=lambda x: (x.get("status") or {}).get("startTimestamp") or "")
        else:
            raise LocationError("either a backup or schedule name must be specified")
        if (b.get("status") or {}).get("phase") not in ("Completed", "PartiallyFailed"):
            raise LocationError(f"backup {b['metadata']['name']!r} is not completed "
                                f"(phase {(b.get('status') or {}).get('phase')})")
        return b

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            r = await self.client.get(API_VERSION, "Restore", name, ns)
        except NotFoundError:
            return None
        if (r.get("status") or {}).get("phase") not in (None, "", "New"):
            return None
        spec = r.get("spec") or {}
        policy = str(spec.get("existingResourcePolicy") or "none")
        if policy not in ("none", "update"):
            await _set_status(self.client, r, "Restore", {"phase": "FailedValidation", "validationErrors": [
                f"invalid existingResourcePolicy {policy!r}: none or update"]})
            return None
        try:
            b = await self._backup(ns, spec)
        except LocationError as e:
            await _set_status(self.client, r, "Restore", {"phase": "FailedValidation", "validationErrors": [str(e)]})
            return None
        r = await _set_status(self.client, r, "Restore", {"phase": "InProgress",
                                                          "startTimestamp": rfc3339(datetime.now(UTC))})
        res = _Result()
        status: Obj = {}
        try:
            await self._restore(r, b, policy, res)
            phase = "PartiallyFailed" if res.errors else "Completed"
        except (LocationError, ResticError) as e:
            phase, status["failureReason"] = "Failed", str(e)
        status.update({"phase": phase, "completionTimestamp": rfc3339(datetime.now(UTC)),
                       "errors": len(res.errors), "warnings": len(res.warnings),
                       "progress": {"totalItems": res.total, "itemsRestored": res.items}})
        r = await _set_status(self.client, r, "Restore", status)
        for msg in (res.errors + res.warnings)[:_MAX_MESSAGES]:
            await record_event(self.client, r, "Warning", "ItemError" if msg in res.errors else "ItemWarning", msg,
                               self.name)
        summary = (f"velero restore {ns}/{name} from backup {b['metadata']['name']}: {phase}, "
                   f"{res.items}/{res.total} items, {len(res.warnings)} warnings, {len(res.errors)} errors")
        await record_event(self.client, r, "Normal" if phase == "Completed" else "Warning", phase, summary, self.name)
        if self.on_change is not None:
            await self.on_change("restore", summary, r)
        return None

    async def _restore(self, r: Obj, b: Obj, policy: str, res: _Result) -> None:
        spec = r.get("spec") or {}
        sel = Selection.of(spec)
        # as Velero: pod volume data only when the restore includes volumes (PVCs and PVs are not excluded)
        fs = sel.resource("", "persistentvolumeclaims", "PersistentVolumeClaim", ("pvc",)) \
            and sel.resource("", "persistentvolumes", "PersistentVolume", ("pv",))
        snaps = json.loads((b["metadata"].get("annotations") or {}).get(SNAPSHOTS_ANNOTATION) or "{}")
        bsl = await location_of(self.client, b["metadata"]["namespace"], (b.get("spec") or {}).get("storageLocation"))
        keys = [k for k in sorted(snaps) if k == CLUSTER_KEY or sel.namespace(k)]
        tmp = Path(tempfile.mkdtemp(prefix="pitwall-velero-restore-"))
        try:
            # every snapshot first (CLUSTER_KEY cannot be a namespace's name): Velero's one priority order runs
            # across all namespaces, so the items of one resource are restored everywhere before the next
            for key in keys:
                restic = await repository_for(self.client, bsl, key, writing=False)
                async with self.locks.of(restic.repo):
                    await restic.restore(snaps[key], tmp / key, includes=[
                        "/resources", *(["/volumes"] if fs and key != CLUSTER_KEY else [])])
            post_hooks: list[tuple[Obj, list[ExecHook]]] = []
            pods = await self._apply(r, b, tmp, keys, sel, policy, res, post_hooks)
            await self._pod_volumes(r, pods, res)
            for pod, hooks in post_hooks:  # once the pods run with their data back (Velero's waitExec)
                for msg in await run_exec_hooks(self.host, pod, hooks, self.volume_timeout_s):
                    res.error(msg)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    @staticmethod
    def _entries(tmp: Path, keys: list[str]) -> dict[str, list[tuple[str, Path]]]:
        """The restored snapshots' object files by resource directory: (namespace or CLUSTER_KEY, file), in
        namespace then name order."""
        out: dict[str, list[tuple[str, Path]]] = {}
        for key in keys:
            base = tmp / key / "resources"
            pattern = f"*/{CLUSTER_DIR}/*.json" if key == CLUSTER_KEY else f"*/namespaces/{key}/*.json"
            for path in sorted(base.glob(pattern)):
                out.setdefault(path.relative_to(base).parts[0], []).append((key, path))
        return out

    def _selected(self, path: Path, rdir: str, sel: Selection) -> Obj | None:
        """The object of a ``resources/<rdir>/...json`` file when the Restore's resource filters take it."""
        obj: Obj = json.loads(path.read_text())
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        group = api_version.rpartition("/")[0]
        rt = self.kube.registry.by_kind(api_version, kind)
        plural = rt.plural if rt is not None else rdir.split(".")[0]
        return obj if sel.resource(group, plural, kind, rt.short_names if rt else ()) else None

    async def _apply(self, r: Obj, b: Obj, tmp: Path, keys: list[str], sel: Selection, policy: str,
                     res: _Result, post_hooks: list[tuple[Obj, list[ExecHook]]]) -> list[PodVolumes]:
        """Create the selected objects in Velero's restore order (``velero.restore_order``: its default
        priorities, then the rest by name, then its low priorities), each resource across every namespace
        before the next; the CRDs are served before anything after them. The created pods with volume data."""
        spec = r.get("spec") or {}
        mapping: dict[str, str] = dict(spec.get("namespaceMapping") or {})
        cluster = ClusterScope.of(spec).restores()
        entries = self._entries(tmp, keys)
        namespaces: dict[str, Obj] = {}  # the backed-up Namespace objects: what a restored namespace is made as
        ensured: set[str] = set()
        crds: list[Obj] = []
        pods: list[PodVolumes] = []
        for rdir in restore_order(entries):
            if crds:  # the CRDs come first: their kinds must be served before anything after
                await self._await_crds(crds, res)
                crds = []
            for key, path in entries[rdir]:
                if key != CLUSTER_KEY:
                    obj = self._selected(path, rdir, sel)
                    if obj is not None:
                        dst = mapping.get(key, key)
                        if dst not in ensured:  # the mapped namespace, or the original one deleted since
                            ensured.add(dst)
                            await self._ensure_namespace(dst, res, namespaces.get(key))
                        pods += await self._namespaced(r, b, tmp / key, obj, dst, policy, res, post_hooks)
                elif rdir == "namespaces":
                    await self._namespace_object(path, sel, mapping, cluster, namespaces, ensured, res)
                elif cluster and rdir not in NON_RESTORABLE and (obj := self._selected(path, rdir, sel)) is not None:
                    res.total += 1
                    new = self._labelled(_strip(obj), r, b)
                    if await self._create_or_keep(new, policy, res) and new.get("kind") == "CustomResourceDefinition":
                        crds.append(new)
        await self._await_crds(crds, res)
        return pods

    async def _namespace_object(self, path: Path, sel: Selection, mapping: dict[str, str], cluster: bool,
                                namespaces: dict[str, Obj], ensured: set[str], res: _Result) -> None:
        """A backed-up Namespace: remembered (a namespace made for its items gets its labels), and restored
        (to its mapped name) when the Restore takes cluster items and that namespace."""
        ns_obj: Obj = json.loads(path.read_text())
        src = ns_obj["metadata"]["name"]
        namespaces[src] = ns_obj
        if cluster and sel.namespace(src) and self._selected(path, "namespaces", sel) is not None:
            res.total += 1
            ensured.add(mapping.get(src, src))
            if await self._ensure_namespace(mapping.get(src, src), res, ns_obj):
                res.items += 1

    async def _await_crds(self, crds: list[Obj], res: _Result) -> None:
        """Wait until the kinds of the CRDs this restore created are served (the API server picks a new CRD up
        from its watch), so the custom resources after them can be created."""
        want = [(f"{spec.get('group')}/{v.get('name')}", str((spec.get("names") or {}).get("kind")))
                for spec in (c.get("spec") or {} for c in crds)
                for v in spec.get("versions") or [] if v.get("served", True)]
        deadline = time.monotonic() + _CRD_WAIT_S
        while want and time.monotonic() < deadline:
            want = [(av, k) for av, k in want if self.kube.registry.by_kind(av, k) is None]
            if want:
                await asyncio.sleep(0.05)
        for av, k in want:
            res.warn(f"the restored CRD of {k} ({av}) was not served within {_CRD_WAIT_S:g}s")

    @staticmethod
    def _labelled(new: Obj, r: Obj, b: Obj) -> Obj:
        labels = new["metadata"].setdefault("labels", {})
        labels[LABEL_BACKUP_NAME] = b["metadata"]["name"]
        labels[LABEL_RESTORE_NAME] = r["metadata"]["name"]
        return new

    async def _pod_volumes(self, r: Obj, pods: list[PodVolumes], res: _Result) -> None:
        """Fill the restored pods' volumes from the snapshot (their ``restore-wait`` holds them till then)."""
        uid = str(r["metadata"].get("uid") or r["metadata"]["name"])
        for pv in pods:
            if self.host is None:
                res.error(f"pod {pv.namespace}/{pv.name}: no node in this server; its volumes were not restored")
                continue
            for msg in await fill_volumes(pv, uid, self.host.volume_dirs, self.volume_timeout_s,
                                          self._present(pv)):
                res.error(msg)

    def _present(self, pv: PodVolumes) -> Callable[[], Awaitable[bool]]:
        """Whether the restored pod still exists (and is not being deleted): one deleted before it starts
        (by a user, or by a controller as surplus) never gets its volume data."""
        async def present() -> bool:
            try:
                pod = await self.client.get("v1", "Pod", pv.name, pv.namespace)
            except NotFoundError:
                return False
            return not pod["metadata"].get("deletionTimestamp")
        return present

    async def _namespaced(self, r: Obj, b: Obj, root: Path, obj: Obj, dst_ns: str, policy: str,
                          res: _Result, post_hooks: list[tuple[Obj, list[ExecHook]]]) -> list[PodVolumes]:
        """Create one namespaced object in ``dst_ns`` (``root``: its namespace's restored snapshot); the pod
        with volume data to fill, if it is one this restore created. A created pod's init restore hooks are
        in its spec, its exec hooks appended to ``post_hooks``."""
        res.total += 1
        new = self._labelled(_strip(obj), r, b)
        new["metadata"]["namespace"] = dst_ns
        volumes: dict[str, Path] = {}
        hooks: list[ExecHook] = []
        if obj.get("kind") == "Pod":
            (new.get("spec") or {}).pop("nodeName", None)
            volumes, warnings = restorable(new, pod_volumes_in(root, new["metadata"]["name"]))
            for w in warnings:
                res.warn(w)
            if volumes:
                add_restore_wait(new, sorted(volumes), str(r["metadata"].get("uid") or r["metadata"]["name"]))
            try:
                add_init_hooks(new, (r.get("spec") or {}).get("hooks"))
                hooks = exec_hooks(new, (r.get("spec") or {}).get("hooks"))
            except ValueError as e:
                res.error(f"could not restore Pod {dst_ns}/{new['metadata']['name']}: restore hooks: {e}")
                return []
        created = await self._create_or_keep(new, policy, res)
        if created and hooks:  # as Velero: exec hooks run only in the pods this restore created
            post_hooks.append((new, hooks))
        # as Velero, volume data goes only into a pod this restore created, never into one that existed
        if created and volumes:
            return [PodVolumes(dst_ns, new["metadata"]["name"], volumes)]
        return []

    async def _ensure_namespace(self, ns: str, res: _Result, backed_up: Obj | None = None) -> bool:
        """Create namespace ``ns`` (with the labels and annotations it was backed up with) unless it exists, as
        Velero's ``EnsureNamespaceExistsAndIsReady``; whether it was created."""
        meta: Obj = {"name": ns}
        if backed_up is not None:
            m = backed_up.get("metadata") or {}
            meta.update({k: m[k] for k in ("labels", "annotations") if m.get(k)})
        try:
            await self.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
            return True
        except AlreadyExists:
            return False
        except KubeError as e:
            res.error(f"creating namespace {ns}: {e}")
            return False

    async def _create_or_keep(self, new: Obj, policy: str, res: _Result) -> bool:
        """Create ``new``, or keep (or update, by ``policy``) the object that exists; whether it was created."""
        m = new["metadata"]
        what = f"{new.get('kind')} {m['namespace']}/{m['name']}" if m.get("namespace") else \
            f"{new.get('kind')} {m['name']}"
        try:
            await self.client.create(new)
            res.items += 1
            return True
        except AlreadyExists:
            pass
        except KubeError as e:
            res.error(f"could not restore {what}: {e}")
            return False
        if policy != "update":
            res.warn(f"could not restore, {what} already exists (existingResourcePolicy none: left as it is)")
            return False
        try:
            cur = await self.client.get(new["apiVersion"], new["kind"], m["name"], m.get("namespace") or "")
            new["metadata"]["resourceVersion"] = cur["metadata"].get("resourceVersion")
            await self.client.update(new)
            res.items += 1
            res.warn(f"{what} existed and was updated (existingResourcePolicy update)")
        except KubeError as e:
            res.error(f"could not update existing {what}: {e}")
        return False


class ScheduleReconciler:
    """Reconciles velero.io/v1 Schedules: a Backup per cron time."""

    name = "velero-schedule"
    primary = (API_VERSION, "Schedule")
    secondary: Sequence[tuple[str, str]] = ()

    def __init__(self, client: KubeClient, stats: BackupStats | None = None,
                 activate: Callable[[], Awaitable[None]] | None = None) -> None:
        self.client = client
        self.stats = stats
        self.activate = activate  # loads the shipped alert rules once a Schedule exists

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        return [object_key(obj)]

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            s = await self.client.get(API_VERSION, "Schedule", name, ns)
        except NotFoundError:
            if self.stats is not None:
                self.stats.drop_gauges(kind="velero", name=key)
            return None
        spec, st = s.get("spec") or {}, s.get("status") or {}
        if self.activate is not None:
            await self.activate()
        try:
            cron = Schedule.parse(str(spec.get("schedule") or ""))
            self._interval(key, s, cron)
        except CronError as e:
            if st.get("phase") != "FailedValidation":
                await _set_status(self.client, s, "Schedule", {"phase": "FailedValidation", "validationErrors": [
                    f"invalid schedule: {e}"]})
            return None
        if spec.get("paused"):
            if st.get("phase") != "Enabled":
                await _set_status(self.client, s, "Schedule", {"phase": "Enabled"})
            return None
        now = datetime.now(UTC)
        last = parse_time(st.get("lastBackup"))
        due: datetime | None
        if last is not None:
            due = cron.next(last)
        elif not spec.get("skipImmediately"):
            due = now  # never run: the first backup at once, as Velero
        else:
            skipped = parse_time(st.get("lastSkipped"))
            if skipped is None:
                s = await _set_status(self.client, s, "Schedule", {"phase": "Enabled", "lastSkipped": rfc3339(now)})
            due = cron.next(skipped or now)
        if due is not None and due <= now:
            await self._spawn(s, now)
            await _set_status(self.client, s, "Schedule", {"phase": "Enabled", "lastBackup": rfc3339(now)})
            due = cron.next(now)
        elif st.get("phase") != "Enabled":
            await _set_status(self.client, s, "Schedule", {"phase": "Enabled"})
        return None if due is None else max((due - datetime.now(UTC)).total_seconds(), 0.05)

    def _interval(self, key: str, s: Obj, cron: Schedule) -> None:
        """The schedule's interval and creation time as gauges, for the "no successful backup within twice
        the schedule" rule (paused schedules are dropped: no backup is expected of them)."""
        if self.stats is None:
            return
        labels = {"kind": "velero", "name": key}
        first = cron.next(datetime.now(UTC))
        second = cron.next(first) if first is not None else None
        created = parse_time(s["metadata"].get("creationTimestamp"))
        if (s.get("spec") or {}).get("paused") or first is None or second is None or created is None:
            self.stats.drop_gauges(**labels)
            return
        self.stats.set_gauge("pitwall_backup_schedule_interval_seconds", labels, (second - first).total_seconds())
        self.stats.set_gauge("pitwall_backup_schedule_created_timestamp_seconds", labels, created.timestamp())

    async def _spawn(self, s: Obj, now: datetime) -> Obj:
        m, spec = s["metadata"], s.get("spec") or {}
        meta: Obj = {"name": f"{m['name']}-{now.strftime('%Y%m%d%H%M%S')}", "namespace": m["namespace"],
                     "labels": {**(m.get("labels") or {}), **((spec.get("template") or {}).get("metadata") or {})
                                .get("labels", {}), LABEL_SCHEDULE_NAME: m["name"]}}
        if spec.get("useOwnerReferencesInBackup"):
            meta["ownerReferences"] = [{"apiVersion": API_VERSION, "kind": "Schedule", "name": m["name"],
                                        "uid": m.get("uid"), "controller": True}]
        template = {k: v for k, v in (spec.get("template") or {}).items() if k != "metadata"}
        try:
            made = await self.client.create({"apiVersion": API_VERSION, "kind": "Backup", "metadata": meta,
                                             "spec": template})
        except AlreadyExists:
            return await self.client.get(API_VERSION, "Backup", meta["name"], m["namespace"])
        await record_event(self.client, s, "Normal", "BackupCreated", f"created backup {meta['name']}", self.name)
        return made


class LocationReconciler:
    """Validates velero.io/v1 BackupStorageLocations every ``validationFrequency`` (default 1m): phase
    Available, or Unavailable with the reason in ``status.message``."""

    name = "velero-backup-storage-location"
    primary = (API_VERSION, "BackupStorageLocation")
    secondary: Sequence[tuple[str, str]] = ()  # a fixed Secret is seen at the next validation

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        return [object_key(obj)]

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            bsl = await self.client.get(API_VERSION, "BackupStorageLocation", name, ns)
        except NotFoundError:
            return None
        spec, st = bsl.get("spec") or {}, bsl.get("status") or {}
        try:
            every = parse_duration(spec.get("validationFrequency"), DEFAULT_VALIDATION).total_seconds()
        except ValueError:
            every = DEFAULT_VALIDATION.total_seconds()
        phase, message = "Available", ""
        try:
            await repository_for(self.client, bsl, "validation", writing=False)
            prefix = str((spec.get("config") or {}).get("resticRepoPrefix"))
            if ":" not in prefix.split("/")[0]:  # a local path: it must be a directory pitwall can create
                await asyncio.to_thread(Path(prefix).mkdir, parents=True, exist_ok=True)
        except (LocationError, OSError) as e:
            phase, message = "Unavailable", str(e)
        now = datetime.now(UTC)
        last = parse_time(st.get("lastValidationTime"))
        fresh = last is not None and (now - last).total_seconds() < every
        if st.get("phase") != phase or st.get("message", "") != message or not fresh:
            status: Obj = {"phase": phase, "lastValidationTime": rfc3339(now),
                           "accessMode": spec.get("accessMode") or "ReadWrite"}
            status["message"] = message
            await _set_status(self.client, bsl, "BackupStorageLocation", status)
        return every
