"""Chaos Mesh's Schedule: spawn a chaos object from ``spec.<type>`` on a cron schedule.

As upstream: the most recent unmet activation since ``status.time`` (the
last schedule time; creation before the first) spawns one object named
``<schedule>-<random>`` with label ``managed-by: <schedule>`` and an owner
reference (so deleting the schedule deletes them); ``startingDeadlineSeconds``
skips activations missed by longer; ``concurrencyPolicy: Forbid`` (the
default) skips while a spawned chaos is unfinished; ``historyLimit`` keeps
the newest objects, deleting older finished ones; the pause annotation stops
spawning. The cron parser is the CronJob controller's.
"""

from __future__ import annotations

import contextlib
import secrets
import string
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pitwall.chaos.controller import desired_phase, is_paused
from pitwall.chaos.events import ChaosReport
from pitwall.chaos.model import API_VERSION, INJECTED, NOT_INJECTED, parse_time
from pitwall.controllers import CronError, Schedule, missed_times, record_event
from pitwall.kube import KubeClient, NotFoundError

__all__ = ["EMBED_FIELDS", "ScheduleReconciler", "chaos_finished", "random_suffix"]

Obj = dict[str, Any]
COMPONENT = "schedule-cron"
LABEL_MANAGED_BY = "managed-by"
EMBED_FIELDS = {"PodChaos": "podChaos", "NetworkChaos": "networkChaos", "HTTPChaos": "httpChaos",
                "StressChaos": "stressChaos", "IOChaos": "ioChaos", "TimeChaos": "timeChaos",
                "DNSChaos": "dnsChaos"}
_ONE_SHOT = ("pod-kill", "container-kill")


def chaos_finished(obj: Obj, now: datetime) -> bool:
    """Chaos Mesh's IsChaosFinished: stopped (deleted, or its duration over) and every record recovered;
    a one-shot pod-kill/container-kill is finished once injected."""
    st = obj.get("status") or {}
    records = (st.get("experiment") or {}).get("containerRecords") or []
    if (obj.get("spec") or {}).get("action") in _ONE_SHOT and obj.get("kind") == "PodChaos":
        return bool(records) and all(r.get("phase") == INJECTED for r in records)
    phase, _ = desired_phase({**obj, "metadata": {**obj.get("metadata", {}), "annotations": {}}}, False, now)
    return phase == "Stop" and all(r.get("phase") == NOT_INJECTED for r in records)


