"""Pipeline schedules: a pipeline per cron activation, ``CI_PIPELINE_SOURCE=schedule``.

Two kinds: those in the configuration (``pipelines.schedules``) and those made through GitLab's API
(``projects/:id/pipeline_schedules``), each one key in the revisioned store holding the schedule and the
last activation it ran. As GitLab, activations missed while pitwall was down run once (the latest), not
once each; the last activation run is stored, so a restart does not run it twice, and it is claimed by
compare-and-swap, so servers sharing the store run each activation once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from pitwall.controllers import CronError, Schedule
from pitwall.core.errors import BadData, NotFound, PitwallError, Unavailable
from pitwall.pipelines.runner import PipelineRunner
from pitwall.pipelines.settings import PipelineSchedule
from pitwall.pipelines.store import PREFIX
from pitwall.storage.revstore import Compare, Op

__all__ = ["ScheduleStore", "Scheduler", "next_run"]

log = logging.getLogger(__name__)
MAX_SLEEP_S = 30.0
STORED = f"{PREFIX}pipeline-schedules/"
MAX_SCHEDULES = 1000
MAX_SCHEDULE_VARIABLES = 200
MAX_CAS_TRIES = 8
EDITABLE = ("description", "ref", "cron", "cron_timezone", "active")


def next_run(s: dict[str, Any]) -> datetime | None:
    """When a stored schedule runs next (None: inactive or never)."""
    if not s["active"]:
        return None
    return Schedule.parse(s["cron"], s["cron_timezone"] or None).next(
        datetime.fromtimestamp(s["last"], UTC))


def _check(s: dict[str, Any]) -> None:
    for k in ("description", "ref", "cron", "cron_timezone"):
        if not isinstance(s[k], str) or len(s[k]) > 1024:
            raise BadData(f"400 Bad request - {k} must be a string of at most 1024 characters")
    if not s["ref"]:
        raise BadData("400 Bad request - ref is missing")
    if not isinstance(s["active"], bool):
        raise BadData("400 Bad request - active is invalid")
    try:
        Schedule.parse(s["cron"], s["cron_timezone"] or None)
    except CronError as e:
        raise BadData(f"400 Bad request - cron is invalid: {e}") from None


def _variable(v: dict[str, Any]) -> dict[str, Any]:
    key, value, vtype = v.get("key"), v.get("value"), v.get("variable_type", "env_var")
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,255}", key):
        raise BadData("400 Bad request - key can contain only letters, digits and '_'")
    if not isinstance(value, str) or len(value.encode()) > 10_000:
        raise BadData("400 Bad request - value must be a string of at most 10000 bytes")
    if vtype not in ("env_var", "file"):
        raise BadData("400 Bad request - variable_type does not have a valid value")
    return {"key": key, "value": value, "variable_type": vtype}


class ScheduleStore:
    """GitLab's pipeline schedules made through the API, as revstore keys."""

    def __init__(self, runner: PipelineRunner) -> None:
        self.runner = runner
        self.store = runner.store.store

    async def list(self, project_id: int | None = None) -> list[dict[str, Any]]:
        res = await self.store.range(STORED)
        out = [orjson.loads(kv.value) for kv in res.kvs]
        return [s for s in out if project_id is None or s["project_id"] == project_id]

    async def get(self, project_id: int, sid: int) -> dict[str, Any]:
        kv = await self.store.get(f"{STORED}{sid:012d}")
        s = orjson.loads(kv.value) if kv is not None else None
        if s is None or s["project_id"] != project_id:
            raise NotFound("404 Pipeline Schedule Not Found")
        return s  # type: ignore[no-any-return]

    async def create(self, project_id: int, fields: dict[str, Any], owner: str) -> dict[str, Any]:
        if len(await self.list()) >= MAX_SCHEDULES:
            raise BadData(f"400 Bad request - at most {MAX_SCHEDULES} pipeline schedules")
        now = time.time()
        s = {"id": 0, "project_id": project_id, "description": fields.get("description", ""),
             "ref": fields.get("ref", ""), "cron": fields.get("cron", ""),
             "cron_timezone": fields.get("cron_timezone") or "UTC", "active": fields.get("active", True),
             "created_at": now, "updated_at": now, "owner": owner, "variables": [], "last": now,
             "last_pipeline_id": None}
        _check(s)
        s["id"] = await self.runner.store.next_id("pipeline-schedule")
        await self.store.put(f"{STORED}{s['id']:012d}", orjson.dumps(s))
        return s

    async def update(self, project_id: int, sid: int, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply ``change`` to the stored schedule by compare-and-swap (the sweep writes it too)."""
        key = f"{STORED}{sid:012d}"
        for _ in range(MAX_CAS_TRIES):
            kv = await self.store.get(key)
            s = orjson.loads(kv.value) if kv is not None else None
            if kv is None or s is None or s["project_id"] != project_id:
                raise NotFound("404 Pipeline Schedule Not Found")
            change(s)
            s["updated_at"] = time.time()
            _check(s)
            res = await self.store.txn([Compare(key, "mod", "=", kv.mod_revision)], [Op.put(key, orjson.dumps(s))])
            if res.succeeded:
                return s  # type: ignore[no-any-return]
        raise Unavailable("503 the schedule kept changing; try again")

    async def edit(self, project_id: int, sid: int, fields: dict[str, Any]) -> dict[str, Any]:
        def change(s: dict[str, Any]) -> None:
            timing = any(k in fields and fields[k] != s[k] for k in ("cron", "cron_timezone", "active"))
            s.update({k: fields[k] for k in EDITABLE if k in fields})
            if timing:  # as GitLab: the next run is the next activation from now, not a missed one
                s["last"] = time.time()

        return await self.update(project_id, sid, change)

    async def delete(self, project_id: int, sid: int) -> dict[str, Any]:
        s = await self.get(project_id, sid)
        await self.store.delete(f"{STORED}{sid:012d}")
        return s

    async def set_variable(self, project_id: int, sid: int, v: dict[str, Any], *, new: bool) -> dict[str, Any]:
        var = _variable(v)

        def change(s: dict[str, Any]) -> None:
            exists = any(x["key"] == var["key"] for x in s["variables"])
            if new and exists:
                raise BadData(f"400 Bad request - variable {var['key']} has already been taken")
            if not new and not exists:
                raise NotFound("404 Variable Not Found")
            if new and len(s["variables"]) >= MAX_SCHEDULE_VARIABLES:
                raise BadData(f"400 Bad request - at most {MAX_SCHEDULE_VARIABLES} variables")
            s["variables"] = [x for x in s["variables"] if x["key"] != var["key"]] + [var]

        await self.update(project_id, sid, change)
        return var

    async def delete_variable(self, project_id: int, sid: int, key: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def change(s: dict[str, Any]) -> None:
            found[:] = [x for x in s["variables"] if x["key"] == key]
            if not found:
                raise NotFound("404 Variable Not Found")
            s["variables"] = [x for x in s["variables"] if x["key"] != key]

        await self.update(project_id, sid, change)
        return found[0]

    async def play(self, s: dict[str, Any], user: str) -> dict[str, Any]:
        """Run the schedule's pipeline now; the next scheduled run is unchanged."""
        project = await self.runner.store.project(s["project_id"])
        if project is None:
            raise NotFound("404 Project Not Found")
        p = await self.runner.create(project["repo"], s["ref"].removeprefix("refs/heads/"), s["variables"],
                                     source="schedule", user=user, schedule_id=s["id"])
        await self.update(s["project_id"], s["id"], lambda x: x.update(last_pipeline_id=p["id"]))
        return p


def _key(s: PipelineSchedule) -> str:
    ident = f"{s.repo.expanduser().resolve()}\0{s.ref}\0{s.cron}\0{s.cron_timezone}"
    return f"{PREFIX}schedules/{hashlib.sha256(ident.encode()).hexdigest()[:32]}"


class Scheduler:
    """The component that runs ``pipelines.schedules``."""

    name = "pipelines-schedules"

    def __init__(self, runner: PipelineRunner, schedules: list[PipelineSchedule]) -> None:
        self.runner = runner
        self.schedules = schedules
        self.stored = ScheduleStore(runner)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="pipelines-schedules")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick(datetime.now(UTC))
            except Exception:
                log.exception("pipeline schedules failed")
            await asyncio.sleep(MAX_SLEEP_S)

    async def tick(self, now: datetime) -> list[int]:
        """Run every schedule with an activation since it last ran (once each); the pipelines started."""
        return [*await self._configured(now), *await self._stored(now)]

    async def _stored(self, now: datetime) -> list[int]:
        started = []
        for s in await self.stored.list():
            due = next_run(s)
            if due is None or due > now:
                continue
            key = f"{STORED}{s['id']:012d}"
            kv = await self.runner.store.store.get(key)
            if kv is None or orjson.loads(kv.value)["last"] != s["last"]:
                continue  # changed since listed: the next tick sees it
            s["last"] = now.timestamp()
            claim = await self.runner.store.store.txn([Compare(key, "mod", "=", kv.mod_revision)],
                                                      [Op.put(key, orjson.dumps(s))])
            if not claim.succeeded:
                continue
            try:
                p = await self.stored.play(s, s["owner"] or "schedule")
            except PitwallError as e:
                log.warning("scheduled pipeline %r did not start: %s", s["description"] or s["cron"], e.message)
                continue
            started.append(p["id"])
        return started

    async def _configured(self, now: datetime) -> list[int]:
        started = []
        for s in self.schedules:
            if not s.active:
                continue
            cron = Schedule.parse(s.cron, s.cron_timezone or None)
            key = _key(s)
            store = self.runner.store.store
            kv = await store.get(key)
            if kv is None:  # first sight: from now on
                await store.txn([Compare(key, "create", "=", 0)], [Op.put(key, orjson.dumps({"last": now.timestamp()}))])
                continue
            last = datetime.fromtimestamp(orjson.loads(kv.value)["last"], UTC)
            due = cron.next(last)
            if due is None or due > now:
                continue
            # Claim the activation: of servers sharing the store, only the one whose write lands runs it.
            claim = await store.txn([Compare(key, "mod", "=", kv.mod_revision)],
                                    [Op.put(key, orjson.dumps({"last": now.timestamp()}))])
            if not claim.succeeded:
                continue
            variables = [{"key": k, "value": v} for k, v in s.variables.items()]
            try:
                p = await self.runner.create(str(s.repo), s.ref or None, variables, source="schedule",
                                             user="schedule")
            except PitwallError as e:
                log.warning("scheduled pipeline %r did not start: %s", s.description or s.cron, e.message)
                continue
            started.append(p["id"])
        return started
