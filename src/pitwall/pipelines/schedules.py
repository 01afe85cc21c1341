"""Pipeline schedules: a pipeline per cron activation, ``CI_PIPELINE_SOURCE=schedule``.

As GitLab, activations missed while pitwall was down run once (the latest), not once each; the last
activation run is a key in the revisioned store per schedule, so a restart does not run it twice, and it
is claimed by compare-and-swap, so servers sharing the store run each activation once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from datetime import UTC, datetime

import orjson

from pitwall.controllers import Schedule
from pitwall.core.errors import PitwallError
from pitwall.pipelines.runner import PipelineRunner
from pitwall.pipelines.settings import PipelineSchedule
from pitwall.pipelines.store import PREFIX
from pitwall.storage.revstore import Compare, Op

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)
MAX_SLEEP_S = 30.0


def _key(s: PipelineSchedule) -> str:
    ident = f"{s.repo.expanduser().resolve()}\0{s.ref}\0{s.cron}\0{s.cron_timezone}"
    return f"{PREFIX}schedules/{hashlib.sha256(ident.encode()).hexdigest()[:32]}"


class Scheduler:
    """The component that runs ``pipelines.schedules``."""

    name = "pipelines-schedules"

    def __init__(self, runner: PipelineRunner, schedules: list[PipelineSchedule]) -> None:
        self.runner = runner
        self.schedules = schedules
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
            await asyncio.sleep(MAX_SLEEP_S if self.schedules else 300.0)

    async def tick(self, now: datetime) -> list[int]:
        """Run every schedule with an activation since it last ran (once each); the pipelines started."""
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
