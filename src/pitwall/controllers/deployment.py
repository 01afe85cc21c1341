"""The Deployment controller: ReplicaSets per pod template, rolled by RollingUpdate or Recreate.

As upstream's (pkg/controller/deployment), one sync of a Deployment:

1. claims ReplicaSets (adopts orphans its selector matches, releases those
   that stop matching) and splits them into the *new* one (its template
   equals the Deployment's but for the ``pod-template-hash`` label; named
   ``<deployment>-<hash>``) and the *old* ones; keeps revisions
   (``deployment.kubernetes.io/revision`` on ReplicaSets and the
   Deployment; a ReplicaSet brought back by a rollback gets the next
   revision and remembers its old ones in ``revision-history``);
2. paused, or resized mid-rollout: only scales (proportionally across the
   active ReplicaSets), creates nothing;
3. RollingUpdate: scales the new ReplicaSet up to ``replicas + maxSurge``
   pods in all, then the old ones down while at least ``replicas -
   maxUnavailable`` pods stay available (unhealthy old pods first);
   Recreate: scales every old ReplicaSet to zero, waits until no old pod
   runs, then scales the new one up;
4. once complete, deletes old ReplicaSets beyond ``revisionHistoryLimit``;
5. writes status (replicas, updatedReplicas, readyReplicas,
   availableReplicas, unavailableReplicas, observedGeneration) with the
   Available and Progressing conditions, and asks to run again when the
   progress deadline would pass.

``kubectl rollout status/history/undo/pause/resume/restart`` work on what
this writes. Events: ScalingReplicaSet for every resize; NewReplicaSetAvailable,
DeploymentPaused, DeploymentResumed and ProgressDeadlineExceeded (a Warning)
as the rollout reaches them.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Sequence
from typing import Any

from pitwall.controllers._claim import claim
from pitwall.controllers._common import (
    controller_ref,
    deleting,
    match_selector,
    meta,
    now,
    owner_ref,
)
from pitwall.controllers.loop import object_key, record_event, split_key
from pitwall.controllers.rollout import (
    DESIRED_REPLICAS,
    FOUND_NEW_RS,
    HASH_LABEL,
    MAX_REPLICAS,
    NEW_RS_AVAILABLE,
    NEW_RS_CREATED,
    PAUSED,
    RESUMED,
    REVISION,
    REVISION_HISTORY,
    SKIPPED_ANNOTATIONS,
    TIMED_OUT,
    available_of,
    calculate_status,
    compact_status,
    compute_hash,
    deployment_complete,
    equal_ignore_hash,
    get_condition,
    has_progress_deadline,
    is_rolling,
    max_surge,
    max_unavailable,
    new_condition,
    new_rs_new_replicas,
    proportional_sizes,
    replicas_of,
    requeue_stuck,
    revision,
    set_condition,
    status_int,
    sync_progress,
)
from pitwall.incidents import ChangeEvent, ChangeKind, ChangeSink
from pitwall.kube import AlreadyExists, Conflict, KubeClient, NotFoundError

__all__ = ["DeploymentController"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
COMPONENT = "deployment-controller"
_MILESTONES = frozenset({NEW_RS_AVAILABLE, TIMED_OUT})  # Progressing reasons told as Events (and paused/resumed)


def _created(obj: Obj) -> tuple[str, str]:
    m = meta(obj)
    return str(m.get("creationTimestamp") or ""), str(m.get("name") or "")


class _Sync:
    """The state of one sync of one Deployment: its ReplicaSets, updated in place as they are scaled."""

    def __init__(self, d: Obj, rss: list[Obj], pods: list[Obj]) -> None:
        self.d = d
        self.rss = rss
        self.pods = pods
        self.new: Obj | None = None
        self.old: list[Obj] = []
        self.stored_status: Obj = copy.deepcopy(d.get("status") or {})
        self.split()

    def split(self) -> None:
        template = (self.d.get("spec") or {}).get("template")
        self.new = next((rs for rs in sorted(self.rss, key=_created)
                         if equal_ignore_hash((rs.get("spec") or {}).get("template"), template)), None)
        self.old = [rs for rs in self.rss if rs is not self.new]

    @property
    def all(self) -> list[Obj]:
        return [*self.old, *([self.new] if self.new is not None else [])]

    def replace(self, before: Obj, after: Obj) -> Obj:
        self.rss = [after if rs is before else rs for rs in self.rss]
        if self.new is before:
            self.new = after
        self.old = [after if rs is before else rs for rs in self.old]
        return after


class DeploymentController:
    """A ``Reconciler`` of apps/v1 Deployments (their ReplicaSets and, for Recreate, pods)."""

    name = COMPONENT
    primary = ("apps/v1", "Deployment")
    secondary: Sequence[tuple[str, str]] = (("apps/v1", "ReplicaSet"), ("v1", "Pod"))

    def __init__(self, client: KubeClient, *, changes: ChangeSink | None = None) -> None:
        self.client = client
        self.changes = changes  # rollouts, rollbacks and their outcome go on the incident timeline
        self._selectors: dict[str, Obj] = {}  # deployment key -> selector (orphan ReplicaSets)
        self._rs_owner: dict[str, str] = {}  # ReplicaSet key -> deployment key (pods)

    # ---- events to keys ------------------------------------------------------------------------------------
    def keys_for(self, api_version: str, kind: str, obj: dict[str, Any]) -> list[str]:
        ns = meta(obj).get("namespace") or ""
        if kind == "Deployment":
            key = object_key(obj)
            self._selectors[key] = (obj.get("spec") or {}).get("selector") or {}
            return [key]
        ref = controller_ref(obj)
        if kind == "ReplicaSet":
            if ref is not None:
                if ref.get("kind") != "Deployment":
                    return []
                key = f"{ns}/{ref.get('name')}"
                self._rs_owner[object_key(obj)] = key
                return [key]
            labels = meta(obj).get("labels") or {}
            return [k for k, sel in self._selectors.items() if k.startswith(f"{ns}/") and match_selector(sel, labels)]
        if ref is not None and ref.get("kind") == "ReplicaSet":  # a pod: its ReplicaSet's Deployment
            owner = self._rs_owner.get(f"{ns}/{ref.get('name')}")
            return [owner] if owner else []
        return []

    # ---- the sync ------------------------------------------------------------------------------------------
    async def reconcile(self, key: str) -> float | None:
        ns, name = split_key(key)
        try:
            d = await self.client.get("apps/v1", "Deployment", name, ns)
        except NotFoundError:
            self._selectors.pop(key, None)
            return None
        d.setdefault("apiVersion", "apps/v1")
        d.setdefault("kind", "Deployment")
        spec = d.get("spec") or {}
        self._selectors[key] = spec.get("selector") or {}
        rss = await claim(self.client, d, (await self.client.list("apps/v1", "ReplicaSet", ns)).items, "apps/v1",
                          "ReplicaSet")
        for rs in rss:
            self._rs_owner[object_key(rs)] = key
        pods: list[Obj] = []
        if not is_rolling(d):
            uids = {meta(rs).get("uid") for rs in rss}
            pods = [p for p in (await self.client.list("v1", "Pod", ns)).items
                    if (controller_ref(p) or {}).get("uid") in uids]
        s = _Sync(d, rss, pods)
        if deleting(d):
            await self._write_status(s, rollout=False)
            return None
        await self._check_paused_conditions(s)
        if spec.get("paused") or self._is_scaling_event(s):
            return await self._sync_only(s)
        if is_rolling(d):
            return await self._rolling(s)
        return await self._recreate(s)

    def _is_scaling_event(self, s: _Sync) -> bool:
        """Whether an active ReplicaSet was last scaled for another size than the Deployment's now."""
        want = str(replicas_of(s.d))
        for rs in s.all:
            if replicas_of(rs) <= 0:
                continue
            desired = (meta(rs).get("annotations") or {}).get(DESIRED_REPLICAS)
            if desired is not None and desired != want:
                return True
        return False

    async def _check_paused_conditions(self, s: _Sync) -> None:
        d = s.d
        if not has_progress_deadline(d):
            return
        status = d.setdefault("status", {})
        cond = get_condition(status, "Progressing")
        if cond is not None and cond.get("reason") == TIMED_OUT:
            return
        paused_cond = cond is not None and cond.get("reason") == PAUSED
        at = now()
        if (d.get("spec") or {}).get("paused") and not paused_cond:
            set_condition(status, new_condition("Progressing", "Unknown", PAUSED, "Deployment is paused", at))
            await record_event(self.client, d, "Normal", PAUSED, "Deployment is paused", COMPONENT)
        elif not (d.get("spec") or {}).get("paused") and paused_cond:
            set_condition(status, new_condition("Progressing", "Unknown", RESUMED, "Deployment is resumed", at))
            await record_event(self.client, d, "Normal", RESUMED, "Deployment is resumed", COMPONENT)

    # ---- new and old ReplicaSets ------------------------------------------------------------------------------
    async def _sync_revision(self, s: _Sync, create: bool) -> None:
        """Find or (``create``) make the new ReplicaSet; keep revisions and its annotations current."""
        d = s.d
        max_old = max((revision(rs) for rs in s.old), default=0)
        new_revision = max_old + 1
        if s.new is not None:
            rs = copy.deepcopy(s.new)
            old_rev = revision(rs)
            changed = self._set_rs_annotations(d, rs, new_revision, sizes=False)
            mrs = int((d.get("spec") or {}).get("minReadySeconds") or 0)
            if int((rs.get("spec") or {}).get("minReadySeconds") or 0) != mrs:
                rs["spec"]["minReadySeconds"] = mrs
                changed = True
            if changed:
                s.replace(s.new, await self._update_rs(rs))
            if 0 < old_rev < new_revision:  # an old template is back (rollout undo): told once it is written
                await self._change(d, "rollback", f"rolled back to replica set {meta(rs)['name']} "
                                   f"(revision {old_rev} is now {new_revision})", revision=new_revision)
            if has_progress_deadline(d) and get_condition(d.setdefault("status", {}), "Progressing") is None:
                set_condition(d["status"], new_condition("Progressing", "True", FOUND_NEW_RS,
                                                         f'Found new replica set "{meta(rs)["name"]}"', now()))
        elif create:
            await self._create_new_rs(s, new_revision)
        if s.new is not None:
            await self._set_deployment_revision(s, str(revision(s.new)))

    def _set_rs_annotations(self, d: Obj, rs: Obj, new_revision: int, *, sizes: bool = True) -> bool:
        """Copy the Deployment's annotations and set the revision (and, for a new one, size) annotations;
        whether any changed. An existing ReplicaSet's size annotations change only as it is scaled."""
        ann = meta(rs).setdefault("annotations", {})
        before = dict(ann)
        for k, v in (meta(d).get("annotations") or {}).items():
            if k not in SKIPPED_ANNOTATIONS:
                ann[k] = v
        old_rev = revision(rs)
        if old_rev < new_revision:
            if old_rev > 0:  # brought back by a rollback: remember the revisions it had
                hist = [h for h in str(ann.get(REVISION_HISTORY) or "").split(",") if h]
                ann[REVISION_HISTORY] = ",".join([*hist, str(old_rev)])
            ann[REVISION] = str(new_revision)
        if sizes:
            ann[DESIRED_REPLICAS] = str(replicas_of(d))
            ann[MAX_REPLICAS] = str(replicas_of(d) + max_surge(d))
        return bool(ann != before)

    async def _create_new_rs(self, s: _Sync, new_revision: int) -> None:
        d = s.d
        dm = meta(d)
        spec = d.get("spec") or {}
        collisions = (d.get("status") or {}).get("collisionCount")
        template = copy.deepcopy(spec.get("template") or {})
        h = compute_hash(template, collisions)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = h
        rs: Obj = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{dm['name']}-{h}", "namespace": dm.get("namespace") or "default",
                         "labels": dict(template["metadata"]["labels"]), "ownerReferences": [owner_ref(d)]},
            "spec": {"replicas": 0, "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                     "selector": selector, "template": template},
        }
        self._set_rs_annotations(d, rs, new_revision)
        rs["spec"]["replicas"] = new_rs_new_replicas(d, s.all, rs)
        try:
            created = await self.client.create(rs)
        except AlreadyExists:
            existing = await self.client.get("apps/v1", "ReplicaSet", rs["metadata"]["name"], rs["metadata"]["namespace"])
            ref = controller_ref(existing)
            if ref is not None and ref.get("uid") == dm.get("uid") and equal_ignore_hash(
                    (existing.get("spec") or {}).get("template"), spec.get("template")):
                existing.setdefault("apiVersion", "apps/v1")
                existing.setdefault("kind", "ReplicaSet")
                s.rss.append(existing)
                s.split()
                return
            # a hash collision: count it so the next name differs, and try again
            status = d.setdefault("status", {})
            status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
            await self.client.update_status(d)
            raise Conflict(f"replica set {rs['metadata']['name']} exists with another template: "
                           f"collisionCount now {status['collisionCount']}") from None
        created.setdefault("apiVersion", "apps/v1")
        created.setdefault("kind", "ReplicaSet")
        images = [str(c.get("image") or "") for c in (template.get("spec") or {}).get("containers") or []]
        await self._change(d, "deploy", f"rollout of revision {new_revision} started ({', '.join(images)})",
                           revision=new_revision, replica_set=meta(created)["name"], images=images)
        n = replicas_of(created)
        if n > 0:
            await record_event(self.client, d, "Normal", "ScalingReplicaSet",
                               f"Scaled up replica set {meta(created)['name']} from 0 to {n}", COMPONENT)
        s.rss.append(created)
        s.split()
        if has_progress_deadline(d):
            set_condition(d.setdefault("status", {}), new_condition(
                "Progressing", "True", NEW_RS_CREATED, f'Created new replica set "{meta(created)["name"]}"', now()))

    async def _set_deployment_revision(self, s: _Sync, rev: str) -> None:
        ann = meta(s.d).get("annotations") or {}
        if ann.get(REVISION) == rev:
            return
        fresh = copy.deepcopy(s.d)
        meta(fresh).setdefault("annotations", {})[REVISION] = rev
        fresh.pop("status", None)
        updated = await self.client.update(fresh)
        status = s.d.get("status")
        s.d = updated
        s.d.setdefault("apiVersion", "apps/v1")
        s.d.setdefault("kind", "Deployment")
        if status is not None:
            s.d["status"] = status  # the conditions this sync set, written with the status

    async def _update_rs(self, rs: Obj) -> Obj:
        out = await self.client.update(rs)
        out.setdefault("apiVersion", "apps/v1")
        out.setdefault("kind", "ReplicaSet")
        return out

    async def _scale(self, s: _Sync, rs: Obj, size: int) -> bool:
        """Set ``rs`` to ``size`` replicas (and its size annotations); whether the size changed."""
        cur = replicas_of(rs)
        new = copy.deepcopy(rs)
        ann = meta(new).setdefault("annotations", {})
        before = dict(ann)
        ann[DESIRED_REPLICAS] = str(replicas_of(s.d))
        ann[MAX_REPLICAS] = str(replicas_of(s.d) + max_surge(s.d))
        if cur == size and ann == before:
            return False
        new.setdefault("spec", {})["replicas"] = size
        s.replace(rs, await self._update_rs(new))
        if cur != size:
            direction = "up" if size > cur else "down"
            await record_event(self.client, s.d, "Normal", "ScalingReplicaSet",
                               f"Scaled {direction} replica set {meta(rs)['name']} from {cur} to {size}", COMPONENT)
        return cur != size

    # ---- strategies ---------------------------------------------------------------------------------------------
    async def _sync_only(self, s: _Sync) -> float | None:
        """Paused or resized: scale what exists, create nothing, keep the rollout's conditions."""
        await self._sync_revision(s, create=False)
        await self._proportional_scale(s)
        if (s.d.get("spec") or {}).get("paused"):
            await self._cleanup(s)
        await self._write_status(s, rollout=False)
        return None

    async def _proportional_scale(self, s: _Sync) -> None:
        d = s.d
        active = [rs for rs in s.all if replicas_of(rs) > 0]
        if len(active) <= 1:  # one active (or the latest): it gets the whole size
            target = active[0] if active else (s.new or (max(s.old, key=_created) if s.old else None))
            if target is not None:
                await self._scale(s, target, replicas_of(d))
            return
        new = s.new
        if (new is not None and replicas_of(new) == replicas_of(d)
                and (meta(new).get("annotations") or {}).get(DESIRED_REPLICAS) == str(replicas_of(d))
                and status_int(new, "availableReplicas") == replicas_of(d)):
            for rs in s.old:  # the new one is saturated: the old go
                if replicas_of(rs) > 0:
                    await self._scale(s, rs, 0)
            return
        if not is_rolling(d):
            return
        total = sum(replicas_of(rs) for rs in active)
        grow = replicas_of(d) + max_surge(d) - total > 0
        # largest first; newer first when growing, older first when shrinking
        active.sort(key=lambda rs: _created(rs), reverse=grow)
        active.sort(key=replicas_of, reverse=True)
        sizes = proportional_sizes(d, active, int((d.get("status") or {}).get("replicas") or 0))
        for rs, size in zip(list(active), sizes, strict=True):
            cur = next((r for r in s.rss if meta(r).get("uid") == meta(rs).get("uid")), rs)
            await self._scale(s, cur, size)

    async def _rolling(self, s: _Sync) -> float | None:
        await self._sync_revision(s, create=True)
        if await self._reconcile_new(s) or await self._reconcile_old(s):
            return await self._write_status(s, rollout=True)
        status = calculate_status(s.d, s.all, s.new, now())
        if deployment_complete(s.d, status):
            await self._cleanup(s)
        return await self._write_status(s, rollout=True)

    async def _reconcile_new(self, s: _Sync) -> bool:
        new, want = s.new, replicas_of(s.d)
        if new is None or replicas_of(new) == want:
            return False
        if replicas_of(new) > want:
            return await self._scale(s, new, want)
        return await self._scale(s, new, new_rs_new_replicas(s.d, s.all, new))

    async def _reconcile_old(self, s: _Sync) -> bool:
        d = s.d
        old_active = [rs for rs in s.old if replicas_of(rs) > 0]
        if not old_active:
            return False
        all_pods = sum(replicas_of(rs) for rs in s.all)
        min_available = replicas_of(d) - max_unavailable(d)
        new_unavailable = replicas_of(s.new) - available_of(s.new) if s.new is not None else 0
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        cleaned = await self._cleanup_unhealthy(s, max_scaled_down)
        scaled = await self._scale_down_old(s)
        return cleaned + scaled > 0

    async def _cleanup_unhealthy(self, s: _Sync, max_cleanup: int) -> int:
        """Scale old ReplicaSets down by their unavailable pods first (oldest ReplicaSet first)."""
        total = 0
        for rs in sorted((rs for rs in s.old if replicas_of(rs) > 0), key=_created):
            if total >= max_cleanup:
                break
            unhealthy = replicas_of(rs) - available_of(rs)
            if unhealthy <= 0:
                continue
            n = min(max_cleanup - total, unhealthy)
            await self._scale(s, rs, replicas_of(rs) - n)
            total += n
        return total

    async def _scale_down_old(self, s: _Sync) -> int:
        """Scale old ReplicaSets down while ``replicas - maxUnavailable`` pods stay available."""
        min_available = replicas_of(s.d) - max_unavailable(s.d)
        available = sum(available_of(rs) for rs in s.all)
        if available <= min_available:
            return 0
        budget = available - min_available
        done = 0
        for rs in sorted((rs for rs in s.old if replicas_of(rs) > 0), key=_created):
            if done >= budget:
                break
            # an old ReplicaSet's unavailable pods were already counted out above: only available ones spend budget
            n = min(replicas_of(rs), budget - done)
            await self._scale(s, rs, replicas_of(rs) - n)
            done += n
        return done

    async def _recreate(self, s: _Sync) -> float | None:
        await self._sync_revision(s, create=False)
        scaled = False
        for rs in list(s.old):
            if replicas_of(rs) > 0:
                scaled = await self._scale(s, rs, 0) or scaled
        if scaled or self._old_pods_running(s):
            return await self._write_status(s, rollout=True)
        if s.new is None:
            await self._sync_revision(s, create=True)
        if s.new is not None:
            await self._scale(s, s.new, replicas_of(s.d))
        status = calculate_status(s.d, s.all, s.new, now())
        if deployment_complete(s.d, status):
            await self._cleanup(s)
        return await self._write_status(s, rollout=True)

    def _old_pods_running(self, s: _Sync) -> bool:
        if sum(status_int(rs, "replicas") for rs in s.old) > 0:
            return True
        new_uid = meta(s.new).get("uid") if s.new is not None else None
        for pod in s.pods:
            if (controller_ref(pod) or {}).get("uid") == new_uid:
                continue
            if (pod.get("status") or {}).get("phase") not in ("Failed", "Succeeded"):
                return True  # a terminating pod still runs
        return False

    async def _cleanup(self, s: _Sync) -> None:
        """Delete the oldest unused ReplicaSets beyond ``revisionHistoryLimit``."""
        limit = (s.d.get("spec") or {}).get("revisionHistoryLimit")
        if limit is None:
            return
        candidates = [rs for rs in s.old if replicas_of(rs) == 0 and status_int(rs, "replicas") == 0
                      and not deleting(rs)]
        surplus = len(candidates) - int(limit)
        if surplus <= 0:
            return
        candidates.sort(key=lambda rs: (revision(rs), _created(rs)))
        for rs in candidates[:surplus]:
            m = meta(rs)
            if int(m.get("generation") or 0) > status_int(rs, "observedGeneration"):
                continue
            with contextlib.suppress(NotFoundError):
                await self.client.delete("apps/v1", "ReplicaSet", m["name"], m.get("namespace") or "",
                                         uid=m.get("uid", ""))
            s.rss = [r for r in s.rss if r is not rs]
            s.old = [r for r in s.old if r is not rs]

    # ---- status ---------------------------------------------------------------------------------------------
    async def _write_status(self, s: _Sync, *, rollout: bool) -> float | None:
        """Write status; with ``rollout``, move the Progressing condition (upstream syncRolloutStatus)."""
        d, at = s.d, now()
        status = calculate_status(d, s.all, s.new, at)
        after: float | None = None
        if rollout:
            sync_progress(d, status, meta(s.new)["name"] if s.new is not None else None, at)
            after = requeue_stuck(d, status, at)
        await self._progress_event(s, status)
        status = compact_status(status)
        if status != s.stored_status:
            d["status"] = status
            await self.client.update_status(d)
        return after

    async def _progress_event(self, s: _Sync, status: Obj) -> None:
        """An Event when the rollout reaches a milestone: complete, paused, resumed, or past its deadline."""
        was = (get_condition(s.stored_status, "Progressing") or {}).get("reason")
        cond = get_condition(status, "Progressing")
        if cond is None or cond.get("reason") == was or cond.get("reason") not in _MILESTONES:
            return
        type_ = "Warning" if cond["reason"] == TIMED_OUT else "Normal"
        await record_event(self.client, s.d, type_, str(cond["reason"]), str(cond.get("message") or ""), COMPONENT)
        await self._change(s.d, "deploy", str(cond.get("message") or cond["reason"]), reason=str(cond["reason"]))

    async def _change(self, d: Obj, kind: ChangeKind, what: str, **details: Any) -> None:
        """Report a change of a running service; like Events, a failure to record one never fails the sync."""
        if self.changes is None:
            return
        m = meta(d)
        service = f"{m.get('namespace') or 'default'}/{m.get('name')}"
        try:
            await self.changes.record(ChangeEvent(kind=kind, summary=f"Deployment {service}: {what}",
                                                  source=COMPONENT, service=service, details=details))
        except Exception as e:
            log.warning("could not record a change event", extra={"service": service, "error": repr(e)})
