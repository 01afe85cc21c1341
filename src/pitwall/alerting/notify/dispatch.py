"""Aggregation groups: alerts routed together are notified together.

As in Alertmanager's ``dispatch/dispatch.go``: each matching route puts an
alert into the group keyed by the route and the alert's ``group_by`` labels.
A new group first flushes after ``group_wait`` (at once if its alert is
already older than that), then every ``group_interval``. A flush hands the
group's alerts (firing ones with their end time cleared, resolved ones as
they are) to the notify function; when that succeeds, resolved alerts that
did not change meanwhile leave the group, and an empty group is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from pitwall.alerting.notify.alerts import (
    AlertStore,
    StoredAlert,
    fingerprint,
    labels_before,
    labels_string,
    sort_alerts,
)
from pitwall.alerting.notify.route import Route

__all__ = ["AggrGroup", "Dispatcher", "NotifyGroup"]

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class AggrGroup:
    """The alerts of one (route, group labels) pair and the timer that flushes them."""

    def __init__(self, route: Route, labels: dict[str, str], notify: NotifyGroup) -> None:
        self.route = route
        self.labels = labels
        self.key = f"{route.key}:{labels_string(labels)}"
        self.alerts: dict[int, StoredAlert] = {}
        self.has_flushed = False
        self._notify = notify
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + route.group_wait_ms / 1000
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"aggr-group {self.key}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def insert(self, alert: StoredAlert) -> None:
        self.alerts[alert.fp] = alert
        # An alert older than group_wait need not wait for company: flush right away.
        if not self.has_flushed and alert.starts_at + timedelta(milliseconds=self.route.group_wait_ms) < _now():
            self._deadline = asyncio.get_running_loop().time()
            self._wake.set()

    def empty(self) -> bool:
        return not self.alerts

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = self._deadline - loop.time()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            self.has_flushed = True
            self._deadline = loop.time() + self.route.group_interval_ms / 1000
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("flushing alert group failed", extra={"group_key": self.key})

    async def flush(self) -> None:
        if self.empty():
            return
        now = _now()
        batch: list[StoredAlert] = []
        resolved: list[StoredAlert] = []
        for a in self.alerts.values():
            if a.resolved_at(now):
                resolved.append(a)
                batch.append(a)
            else:
                # Keep firing alerts from resolving mid-notification as time moves on.
                batch.append(replace(a, ends_at=None))
        if await self._notify(self, sort_alerts(batch), now):
            for a in resolved:
                cur = self.alerts.get(a.fp)
                if cur is not None and cur.updated_at == a.updated_at and cur.ends_at == a.ends_at:
                    del self.alerts[a.fp]


NotifyGroup = Callable[[AggrGroup, list[StoredAlert], datetime], Awaitable[bool]]


class Dispatcher:
    """Routes every alert the store receives into aggregation groups."""

    def __init__(self, route: Route, store: AlertStore, notify: NotifyGroup, max_groups: int) -> None:
        self.route = route
        self.store = store
        self.notify = notify
        self.max_groups = max_groups
        self.groups: dict[tuple[int, int], AggrGroup] = {}
        self._maint: asyncio.Task[None] | None = None
        self.dropped_groups = 0

    async def start(self) -> None:
        self.store.subscribe(self.process)
        for a in self.store.list():
            self.process(a)
        self._maint = asyncio.get_running_loop().create_task(self._maintain(), name="dispatcher-maintenance")

    async def stop(self) -> None:
        self.store.unsubscribe(self.process)
        if self._maint is not None:
            self._maint.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maint
        for g in list(self.groups.values()):
            await g.stop()
        self.groups.clear()

    def process(self, alert: StoredAlert) -> None:
        for route in self.route.match(alert.labels):
            labels = route.group_labels(alert.labels)
            key = (id(route), fingerprint(labels))
            group = self.groups.get(key)
            if group is None:
                if len(self.groups) >= self.max_groups:
                    self.dropped_groups += 1
                    log.error("too many alert groups; alert not grouped",
                              extra={"limit": self.max_groups, "alert": alert.fingerprint})
                    continue
                group = AggrGroup(route, labels, self.notify)
                self.groups[key] = group
                group.start()
            group.insert(alert)

    async def _maintain(self, every: float = 5.0) -> None:
        while True:
            await asyncio.sleep(every)
            for key, g in list(self.groups.items()):
                if g.empty():
                    del self.groups[key]
                    await g.stop()

    def snapshot(self) -> list[AggrGroup]:
        """Groups in Alertmanager's API order: by labels, then receiver."""
        import functools

        def cmp(a: AggrGroup, b: AggrGroup) -> int:
            if a.labels == b.labels:
                return (a.route.receiver > b.route.receiver) - (a.route.receiver < b.route.receiver)
            return -1 if labels_before(a.labels, b.labels) else 1

        return sorted(self.groups.values(), key=functools.cmp_to_key(cmp))
