"""The ReplicaSet controller: as many active pods as ``spec.replicas``, from ``spec.template``.

As upstream's (pkg/controller/replicaset), each sync of one ReplicaSet:

1. claims pods: adopts orphans its selector matches (unless it is being
   deleted), releases pods it controls that stopped matching;
2. counts the active ones (not Succeeded/Failed, not being deleted);
3. creates the missing ones in slow-start batches (1, 2, 4...; at most
   ``BURST`` a sync), named ``<rs>-<5 random letters>``, each controlled by
   the ReplicaSet (``controller``, ``blockOwnerDeletion``); or deletes the
   surplus, choosing as upstream ranks them: unscheduled before scheduled,
   Pending before Unknown before Running, not-ready before ready, lower
   ``pod-deletion-cost`` first, pods doubled up on a node first, recently ready first, more restarts first,
   newer first;
4. writes ``status`` (replicas, fullyLabeledReplicas, readyReplicas,
   availableReplicas after ``minReadySeconds``, observedGeneration) and
   asks to run again when a ready pod will turn available.

Events: SuccessfulCreate, SuccessfulDelete, FailedCreate, FailedDelete.
Nothing is remembered between syncs, so a restart at any point is safe.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pitwall.controllers._claim import claim
from pitwall.controllers._common import (
    controller_ref,
    deleting,
    is_active_pod,
    is_pod_available,
    is_pod_ready,
    match_selector,
    meta,
    now,
    owner_ref,
    ready_since,
    restarts,
    until_available,
)
from pitwall.controllers.loop import object_key, record_event, split_key
from pitwall.kube import AlreadyExists, KubeClient, NotFoundError, parse_time

__all__ = ["BURST", "ReplicaSetController", "pod_from_template", "pods_to_delete"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
COMPONENT = "replicaset-controller"
BURST = 500  # upstream's burstReplicas: most pods created or deleted in one sync
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


def pod_from_template(rs: Obj) -> Obj:
    """A new pod of ``rs``: the template's labels, annotations and spec, controlled by ``rs``."""
    tmpl = (rs.get("spec") or {}).get("template") or {}
    tm = tmpl.get("metadata") or {}
    m = meta(rs)
    pod_meta: Obj = {"generateName": f"{m['name']}-", "namespace": m.get("namespace") or "default",
                     "labels": dict(tm.get("labels") or {}), "ownerReferences": [owner_ref(rs)]}
    if tm.get("annotations"):
        pod_meta["annotations"] = dict(tm["annotations"])
    if tm.get("finalizers"):
        pod_meta["finalizers"] = list(tm["finalizers"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": dict(tmpl.get("spec") or {})}


def _log2_bucket(seconds: float) -> int:
    return int(math.log2(seconds)) if seconds >= 1 else 0


def _deletion_cost(pod: Obj) -> int:
    raw = (meta(pod).get("annotations") or {}).get(DELETION_COST)
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


def _deletion_key(pod: Obj, rank: int, at: datetime) -> tuple[Any, ...]:
    """Sorts ascending in upstream's order of deletion preference (ActivePodsWithRanks, logarithmic)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    ready = is_pod_ready(pod)
    since = ready_since(pod) if ready else None
    ready_for = _log2_bucket((at - since).total_seconds()) if since is not None else 0
    created = parse_time(meta(pod).get("creationTimestamp"))
    age = (at - created).total_seconds() if created is not None else 0.0
    return (
        bool(spec.get("nodeName")),  # unassigned first
        _PHASE_ORDER.get(str(status.get("phase") or ""), 0),  # Pending < Unknown < Running
        ready,  # not ready first
        _deletion_cost(pod),  # lower controller.kubernetes.io/pod-deletion-cost first
        -rank,  # more pods on the same node first
        ready_for,  # ready for less time first
        -restarts(pod),  # more restarts first
        _log2_bucket(age),  # newer first
        -(created.timestamp() if created is not None else 0.0),
    )


def pods_to_delete(pods: Sequence[Obj], diff: int, related: Sequence[Obj] = (), at: datetime | None = None) -> list[Obj]:
    """The ``diff`` pods to delete first; ``related`` pods (e.g. of sibling ReplicaSets) count towards the
    rank of a node, as upstream ranks pods doubled up on a node first."""
    at = at or now()
    per_node = Counter(str((p.get("spec") or {}).get("nodeName") or "") for p in [*pods, *related]
                       if is_active_pod(p))
    ranked = sorted(pods, key=lambda p: _deletion_key(
        p, per_node[str((p.get("spec") or {}).get("nodeName") or "")] if (p.get("spec") or {}).get("nodeName")
        else 0, at))
    return ranked[:max(diff, 0)]


def _fully_labeled(pod: Obj, template_labels: Obj) -> bool:
    labels = meta(pod).get("labels") or {}
    return all(labels.get(k) == v for k, v in template_labels.items())


class ReplicaSetController:
    """A ``Reconciler`` of apps/v1 ReplicaSets (and their pods)."""

    name = COMPONENT
    primary = ("apps/v1", "ReplicaSet")
    secondary: Sequence[tuple[str, str]] = (("v1", "Pod"),)

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self._selectors: dict[str, Obj] = {}  # key -> selector, for orphan pods' events

    def keys_for(self, api_version: str, kind: str, obj: dict[str, Any]) -> list[str]:
        if kind == "ReplicaSet":
            key = object_key(obj)
            self._selectors[key] = (obj.get("spec") or {}).get("selector") or {}
            return [key]
        ns = meta(obj).get("namespace") or ""
        ref = controller_ref(obj)
        if ref is not None:
            return [f"{ns}/{ref.get('name')}"] if ref.get("kind") == "ReplicaSet" else []
        labels = meta(obj).get("labels") or {}
        return [k for k, sel in self._selectors.items() if k.startswith(f"{ns}/") and match_selector(sel, labels)]

    async def reconcile(self, key: str) -> float | None:
        ns, name = split_key(key)
        try:
            rs = await self.client.get("apps/v1", "ReplicaSet", name, ns)
        except NotFoundError:
            self._selectors.pop(key, None)
            return None
        rs.setdefault("apiVersion", "apps/v1")
        rs.setdefault("kind", "ReplicaSet")
        spec = rs.get("spec") or {}
        self._selectors[key] = spec.get("selector") or {}
        pods = (await self.client.list("v1", "Pod", ns)).items
        mine = await claim(self.client, rs, pods, "v1", "Pod")
        active = [p for p in mine if is_active_pod(p)]
        replicas = spec.get("replicas")
        want = 1 if replicas is None else int(replicas)
        failure: str | None = None
        if not deleting(rs):
            diff = len(active) - want
            if diff < 0:
                created, failure = await self._create(rs, min(-diff, BURST))
                active = [*active, *created]
            elif diff > 0:
                uids = {meta(p).get("uid") for p in mine}
                siblings = [p for p in pods if meta(p).get("uid") not in uids and is_active_pod(p)]
                doomed = pods_to_delete(active, min(diff, BURST), siblings)
                await self._delete(rs, doomed)
                gone = {meta(p).get("uid") for p in doomed}
                active = [p for p in active if meta(p).get("uid") not in gone]
        # status as it stands after this sync's own actions, so a deployment never counts a pod just deleted
        return await self._write_status(rs, active, failure)

    async def _create(self, rs: Obj, count: int) -> tuple[list[Obj], str | None]:
        """Create ``count`` pods in slow-start batches; the first error stops the rest (returned)."""
        batch, left = 1, count
        created: list[Obj] = []
        while left > 0:
            n = min(batch, left)
            results = await asyncio.gather(*(self._create_one(rs) for _ in range(n)), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            for r in results:
                if isinstance(r, dict):
                    created.append(r)
                    await record_event(self.client, rs, "Normal", "SuccessfulCreate",
                                       f"Created pod: {meta(r).get('name')}", COMPONENT)
            if errors:
                err = errors[0]
                await record_event(self.client, rs, "Warning", "FailedCreate", f"Error creating: {err}", COMPONENT)
                return created, str(err)
            left -= n
            batch *= 2
        return created, None

    async def _create_one(self, rs: Obj) -> Obj:
        for _ in range(5):
            try:
                return await self.client.create(pod_from_template(rs))
            except AlreadyExists:  # a generated name taken: draw another
                continue
        return await self.client.create(pod_from_template(rs))

    async def _delete(self, rs: Obj, pods: list[Obj]) -> None:
        async def one(pod: Obj) -> None:
            pm = meta(pod)
            try:
                await self.client.delete("v1", "Pod", pm["name"], pm.get("namespace") or "", uid=pm.get("uid", ""))
            except NotFoundError:
                return
            except Exception as e:
                await record_event(self.client, rs, "Warning", "FailedDelete",
                                   f"Error deleting: {e}", COMPONENT)
                raise
            await record_event(self.client, rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pm['name']}",
                               COMPONENT)

        results = await asyncio.gather(*(one(p) for p in pods), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _write_status(self, rs: Obj, active: list[Obj], failure: str | None) -> float | None:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        at = now()
        tmpl_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        ready = [p for p in active if is_pod_ready(p)]
        available = [p for p in ready if is_pod_available(p, min_ready, at)]
        old = dict(rs.get("status") or {})
        status: Obj = {"replicas": len(active)}
        for field, n in (("fullyLabeledReplicas", sum(_fully_labeled(p, tmpl_labels) for p in active)),
                         ("readyReplicas", len(ready)), ("availableReplicas", len(available)),
                         ("observedGeneration", int(meta(rs).get("generation") or 0))):
            if n:
                status[field] = n
        conds = [c for c in old.get("conditions") or [] if c.get("type") != "ReplicaFailure"]
        if failure is not None:
            prev = next((c for c in old.get("conditions") or [] if c.get("type") == "ReplicaFailure"), None)
            conds.append({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                          "message": failure[:1024],
                          "lastTransitionTime": (prev or {}).get("lastTransitionTime") or at.strftime(
                              "%Y-%m-%dT%H:%M:%SZ")})
        if conds:
            status["conditions"] = conds
        if status != old:
            rs["status"] = status
            await self.client.update_status(rs)
        waits = [w for p in ready if (w := until_available(p, min_ready, at)) is not None]
        if waits:
            return min(waits) + 0.05
        return None
