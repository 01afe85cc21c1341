"""What the backups pages show: Velero Backups, Restores, Schedules, RestoreDrills and self-backup runs.

``BackupsSource`` is the UI's read interface onto the backup pillar (the composition root hands in
``pitwall.backup.BackupReads``, which reads the Kubernetes API as the workloads pages do and gathers a
Backup as ``pitwall backup describe`` does); everything else is pure functions from those objects (plain
dicts in their API shape) to template rows, tested without a server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pitwall.core.durations import short_age
from pitwall.ui.objects import obj_time

__all__ = [
    "BackupRow",
    "BackupsSource",
    "DrillRow",
    "backup_row",
    "contents",
    "drill_history",
    "drill_row",
    "restore_row",
    "schedule_row",
    "self_run_row",
]

Obj = dict[str, Any]
STATS_ANNOTATION = "backup.pitwall.dev/stats"  # JSON {bytes, bytesAdded, durationSeconds} of the run
SNAPSHOTS_ANNOTATION = "backup.pitwall.dev/snapshots"  # JSON {namespace: restic snapshot id}
SCHEDULE_LABEL = "velero.io/schedule-name"
LOCATION_LABEL = "velero.io/storage-location"


class BackupsSource(Protocol):
    """The reads the backups pages make; kinds are ``backup``, ``restore``, ``schedule``, ``restoredrill``."""

    def kube_enabled(self) -> bool:
        """Whether the control plane (so Velero's kinds) is there."""
        ...

    async def objects(self, kind: str, namespace: str = "") -> list[Obj]:
        """Objects of ``kind`` in ``namespace`` (all when empty)."""
        ...

    async def object(self, kind: str, namespace: str, name: str) -> Obj | None:
        """One object, or None."""
        ...

    async def describe(self, namespace: str, name: str) -> Obj | None:
        """A Backup as ``pitwall backup describe`` gathers it (``backup``, ``restores``, ``drills``, ``events``)
        with its log lines (``logs``); None when absent."""
        ...

    async def resources(self, namespace: str, name: str) -> Obj | None:
        """What a Backup holds, listed from its restic snapshots: ``resources`` (namespace, resource, name,
        snapshot), ``volumes`` (pod, volume, files, bytes), ``problems``, ``truncated``; None when absent."""
        ...

    async def events(self, kind: str, namespace: str, name: str) -> list[Obj]:
        """The Events about one object, oldest first."""
        ...

    def self_runs(self) -> list[Obj]:
        """This server's self-backup runs since it started, newest last."""
        ...


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def age(ts: Any, now: datetime | None = None) -> str:
    """``kubectl``'s short age of an RFC 3339 timestamp (``—`` when absent)."""
    t = obj_time(ts)
    return "—" if t is None else short_age((_now(now) - t).total_seconds())


def until(ts: Any, now: datetime | None = None) -> str:
    """Velero's EXPIRES column: how long until ``ts`` (``expired`` when past, ``—`` when unknown)."""
    t = obj_time(ts)
    if t is None:
        return "—"
    left = (t - _now(now)).total_seconds()
    return short_age(left) if left > 0 else "expired"


def _json_annotation(o: Obj, key: str) -> Obj:
    try:
        v = json.loads(((o.get("metadata") or {}).get("annotations") or {}).get(key) or "{}")
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


@dataclass(frozen=True)
class BackupRow:
    """A Backup as ``velero backup get`` (wide) shows it, with the run's figures."""

    namespace: str
    name: str
    phase: str
    errors: int
    warnings: int
    created: str  # age
    expires: str
    location: str
    selector: str
    schedule: str
    size: float | None  # bytes restic processed
    added: float | None  # bytes the run added to the repository (deduplicated)
    duration: float | None  # seconds
    items: str  # "backed up/total"
    snapshots: dict[str, str] = field(default_factory=dict)


def backup_row(b: Obj, now: datetime | None = None) -> BackupRow:
    """The row of Backup ``b``."""
    m, spec, st = b.get("metadata") or {}, b.get("spec") or {}, b.get("status") or {}
    labels = m.get("labels") or {}
    stats = _json_annotation(b, STATS_ANNOTATION)
    sel = (spec.get("labelSelector") or {}).get("matchLabels") or {}
    prog = st.get("progress") or {}
    return BackupRow(
        namespace=str(m.get("namespace", "")), name=str(m.get("name", "")), phase=str(st.get("phase") or "New"),
        errors=int(st.get("errors") or 0), warnings=int(st.get("warnings") or 0),
        created=age(st.get("startTimestamp") or m.get("creationTimestamp"), now), expires=until(st.get("expiration"),
                                                                                                 now),
        location=str(spec.get("storageLocation") or labels.get(LOCATION_LABEL) or "default"),
        selector=",".join(f"{k}={v}" for k, v in sorted(sel.items())) or "<none>",
        schedule=str(labels.get(SCHEDULE_LABEL, "")), size=_num(stats.get("bytes")),
        added=_num(stats.get("bytesAdded")), duration=_num(stats.get("durationSeconds")),
        items=f"{prog.get('itemsBackedUp', 0)}/{prog.get('totalItems', 0)}" if prog else "—",
        snapshots={str(k): str(v) for k, v in _json_annotation(b, SNAPSHOTS_ANNOTATION).items()})


def restore_row(r: Obj, now: datetime | None = None) -> dict[str, str]:
    """A Restore as ``velero restore get`` shows it."""
    m, spec, st = r.get("metadata") or {}, r.get("spec") or {}, r.get("status") or {}
    prog = st.get("progress") or {}
    return {"namespace": str(m.get("namespace", "")), "name": str(m.get("name", "")),
            "backup": str(spec.get("backupName") or spec.get("scheduleName") or ""),
            "phase": str(st.get("phase") or "New"), "errors": str(st.get("errors") or 0),
            "warnings": str(st.get("warnings") or 0),
            "items": f"{prog.get('itemsRestored', 0)}/{prog.get('totalItems', 0)}" if prog else "—",
            "created": age(st.get("startTimestamp") or m.get("creationTimestamp"), now),
            "message": str(st.get("failureReason") or "")}


def schedule_row(s: Obj, now: datetime | None = None) -> dict[str, str]:
    """A Schedule as ``velero schedule get`` shows it."""
    m, spec, st = s.get("metadata") or {}, s.get("spec") or {}, s.get("status") or {}
    return {"namespace": str(m.get("namespace", "")), "name": str(m.get("name", "")),
            "phase": "Paused" if spec.get("paused") else str(st.get("phase") or "New"),
            "schedule": str(spec.get("schedule", "")), "ttl": str((spec.get("template") or {}).get("ttl") or "720h0m0s"),
            "last": age(st.get("lastBackup"), now), "age": age(m.get("creationTimestamp"), now)}


@dataclass(frozen=True)
class DrillRow:
    """A RestoreDrill: its source, last result and the measured RTO (duration) and RPO (data age)."""

    namespace: str
    name: str
    source: str
    schedule: str
    phase: str
    result: str
    rto: float | None
    rpo: float | None
    last: str
    next: str
    message: str


def _drill_source(spec: Obj) -> str:
    src = spec.get("source") or {}
    for key, label in (("backupName", "backup"), ("scheduleName", "schedule"), ("repository", "repository")):
        if src.get(key):
            v = src[key]
            return f"{label} {v.get('url', '') if isinstance(v, dict) else v}"
    return "—"


def drill_row(d: Obj, now: datetime | None = None) -> DrillRow:
    """The row of RestoreDrill ``d``."""
    m, spec, st = d.get("metadata") or {}, d.get("spec") or {}, d.get("status") or {}
    return DrillRow(
        namespace=str(m.get("namespace", "")), name=str(m.get("name", "")), source=_drill_source(spec),
        schedule=str(spec.get("schedule", "")) + (" (suspended)" if spec.get("suspend") else ""),
        phase=str(st.get("phase") or "New"), result=str(st.get("lastResult") or "not run"),
        rto=_num(st.get("durationSeconds")), rpo=_num(st.get("dataAgeSeconds")), last=age(st.get("lastRunTime"), now),
        next=until(st.get("nextRunTime"), now), message=str(st.get("message") or ""))


def drill_history(d: Obj, now: datetime | None = None) -> list[dict[str, Any]]:
    """The drill's recorded runs (``status.history``), newest first, with their RTO and RPO."""
    out = []
    for h in reversed((d.get("status") or {}).get("history") or []):
        out.append({"time": str(h.get("time", "")), "age": age(h.get("time"), now), "result": str(h.get("result", "")),
                    "rto": _num(h.get("durationSeconds")), "rpo": _num(h.get("dataAgeSeconds")),
                    "files": int(h.get("files") or 0), "snapshot": str(h.get("snapshot", ""))[:8],
                    "message": str(h.get("message", ""))})
    return out


def self_run_row(run: Obj, now: float | None = None) -> dict[str, Any]:
    """One self-backup run (``SelfRun.doc()``): repository, phase, snapshot, size, bytes added, duration."""
    summary = run.get("summary") or {}
    started = float(run.get("started") or 0)
    t = datetime.now(UTC).timestamp() if now is None else now
    return {"repository": str(run.get("repository", "")), "phase": str(run.get("phase", "")),
            "snapshot": str(run.get("snapshot_id", ""))[:8], "age": short_age(t - started) if started else "—",
            "duration": _num(run.get("duration_s")), "files": int(run.get("files") or 0),
            "size": _num(run.get("bytes")), "added": _num(summary.get("data_added")),
            "error": str(run.get("error", ""))[:300], "reason": str(run.get("reason", "")),
            "warnings": [str(w) for w in run.get("warnings") or []]}


def contents(b: Obj) -> list[tuple[str, str]]:
    """What a Backup holds, as ``velero backup describe`` lists it: namespaces and resources included and
    excluded, the selector, items backed up, and the restic snapshot of each namespace."""
    spec, st = b.get("spec") or {}, b.get("status") or {}
    prog = st.get("progress") or {}

    def lst(v: Any, default: str = "<none>") -> str:
        return ", ".join(str(x) for x in v) if v else default

    sel = spec.get("labelSelector")
    rows = [("Namespaces included", lst(spec.get("includedNamespaces"), "*")),
            ("Namespaces excluded", lst(spec.get("excludedNamespaces"))),
            ("Resources included", lst(spec.get("includedResources"), "*")),
            ("Resources excluded", lst(spec.get("excludedResources"))),
            ("Cluster-scoped", "auto" if spec.get("includeClusterResources") is None
             else str(spec["includeClusterResources"]).lower()),
            ("Label selector", json.dumps(sel, sort_keys=True) if sel else "<none>"),
            ("Storage location", str(spec.get("storageLocation") or "default")),
            ("TTL", str(spec.get("ttl") or "720h0m0s")),
            ("Items backed up", f"{prog.get('itemsBackedUp', 0)} of {prog.get('totalItems', 0)}")]
    snaps = _json_annotation(b, SNAPSHOTS_ANNOTATION)
    rows += [(f"Snapshot of {ns}", str(snap)) for ns, snap in sorted(snaps.items())]
    return rows