def random_suffix() -> str:
    """Five random lowercase letters and digits, as ``generateName`` appends."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(5))


class ScheduleReconciler:
    """Reconciles ``Schedule`` objects (a ``controllers.Reconciler``)."""

    name = "chaos-schedule"
    primary = (API_VERSION, "Schedule")

    def __init__(self, client: KubeClient, report: ChaosReport | None = None) -> None:
        self.client = client
        self.report = report
        self.secondary: Sequence[tuple[str, str]] = [(API_VERSION, k) for k in EMBED_FIELDS]

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        m = obj.get("metadata") or {}
        if kind == "Schedule":
            return [f"{m.get('namespace') or ''}/{m.get('name') or ''}"]
        owner = (m.get("labels") or {}).get(LABEL_MANAGED_BY)
        return [f"{m.get('namespace')}/{owner}"] if owner else []

    async def _spawned(self, sched: Obj) -> list[Obj]:
        m = sched["metadata"]
        kind = str(sched["spec"].get("type") or "")
        if kind not in EMBED_FIELDS:
            return []
        items = (await self.client.list(API_VERSION, kind, m["namespace"],
                                        label_selector=f"{LABEL_MANAGED_BY}={m['name']}")).items
        owned = [o for o in items if any(r.get("uid") == m.get("uid") for r in o["metadata"].get("ownerReferences")
                                         or [])]
        for o in owned:
            o.setdefault("kind", kind)
        return sorted(owned, key=lambda o: (o["metadata"].get("creationTimestamp") or "", o["metadata"]["name"]))

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            sched = await self.client.get(API_VERSION, "Schedule", name, ns)
        except NotFoundError:
            return None
        sched.setdefault("apiVersion", API_VERSION)
        sched.setdefault("kind", "Schedule")
        spec = sched.get("spec") or {}
        kind = str(spec.get("type") or "")
        now = datetime.now(UTC)
        if kind not in EMBED_FIELDS:
            await record_event(self.client, sched, "Warning", "Failed",
                               f"Failed to generate new object: unsupported schedule type {kind!r}", COMPONENT)
            return None
        spawned = await self._spawned(sched)
        await self._collect(sched, spawned, now)
        if is_paused(sched) or sched["metadata"].get("deletionTimestamp"):
            return None
        try:
            cron = Schedule.parse(str(spec.get("schedule") or ""))
        except CronError as e:
            await record_event(self.client, sched, "Warning", "Failed",
                               f"Failed to get run time: unparseable schedule: {spec.get('schedule')} : {e}",
                               COMPONENT)
            return None
        last = (sched.get("status") or {}).get("time")
        earliest = parse_time(str(last or sched["metadata"].get("creationTimestamp")))
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None:
            earliest = max(earliest, now - timedelta(seconds=int(deadline)))
        missed, count = missed_times(cron, earliest, now)
        nxt = cron.next(now)
        requeue = max((nxt - now).total_seconds(), 0.05) if nxt is not None else None
        if missed is None:
            return requeue
        if count > 100:
            await record_event(self.client, sched, "Warning", "Failed", "Failed to get run time: too many missed "
                               "start time (> 100). Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                               COMPONENT)
        policy = str(spec.get("concurrencyPolicy") or "Forbid")
        if policy == "Forbid":
            running = [o for o in spawned if not chaos_finished(o, now)]
            if running:
                await record_event(self.client, sched, "Normal", "Forbid",
                                   f"Forbid spawning new job because: {running[0]['metadata']['name']} is still running",
                                   COMPONENT)
                return min(requeue or 1.0, 1.0)
        made = await self._spawn(sched, kind)
        await record_event(self.client, sched, "Normal", "Spawned", f"Create new object: {made['metadata']['name']}",
                           COMPONENT)
        await self._status(sched, now, [*spawned, made])
        return requeue

    async def _spawn(self, sched: Obj, kind: str) -> Obj:
        m = sched["metadata"]
        obj = {"apiVersion": API_VERSION, "kind": kind,
               "metadata": {"name": f"{m['name']}-{random_suffix()}", "namespace": m["namespace"],
                            "labels": {LABEL_MANAGED_BY: m["name"]},
                            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "Schedule", "name": m["name"],
                                                 "uid": m.get("uid"), "controller": True,
                                                 "blockOwnerDeletion": True}]},
               "spec": dict(sched["spec"].get(EMBED_FIELDS[kind]) or {})}
        return await self.client.create(obj)

    async def _status(self, sched: Obj, when: datetime, active: list[Obj]) -> None:
        refs = [{"apiVersion": API_VERSION, "kind": o.get("kind"), "name": o["metadata"]["name"],
                 "namespace": o["metadata"]["namespace"], "uid": o["metadata"].get("uid")} for o in active]

        def change(o: Obj) -> None:
            o["status"] = {**(o.get("status") or {}), "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "active": refs}

        await self.client.modify(sched, change, status=True)

    async def _collect(self, sched: Obj, spawned: list[Obj], now: datetime) -> None:
        """Delete the oldest finished spawned objects beyond ``historyLimit``."""
        limit = int((sched.get("spec") or {}).get("historyLimit") or 1)
        extra = len(spawned) - limit
        for o in spawned[:max(extra, 0)]:
            if not chaos_finished(o, now):
                continue
            with contextlib.suppress(NotFoundError):
                await self.client.delete(API_VERSION, o["kind"], o["metadata"]["name"], o["metadata"]["namespace"])
