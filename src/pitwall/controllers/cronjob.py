"""The CronJob controller (batch/v1): a Job per schedule time, concurrency rules, history limits.

As upstream's (pkg/controller/cronjob, the v2 controller), one sync of a CronJob:

1. reads the Jobs it controls; ``status.active`` loses finished or vanished
   Jobs (Event SawCompletedJob) and gains running ones missing from it;
   ``status.lastSuccessfulTime`` follows the latest completion (Event
   MissingJob for an active Job that vanished);
2. being deleted, suspended, an unknown ``timeZone`` (Warning
   UnknownTimeZone) or an unparseable schedule (Warning
   UnparseableSchedule): nothing is started;
3. finds the most recent schedule time not yet run, from
   ``lastScheduleTime`` (or the creation time), at most
   ``startingDeadlineSeconds`` back; more than 100 missed times is a Warning
   (TooManyMissedTimes) and only the latest runs; a time older than
   ``startingDeadlineSeconds`` is missed (Warning MissSchedule);
4. ``concurrencyPolicy``: ``Allow`` starts the Job anyway, ``Forbid`` skips
   the time while a Job is active (Event JobAlreadyActive), ``Replace``
   deletes the active Jobs first (SuccessfulDelete);
5. creates ``<cronjob>-<schedule time in minutes since the epoch>`` from
   ``jobTemplate`` (annotation ``batch.kubernetes.io/cronjob-scheduled-timestamp``),
   controlled by the CronJob (Event SuccessfulCreate), sets
   ``lastScheduleTime``;
6. deletes the oldest finished Jobs beyond ``successfulJobsHistoryLimit``
   (3) and ``failedJobsHistoryLimit`` (1);
7. asks to run again at the next schedule time.

``now`` (the clock) is injected, so tests step through schedule times.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pitwall.controllers._common import controller_ref, deleting, meta, now, owner_ref
from pitwall.controllers.cron import CronError, Schedule, missed_times
from pitwall.controllers.job import job_finished
from pitwall.controllers.loop import object_key, record_event, split_key
from pitwall.kube import AlreadyExists, Conflict, KubeClient, NotFoundError, fmt_time, parse_time

__all__ = ["CronJobController", "job_from_template", "job_name"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
COMPONENT = "cronjob-controller"
SCHEDULED_AT = "batch.kubernetes.io/cronjob-scheduled-timestamp"
TOO_MANY_MISSED = 100
_NUDGE_S = 0.1  # requeue a hair after the schedule time, so ``now`` is past it


def job_name(cronjob: str, scheduled: datetime) -> str:
    """``<cronjob>-<minutes since the epoch of the schedule time>``, as upstream names them."""
    return f"{cronjob}-{int(scheduled.timestamp()) // 60}"


def job_from_template(cj: Obj, scheduled: datetime) -> Obj:
    """The Job of ``cj`` for ``scheduled``: the template's labels, annotations and spec, controlled by ``cj``."""
    jt = (cj.get("spec") or {}).get("jobTemplate") or {}
    jm = jt.get("metadata") or {}
    m = meta(cj)
    annotations = dict(jm.get("annotations") or {})
    annotations[SCHEDULED_AT] = scheduled.isoformat()
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": job_name(m["name"], scheduled), "namespace": m.get("namespace") or "default",
                         "labels": dict(jm.get("labels") or {}), "annotations": annotations,
                         "ownerReferences": [owner_ref(cj)]},
            "spec": copy.deepcopy(jt.get("spec") or {})}


def _ref(job: Obj) -> Obj:
    m = meta(job)
    return {"apiVersion": "batch/v1", "kind": "Job", "name": m.get("name"), "namespace": m.get("namespace"),
            "uid": m.get("uid"), "resourceVersion": m.get("resourceVersion")}


def _finished_time(job: Obj) -> datetime | None:
    f = job_finished(job)
    return f[1] if f else None


