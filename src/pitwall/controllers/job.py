"""The Job controller (batch/v1): run pods to completion, retry failures with back-off, give up on limits.

As upstream's (pkg/controller/job), one sync of a Job:

1. a finished Job (condition ``Complete`` or ``Failed``) only waits for
   ``ttlSecondsAfterFinished`` and then is deleted (its pods go with it,
   through the garbage collector);
2. claims its pods (selector ``batch.kubernetes.io/controller-uid``; the API
   server adds the labels ``job-name``, ``batch.kubernetes.io/job-name``,
   ``controller-uid`` to the template) and counts them: active, succeeded,
   failed — with ``restartPolicy: OnFailure`` the restarts of active pods
   count as failures too, as upstream counts them against ``backoffLimit``;
3. ``suspend``: deletes the active pods, sets ``Suspended``; resuming resets
   ``startTime``;
4. fails the Job (deleting the active pods) when failures exceed
   ``backoffLimit`` (reason ``BackoffLimitExceeded``) or the Job ran longer
   than ``activeDeadlineSeconds`` (``DeadlineExceeded``);
5. completes it when ``succeeded`` reaches ``completions`` (or, without
   ``completions``, once a pod succeeded and none is active);
6. otherwise keeps ``min(parallelism, completions - succeeded)`` pods active
   (``<job>-<5 letters>``, controlled by the Job), waiting between
   re-creations after failures: 10 s doubling per failure since the last
   success, at most 6 min;
7. writes ``status``: active, ready, succeeded, failed, startTime,
   completionTime and the conditions.

Only ``completionMode: NonIndexed`` is run; an Indexed Job gets a Warning
Event and no pods. Counts come from the pods that exist (pods are kept until
the Job goes, as upstream keeps them); there is no job-tracking finalizer,
so a finished pod deleted by hand is no longer counted.

Events: SuccessfulCreate, SuccessfulDelete, FailedCreate, Completed,
BackoffLimitExceeded, DeadlineExceeded, Suspended, Resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pitwall.controllers._claim import claim
from pitwall.controllers._common import (
    controller_ref,
    deleting,
    is_pod_ready,
    meta,
    now,
    restarts,
    selector_string,
)
from pitwall.controllers.loop import object_key, record_event, split_key
from pitwall.controllers.replicaset import pod_from_template
from pitwall.kube import AlreadyExists, Conflict, KubeClient, NotFoundError, fmt_time, parse_time

__all__ = ["BACKOFF_BASE_S", "BACKOFF_MAX_S", "JobController", "backoff_delay", "job_finished"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
COMPONENT = "job-controller"
BACKOFF_BASE_S = 10.0  # upstream DefaultJobPodFailureBackOff
BACKOFF_MAX_S = 360.0  # upstream MaxJobPodFailureBackOff
BURST = 500


def _cond(job: Obj, type_: str) -> Obj | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


def job_finished(job: Obj) -> tuple[str, datetime | None] | None:
    """``("Complete" | "Failed", when)`` once the Job finished; None while it runs."""
    for t in ("Complete", "Failed"):
        c = _cond(job, t)
        if c is not None and c.get("status") == "True":
            return t, parse_time(c.get("lastTransitionTime"))
    return None


def backoff_delay(failures: int, base_s: float = BACKOFF_BASE_S, max_s: float = BACKOFF_MAX_S) -> float:
    """The wait before re-creating a pod after ``failures`` failures: ``base * 2**(failures-1)``, capped."""
    if failures <= 0:
        return 0.0
    return float(min(base_s * (2 ** min(failures - 1, 30)), max_s))


def _finished_at(pod: Obj) -> datetime | None:
    """When a pod ended: its latest container's ``finishedAt`` (else its Ready condition's transition)."""
    status = pod.get("status") or {}
    times = [parse_time(((s.get("state") or {}).get("terminated") or {}).get("finishedAt"))
             for s in status.get("containerStatuses") or [] if isinstance(s, dict)]
    found = [t for t in times if t is not None]
    if found:
        return max(found)
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Ready":
            return parse_time(c.get("lastTransitionTime"))
    return parse_time(meta(pod).get("creationTimestamp"))


def _set_cond(conds: list[Obj], type_: str, status: str, reason: str, message: str, at: datetime) -> list[Obj]:
    out = [c for c in conds if c.get("type") != type_]
    prev = next((c for c in conds if c.get("type") == type_), None)
    transition = fmt_time(at) if prev is None or prev.get("status") != status else prev.get("lastTransitionTime")
    out.append({"type": type_, "status": status, "reason": reason, "message": message,
                "lastProbeTime": fmt_time(at), "lastTransitionTime": transition})
    return out


class JobController:
    """A ``Reconciler`` of batch/v1 Jobs (and their pods).

    ``now`` is the clock (injected by tests); ``backoff_base_s``/``backoff_max_s`` the pod re-creation
    back-off after failures (upstream's 10 s and 6 min).
    """

    name = COMPONENT
    primary = ("batch/v1", "Job")
    secondary: Sequence[tuple[str, str]] = (("v1", "Pod"),)

    def __init__(self, client: KubeClient, *, now: Callable[[], datetime] = now,
                 backoff_base_s: float = BACKOFF_BASE_S, backoff_max_s: float = BACKOFF_MAX_S) -> None:
        self.client = client
        self.now = now
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    def keys_for(self, api_version: str, kind: str, obj: dict[str, Any]) -> list[str]:
        if kind == "Job":
            return [object_key(obj)]
        ref = controller_ref(obj)
        if ref is not None and ref.get("kind") == "Job":
            return [f"{meta(obj).get('namespace') or ''}/{ref.get('name')}"]
        return []

    async def reconcile(self, key: str) -> float | None:
        ns, name = split_key(key)
        try:
            job = await self.client.get("batch/v1", "Job", name, ns)
        except NotFoundError:
            return None
        job.setdefault("apiVersion", "batch/v1")
        job.setdefault("kind", "Job")
        if deleting(job):
            return None
        at = self.now()
        finished = job_finished(job)
        if finished is not None:
            return await self._ttl(job, finished[1], at)
        spec = job.get("spec") or {}
        if (spec.get("completionMode") or "NonIndexed") != "NonIndexed":
            await record_event(self.client, job, "Warning", "UnsupportedCompletionMode",
                               "pitwall runs only completionMode NonIndexed", COMPONENT)
            return None

        sel = selector_string(spec.get("selector"))
        pods = (await self.client.list("v1", "Pod", ns, label_selector=sel or None)).items if sel else []
        mine = await claim(self.client, job, pods, "v1", "Pod")
        active = [p for p in mine if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                  and not deleting(p)]
        succeeded = [p for p in mine if (p.get("status") or {}).get("phase") == "Succeeded"]
        failed = [p for p in mine if (p.get("status") or {}).get("phase") == "Failed"]
        on_failure = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") == "OnFailure"
        n_failed = len(failed) + (sum(restarts(p) for p in active) if on_failure else 0)
        status: Obj = dict(job.get("status") or {})
        conds: list[Obj] = list(status.get("conditions") or [])
        after: float | None = None

        if spec.get("suspend"):
            await self._delete(job, active)
            active = []
            if (_cond(job, "Suspended") or {}).get("status") != "True":
                conds = _set_cond(conds, "Suspended", "True", "JobSuspended", "Job suspended", at)
                await record_event(self.client, job, "Normal", "Suspended", "Job suspended", COMPONENT)
            status.pop("startTime", None)
        else:
            if (_cond(job, "Suspended") or {}).get("status") == "True":
                conds = _set_cond(conds, "Suspended", "False", "JobResumed", "Job resumed", at)
                await record_event(self.client, job, "Normal", "Resumed", "Job resumed", COMPONENT)
                status["startTime"] = fmt_time(at)
            status.setdefault("startTime", fmt_time(at))
            start = parse_time(status["startTime"]) or at
            completions = spec.get("completions")
            raw_par, raw_limit = spec.get("parallelism"), spec.get("backoffLimit")
            parallelism = 1 if raw_par is None else int(raw_par)
            backoff_limit = 6 if raw_limit is None else int(raw_limit)
            deadline = spec.get("activeDeadlineSeconds")
            fail: tuple[str, str] | None = None
            if n_failed > backoff_limit:
                fail = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif deadline is not None and at >= start + timedelta(seconds=int(deadline)):
                fail = ("DeadlineExceeded", "Job was active longer than specified deadline")
            done = (len(succeeded) >= int(completions) if completions is not None
                    else bool(succeeded) and not active)
            if fail is not None:
                await self._delete(job, active)
                active = []
                conds = _set_cond(conds, "FailureTarget", "True", fail[0], fail[1], at)
                conds = _set_cond(conds, "Failed", "True", fail[0], fail[1], at)
                await record_event(self.client, job, "Warning", fail[0], fail[1], COMPONENT)
                after = self._ttl_left(job, at, at)
            elif done:
                if completions is not None:
                    await self._delete(job, active)  # more succeeded than asked: the rest are surplus
                    active = []
                conds = _set_cond(conds, "SuccessCriteriaMet", "True", "CompletionsReached",
                                  "Reached expected number of succeeded pods", at)
                conds = _set_cond(conds, "Complete", "True", "CompletionsReached",
                                  "Reached expected number of succeeded pods", at)
                status["completionTime"] = fmt_time(at)
                await record_event(self.client, job, "Normal", "Completed", "Job completed", COMPONENT)
                after = self._ttl_left(job, at, at)
            else:
                if completions is not None:
                    want = min(parallelism, int(completions) - len(succeeded))
                else:
                    want = 0 if succeeded else parallelism
                diff = want - len(active)
                if diff > 0:
                    wait = self._backoff_left(failed, succeeded, n_failed - len(failed), at)
                    if wait > 0:
                        after = wait
                    else:
                        active = [*active, *await self._create(job, min(diff, BURST))]
                elif diff < 0:  # parallelism lowered: the newest go first
                    surplus = sorted(active, key=lambda p: str(meta(p).get("creationTimestamp") or ""))[want:]
                    await self._delete(job, surplus)
                    gone = {meta(p).get("uid") for p in surplus}
                    active = [p for p in active if meta(p).get("uid") not in gone]
                if deadline is not None:
                    left = (start + timedelta(seconds=int(deadline)) - at).total_seconds()
                    after = left if after is None else min(after, left)

        status["active"] = len(active)
        status["ready"] = sum(1 for p in active if is_pod_ready(p))
        status["succeeded"] = len(succeeded)
        status["failed"] = n_failed
        status["terminating"] = sum(1 for p in mine if deleting(p))
        for f in ("active", "succeeded", "failed", "terminating"):
            if not status[f]:
                status.pop(f)
        if conds:
            status["conditions"] = conds
        if status != (job.get("status") or {}):
            job["status"] = status
            try:
                await self.client.update_status(job)
            except Conflict:
                return 0.0  # changed since read: sync again at once
        return after

    def _backoff_left(self, failed: list[Obj], succeeded: list[Obj], restarts_: int, at: datetime) -> float:
        """Seconds to wait before creating pods: the back-off of the failures since the last success (a
        success resets it, as upstream's back-off record), counted from the latest failure."""
        last_ok = max((t for p in succeeded if (t := _finished_at(p)) is not None), default=None)
        times = [t for p in failed if (t := _finished_at(p)) is not None and (last_ok is None or t > last_ok)]
        if not times:
            return 0.0
        delay = backoff_delay(len(times) + restarts_, self.backoff_base_s, self.backoff_max_s)
        return max(0.0, (max(times) + timedelta(seconds=delay) - at).total_seconds())

    def _ttl_left(self, job: Obj, finished_at: datetime, at: datetime) -> float | None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return None
        return max(0.0, (finished_at + timedelta(seconds=int(ttl)) - at).total_seconds())

    async def _ttl(self, job: Obj, finished_at: datetime | None, at: datetime) -> float | None:
        """upstream's TTL-after-finished controller: delete the Job (cascading) once its time is up."""
        left = self._ttl_left(job, finished_at or at, at)
        if left is None:
            return None
        if left > 0:
            return left
        m = meta(job)
        with contextlib.suppress(NotFoundError):
            await self.client.delete("batch/v1", "Job", m["name"], m.get("namespace") or "",
                                     propagation="Background", uid=m.get("uid", ""))
        return None

    async def _create(self, job: Obj, count: int) -> list[Obj]:
        """Create ``count`` pods in slow-start batches (1, 2, 4...); the first error stops the rest."""
        batch, left = 1, count
        created: list[Obj] = []
        while left > 0:
            n = min(batch, left)
            results = await asyncio.gather(*(self._create_one(job) for _ in range(n)), return_exceptions=True)
            for r in results:
                if isinstance(r, dict):
                    created.append(r)
                    await record_event(self.client, job, "Normal", "SuccessfulCreate",
                                       f"Created pod: {meta(r).get('name')}", COMPONENT)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                await record_event(self.client, job, "Warning", "FailedCreate", f"Error creating: {errors[0]}",
                                   COMPONENT)
                raise errors[0]
            left -= n
            batch *= 2
        return created

    async def _create_one(self, job: Obj) -> Obj:
        for _ in range(5):
            try:
                return await self.client.create(pod_from_template(job))
            except AlreadyExists:
                continue
        return await self.client.create(pod_from_template(job))

    async def _delete(self, job: Obj, pods: list[Obj]) -> None:
        for pod in pods:
            pm = meta(pod)
            try:
                await self.client.delete("v1", "Pod", pm["name"], pm.get("namespace") or "", uid=pm.get("uid", ""))
            except NotFoundError:
                continue
            await record_event(self.client, job, "Normal", "SuccessfulDelete", f"Deleted pod: {pm['name']}",
                               COMPONENT)