class CronJobController:
    """A ``Reconciler`` of batch/v1 CronJobs (and their Jobs); ``now`` is the clock."""

    name = COMPONENT
    primary = ("batch/v1", "CronJob")
    secondary: Sequence[tuple[str, str]] = (("batch/v1", "Job"),)

    def __init__(self, client: KubeClient, *, now: Callable[[], datetime] = now) -> None:
        self.client = client
        self.now = now

    def keys_for(self, api_version: str, kind: str, obj: dict[str, Any]) -> list[str]:
        if kind == "CronJob":
            return [object_key(obj)]
        ref = controller_ref(obj)
        if ref is not None and ref.get("kind") == "CronJob":
            return [f"{meta(obj).get('namespace') or ''}/{ref.get('name')}"]
        return []

    async def reconcile(self, key: str) -> float | None:
        ns, name = split_key(key)
        try:
            cj = await self.client.get("batch/v1", "CronJob", name, ns)
        except NotFoundError:
            return None
        cj.setdefault("apiVersion", "batch/v1")
        cj.setdefault("kind", "CronJob")
        uid = meta(cj).get("uid")
        jobs = [j for j in (await self.client.list("batch/v1", "Job", ns)).items
                if (controller_ref(j) or {}).get("uid") == uid]
        for j in jobs:
            j.setdefault("apiVersion", "batch/v1")
            j.setdefault("kind", "Job")
        status: Obj = copy.deepcopy(cj.get("status") or {})
        await self._track_active(cj, jobs, status)
        after = await self._schedule(cj, jobs, status)
        await self._cleanup(cj, jobs, status)
        if not status.get("active"):
            status.pop("active", None)
        if status != (cj.get("status") or {}):
            cj["status"] = status
            try:
                await self.client.update_status(cj)
            except Conflict:
                return 0.0
        return after

    async def _track_active(self, cj: Obj, jobs: list[Obj], status: Obj) -> None:
        by_uid = {meta(j).get("uid"): j for j in jobs}
        active: list[Obj] = []
        for ref in status.get("active") or []:
            j = by_uid.get(ref.get("uid"))
            if j is None:
                await record_event(self.client, cj, "Normal", "MissingJob", f"Active job went missing: {ref.get('name')}",
                                   COMPONENT)
                continue
            if job_finished(j) is not None:
                f = job_finished(j)
                assert f is not None
                await record_event(self.client, cj, "Normal", "SawCompletedJob",
                                   f"Saw completed job: {meta(j).get('name')}, status: {f[0]}", COMPONENT)
                continue
            active.append(ref)
        listed = {r.get("uid") for r in active}
        for j in jobs:
            if job_finished(j) is None and not deleting(j) and meta(j).get("uid") not in listed:
                active.append(_ref(j))
        status["active"] = active
        last_ok = parse_time(status.get("lastSuccessfulTime"))
        for j in jobs:
            f = job_finished(j)
            if f is not None and f[0] == "Complete":
                t = parse_time((j.get("status") or {}).get("completionTime")) or f[1]
                if t is not None and (last_ok is None or t > last_ok):
                    last_ok = t
        if last_ok is not None:
            status["lastSuccessfulTime"] = fmt_time(last_ok)

    async def _schedule(self, cj: Obj, jobs: list[Obj], status: Obj) -> float | None:
        spec = cj.get("spec") or {}
        if deleting(cj) or spec.get("suspend"):
            return None
        try:
            sched = Schedule.parse(str(spec.get("schedule") or ""), spec.get("timeZone"))
        except CronError as e:
            reason = "UnknownTimeZone" if "time zone" in str(e) else "UnparseableSchedule"
            await record_event(self.client, cj, "Warning", reason, str(e), COMPONENT)
            return None
        at = self.now()
        earliest = parse_time(status.get("lastScheduleTime")) or parse_time(meta(cj).get("creationTimestamp")) or at
        sds = spec.get("startingDeadlineSeconds")
        if sds is not None:
            deadline = at - timedelta(seconds=int(sds))
            earliest = max(earliest, deadline)
        scheduled, missed = missed_times(sched, earliest, at, TOO_MANY_MISSED)
        if missed > TOO_MANY_MISSED:
            await record_event(self.client, cj, "Warning", "TooManyMissedTimes",
                               f"too many missed start times: {missed - 1}+. Set or decrease "
                               ".spec.startingDeadlineSeconds or check clock skew", COMPONENT)
        if scheduled is not None:
            await self._run(cj, jobs, status, scheduled, at)
        return self._until_next(sched, at)

    def _until_next(self, sched: Schedule, at: datetime) -> float | None:
        nxt = sched.next(at)
        if nxt is None:
            return None
        return max(0.0, (nxt - at).total_seconds()) + _NUDGE_S

    async def _run(self, cj: Obj, jobs: list[Obj], status: Obj, scheduled: datetime, at: datetime) -> None:
        spec = cj.get("spec") or {}
        sds = spec.get("startingDeadlineSeconds")
        if sds is not None and scheduled + timedelta(seconds=int(sds)) < at:
            await record_event(self.client, cj, "Warning", "MissSchedule",
                               f"Missed scheduled time to start a job: {fmt_time(scheduled)}", COMPONENT)
            return
        name = job_name(meta(cj)["name"], scheduled)
        if any(meta(j).get("name") == name for j in jobs):  # already started (the status update was lost)
            status["lastScheduleTime"] = fmt_time(scheduled.astimezone(UTC))
            return
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and status.get("active"):
            await record_event(self.client, cj, "Normal", "JobAlreadyActive",
                               "Not starting job because prior execution is running and concurrency policy is "
                               "Forbid", COMPONENT)
            return
        if policy == "Replace":
            for ref in list(status.get("active") or []):
                with contextlib.suppress(NotFoundError):
                    await self.client.delete("batch/v1", "Job", str(ref.get("name")), meta(cj).get("namespace") or "",
                                             propagation="Background")
                    await record_event(self.client, cj, "Normal", "SuccessfulDelete", f"Deleted job {ref.get('name')}",
                                       COMPONENT)
            status["active"] = []
        try:
            job = await self.client.create(job_from_template(cj, scheduled))
        except AlreadyExists:
            job = await self.client.get("batch/v1", "Job", name, meta(cj).get("namespace") or "")
            if (controller_ref(job) or {}).get("uid") != meta(cj).get("uid"):
                await record_event(self.client, cj, "Warning", "FailedCreate",
                                   f"Error creating job: job {name} exists and is not controlled by this CronJob",
                                   COMPONENT)
                return
        else:
            await record_event(self.client, cj, "Normal", "SuccessfulCreate", f"Created job {name}", COMPONENT)
        status.setdefault("active", []).append(_ref(job))
        status["lastScheduleTime"] = fmt_time(scheduled.astimezone(UTC))

    async def _cleanup(self, cj: Obj, jobs: list[Obj], status: Obj) -> None:
        spec = cj.get("spec") or {}
        ok = [j for j in jobs if (f := job_finished(j)) is not None and f[0] == "Complete" and not deleting(j)]
        bad = [j for j in jobs if (f := job_finished(j)) is not None and f[0] == "Failed" and not deleting(j)]
        for finished, limit_key, default in ((ok, "successfulJobsHistoryLimit", 3), (bad, "failedJobsHistoryLimit", 1)):
            raw = spec.get(limit_key)
            limit = default if raw is None else int(raw)
            if len(finished) <= limit:
                continue
            finished.sort(key=lambda j: (parse_time((j.get("status") or {}).get("startTime"))
                                         or _finished_time(j) or datetime.min.replace(tzinfo=UTC)))
            for j in finished[:len(finished) - limit]:
                m = meta(j)
                with contextlib.suppress(NotFoundError):
                    await self.client.delete("batch/v1", "Job", m["name"], m.get("namespace") or "",
                                             propagation="Background", uid=m.get("uid", ""))
                    await record_event(self.client, cj, "Normal", "SuccessfulDelete", f"Deleted job {m['name']}",
                                       COMPONENT)
