"""The notification pipeline: alerts in, deduplicated notifications out.

``NotificationPipeline`` is the Component that holds the alert store, the
dispatcher, inhibition, silences, the notification log and the delivery
queue. A flush runs Alertmanager's stages: inhibition, active/mute time
intervals, silences, then per integration the dedup check against the
notification log. A notification that needs sending is first written to
the state store's queue, then delivered; failures are retried with
exponential backoff, across restarts, until delivered, superseded by a newer
notification for the same group, or older than ``retry_max_age``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pitwall.alerting.model import Alert
from pitwall.alerting.notify.alerts import AlertStore, StoredAlert
from pitwall.alerting.notify.config import LoadedConfig, load_config_file, parse_config
from pitwall.alerting.notify.dispatch import AggrGroup, Dispatcher
from pitwall.alerting.notify.errors import DeliveryError, InvalidAlert, QueueFull, SharingFailed
from pitwall.alerting.notify.inhibit import Inhibitor, InhibitRule
from pitwall.alerting.notify.matchers import is_valid_label_name
from pitwall.alerting.notify.nflog import NotificationLog, needs_update
from pitwall.alerting.notify.notifiers import IncidentIntake, Integration, NotifyContext, build_integrations
from pitwall.alerting.notify.route import Route, build_route
from pitwall.alerting.notify.settings import NotificationSettings
from pitwall.alerting.notify.shared import SharedAlerts
from pitwall.alerting.notify.silences import Silences
from pitwall.alerting.notify.templates import Templates
from pitwall.alerting.notify.timeintervals import any_contains
from pitwall.core.tasks import Supervisor
from pitwall.storage.revstore import RevStore
from pitwall.storage.state import PendingRow, StateStore

__all__ = ["DEFAULT_CONFIG", "AlertStatus", "NotificationPipeline"]

log = logging.getLogger(__name__)

# Used when pitwall.yaml names no alertmanager_config: alerts are kept and queryable, nothing is sent.
DEFAULT_CONFIG = "route:\n  receiver: default\nreceivers:\n  - name: default\n"


def _utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AlertStatus:
    state: str  # "active" | "suppressed" | "unprocessed"
    silenced_by: list[str]
    inhibited_by: list[str]
    muted_by: list[str]


@dataclass
class _Runtime:
    """Everything derived from one configuration; swapped whole on reload."""

    config: LoadedConfig
    route: Route
    templates: Templates
    inhibitor: Inhibitor
    integrations: dict[str, list[Integration]]
    dispatcher: Dispatcher


def _ser(a: StoredAlert) -> dict[str, Any]:
    return {"labels": a.labels, "annotations": a.annotations, "startsAt": a.starts_at.timestamp(),
            "endsAt": a.ends_at.timestamp() if a.ends_at else None, "updatedAt": a.updated_at.timestamp(),
            "generatorURL": a.generator_url}


def _de(d: dict[str, Any]) -> StoredAlert:
    def ts(x: float) -> datetime:
        return datetime.fromtimestamp(x, UTC)

    return StoredAlert(dict(d["labels"]), dict(d["annotations"]), ts(d["startsAt"]),
                       ts(d["endsAt"]) if d["endsAt"] is not None else None, ts(d["updatedAt"]),
                       d.get("generatorURL", ""))


def integration_key(receiver: str, integ: Integration) -> str:
    """nflog/queue key of one integration: ``receiver/webhook/0``."""
    return f"{receiver}/{integ.name}/{integ.index}"


class NotificationPipeline:
    """The Component behind ``/api/v2`` and the rule manager's NotifyFunc."""

    name = "notifications"

    def __init__(self, settings: NotificationSettings, state: StateStore, config_path: Path | None,
                 external_url: str) -> None:
        self.settings = settings
        self.state = state
        self.config_path = config_path
        self.external_url = external_url.rstrip("/")
        self.alerts = AlertStore(settings.max_alerts)
        retention = timedelta(milliseconds=settings.data_retention)
        self.silences = Silences(state, retention)
        self.nflog = NotificationLog(state, retention)
        self.started_at = _utc()
        # pitwall_incident_configs deliver here; the composition root sets it once incidents are built.
        self.incidents: IncidentIntake | None = None
        self.rt = self._build(self._load(config_path))
        self._queue: list[tuple[float, int]] = []  # (due unix time, pending id)
        self._inflight: set[int] = set()
        self._wake = asyncio.Event()
        self.tasks = Supervisor("notifications")
        self._sem = asyncio.Semaphore(settings.send_concurrency)
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        # Several servers: only the one for which ``leading()`` holds sends (see ``follow``).
        self.leading: Callable[[], bool] = lambda: True
        self.gated = False
        self._current = True  # whether the in-memory log and queue reflect the shared state store
        self.shared: SharedAlerts | None = None  # several servers: one alert space in the state store
        self._silences_read = 0.0  # monotonic time the silences were last re-read (several servers)

    # -- configuration ----------------------------------------------------
    @staticmethod
    def _load(path: Path | None) -> LoadedConfig:
        return load_config_file(path) if path is not None else parse_config(DEFAULT_CONFIG)

    def _build(self, cfg: LoadedConfig) -> _Runtime:
        route = build_route(cfg.route)
        templates = Templates(cfg.template_files)
        inhibitor = Inhibitor([InhibitRule.from_config(r) for r in cfg.config.inhibit_rules], self.alerts.list)
        integrations = {r.name: build_integrations(r, cfg.config.global_, lambda: self.incidents)
                        for r in cfg.config.receivers}
        dispatcher = Dispatcher(route, self.alerts, self._notify_group, self.settings.max_groups)
        return _Runtime(cfg, route, templates, inhibitor, integrations, dispatcher)

    @property
    def config(self) -> LoadedConfig:
        return self.rt.config

    async def reload(self, config_path: Path | None) -> None:
        """Apply a new configuration; a bad one raises ConfigError and the old one stays."""
        new = self._build(self._load(config_path))
        old = self.rt
        await old.dispatcher.stop()
        self.config_path = config_path
        self.rt = new
        await new.dispatcher.start()
        await self._close_integrations(old)
        log.info("alertmanager configuration applied", extra={"alertmanager_config": str(config_path)})

    # -- several servers --------------------------------------------------
    def follow(self, leading: Callable[[], bool], shared: RevStore | None = None) -> None:
        """Send notifications only while ``leading()`` (a leader election's state); call before ``start``.

        With ``shared`` (the servers' common state store) every alert a server receives is written there
        and every server takes in what the others received (``SharedAlerts``), so an alert posted to a
        follower reaches the leader at once. Every server groups every alert, so a new leader has the groups
        already; the dedup stage and the sender run only on the leader, which dedupes against the
        notification log in the shared ``notifications.state_url``. A follower leaves queued notifications
        in that store.
        """
        self.leading = leading
        self.gated = True
        if shared is not None:
            self.shared = SharedAlerts(shared, self._take_shared)
        if self.state.engine.dialect.name == "sqlite":
            log.warning("notifications: several servers share the state but notifications.state_url is this "
                        "server's own SQLite file; a new leader may repeat what the old one sent; point every "
                        "server's notifications.state_url at one PostgreSQL database")

    def _take_shared(self, alert: StoredAlert) -> bool:
        """An alert another server received; refused (False) when it is new and ``max_alerts`` are held."""
        if self.alerts.get(alert.fp) is None and len(self.alerts) >= self.settings.max_alerts:
            return False
        self.alerts.put(alert)
        return True

    def _leads(self) -> bool:
        """Whether to dedup and send now (the fence before each); on gaining the lead, first re-read the
        notification log, silences and queue that the previous leader wrote to the shared store."""
        if not self.leading():
            self._current = False
            return False
        if not self._current:
            self.nflog.load()
            self.silences.load()
            self._queue = [(row.next_attempt, row.id) for row in self.state.list_pending()]
            heapq.heapify(self._queue)
            self._current = True
            self._wake.set()
            log.info("notifications: leading; continuing from the shared notification log",
                     extra={"pending": len(self._queue)})
        return True

    def _refresh_silences(self, every_s: float = 1.0) -> None:
        """Several servers: re-read the silences (any server's API may have changed them in the shared store)."""
        if time.monotonic() - self._silences_read >= every_s:
            self.silences.load()
            self._silences_read = time.monotonic()

    # -- lifecycle --------------------------------------------------------
    async def start(self) -> None:
        self.silences.load()
        self.nflog.load()
        for row in self.state.list_pending():
            heapq.heappush(self._queue, (row.next_attempt, row.id))
        await self.rt.dispatcher.start()
        if self.shared is not None:
            self.tasks.spawn(self.shared.run(), name="shared alerts")
        self.tasks.spawn(self._deliver_loop(), name="delivery")
        self.tasks.spawn(self._gc_loop(), name="gc")

    async def stop(self) -> None:
        await self.rt.dispatcher.stop()
        await self.tasks.stop()  # the loops and every delivery in flight
        await self._close_integrations(self.rt)

    @staticmethod
    async def _close_integrations(rt: _Runtime) -> None:
        for integs in rt.integrations.values():
            for i in integs:
                with contextlib.suppress(Exception):
                    await i.close()

    # -- ingest -----------------------------------------------------------
    async def notify(self, alerts: Sequence[Alert]) -> None:
        """The NotifyFunc pitwall's rule manager calls (invalid alerts are logged, not raised)."""
        try:
            await self.receive(alerts)
        except (InvalidAlert, SharingFailed) as e:
            log.warning("rule alerts rejected", extra={"error": e.message})

    async def receive(self, alerts: Sequence[Alert]) -> None:
        """``put_alerts``, then (several servers) share the valid alerts with the other servers through the
        state store; SharingFailed when the store did not take them (the poster should send again)."""
        valid, errors = self._put(alerts)
        if self.shared is not None and valid:
            try:
                await self.shared.publish(valid)
            except Exception as e:
                raise SharingFailed(f"alerts not shared with the other servers: {e}") from None
        if errors:
            raise InvalidAlert("; ".join(errors))

    def put_alerts(self, alerts: Sequence[Alert]) -> None:
        """Validate and store alerts as Alertmanager's POST /api/v2/alerts does (best effort per alert)."""
        _valid, errors = self._put(alerts)
        if errors:
            raise InvalidAlert("; ".join(errors))

    def _put(self, alerts: Sequence[Alert]) -> tuple[list[StoredAlert], list[str]]:
        """Store the valid alerts; (them, the errors of the others). QueueFull stores nothing."""
        now = _utc()
        resolve_timeout = timedelta(milliseconds=self.rt.config.config.global_.resolve_timeout)
        errors: list[str] = []
        valid: list[StoredAlert] = []
        for a in alerts:
            labels = {k: v for k, v in a.labels.items() if v != ""}
            starts, ends, timeout = a.starts_at, a.ends_at, False
            if starts is None:
                starts = ends if ends is not None else now
            if ends is None:
                timeout, ends = True, now + resolve_timeout
            err = _validate(labels, a.annotations, starts, ends)
            if err:
                errors.append(err)
                continue
            valid.append(StoredAlert(labels, dict(a.annotations), starts, ends, now, a.generator_url, timeout))
        new = sum(1 for v in valid if self.alerts.get(v.fp) is None)
        if new and len(self.alerts) + new > self.settings.max_alerts:
            raise QueueFull(f"too many alerts ({len(self.alerts)} held, limit {self.settings.max_alerts})")
        for v in valid:
            self.alerts.put(v)
        return valid, errors

    # -- status -----------------------------------------------------------
    def status_of(self, labels: dict[str, str], now: datetime | None = None) -> AlertStatus:
        t = now or _utc()
        silenced = self.silences.mutes(labels, t)
        inhibited = self.rt.inhibitor.inhibited_by(labels, t)
        muted: list[str] = []
        for r in self.rt.route.match(labels):
            muted.extend(any_contains(r.mute_time_intervals, self.rt.config.time_intervals, t))
        state = "suppressed" if silenced or inhibited or muted else "active"
        return AlertStatus(state, silenced, inhibited, sorted(set(muted)))

    def receivers_of(self, labels: dict[str, str]) -> list[str]:
        seen: list[str] = []
        for r in self.rt.route.match(labels):
            if r.receiver not in seen:
                seen.append(r.receiver)
        return seen

    # -- the flush stages -------------------------------------------------
    async def _notify_group(self, group: AggrGroup, alerts: list[StoredAlert], now: datetime) -> bool:
        if not self._leads():
            return False  # not sent: keep the group's resolved alerts for when this server leads
        rt = self.rt
        alerts = [a for a in alerts if not rt.inhibitor.inhibited_by(a.labels, now)]
        if not alerts:
            return True
        intervals = rt.config.time_intervals
        route = group.route
        if route.active_time_intervals and not any_contains(route.active_time_intervals, intervals, now):
            return True
        if any_contains(route.mute_time_intervals, intervals, now):
            return True
        alerts = [a for a in alerts if not self.silences.mutes(a.labels, now)]
        if not alerts:
            return True
        ok = True
        for integ in rt.integrations.get(route.receiver, []):
            try:
                self._dedup_and_queue(group, route, integ, alerts, now)
            except QueueFull as e:
                ok = False
                log.error("notification queue full", extra={"group_key": group.key, "error": e.message})
        return ok

    def _dedup_and_queue(self, group: AggrGroup, route: Route, integ: Integration, alerts: list[StoredAlert],
                         now: datetime) -> None:
        key = integration_key(route.receiver, integ)
        firing = frozenset(a.fp for a in alerts if not a.resolved_at(now))
        resolved = frozenset(a.fp for a in alerts if a.resolved_at(now))
        entry = self.nflog.query(key, group.key)
        repeat = timedelta(milliseconds=route.repeat_interval_ms)
        if not needs_update(entry, firing, resolved, integ.send_resolved, repeat, now):
            return
        to_send = alerts if integ.send_resolved else [a for a in alerts if not a.resolved_at(now)]
        if not to_send:
            # Nothing to tell the receiver; remember that the firing alerts are gone.
            self.nflog.log(key, group.key, firing, resolved, now)
            return
        if self.state.count_pending() >= self.settings.queue_max:
            raise QueueFull(f"notification queue is full ({self.settings.queue_max})")
        job = {"receiver": route.receiver, "integration": integ.name, "index": integ.index,
               "group_key": group.key, "group_labels": group.labels, "now": now.timestamp(),
               "alerts": [_ser(a) for a in to_send], "firing": sorted(firing), "resolved": sorted(resolved)}
        id_, _ = self.state.put_pending(key, group.key, job, time.time())
        heapq.heappush(self._queue, (time.time(), id_))
        self._wake.set()

    # -- delivery ---------------------------------------------------------
    async def _deliver_loop(self) -> None:
        while True:
            if self.gated:
                self._refresh_silences()
                if not self._leads():
                    self._queue.clear()  # the rows stay in the shared store for the leader
            now = time.time()
            while self._queue and self._queue[0][0] <= now:
                _, id_ = heapq.heappop(self._queue)
                if id_ not in self._inflight:
                    self._inflight.add(id_)
                    self.tasks.spawn(self._deliver(id_), name=f"deliver-{id_}", loop=False)
            timeout = self._queue[0][0] - now if self._queue else None
            if self.gated:  # look at the leadership at least every second
                timeout = min(timeout, 1.0) if timeout is not None else 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _find(self, job: dict[str, Any]) -> Integration | None:
        for integ in self.rt.integrations.get(job["receiver"], []):
            if integ.name == job["integration"] and integ.index == job["index"]:
                return integ
        return None

    async def _deliver(self, id_: int) -> None:
        try:
            row = self.state.get_pending(id_)
            if row is None:
                return
            async with self._sem:
                await self._attempt(row)
        except Exception:
            log.exception("notification delivery crashed", extra={"pending_id": id_})
        finally:
            self._inflight.discard(id_)
            self._wake.set()

    async def _attempt(self, row: PendingRow) -> None:
        if not self._leads():
            return  # deposed since it was queued: the row stays for the new leader
        job = row.payload
        integ = self._find(job)
        if integ is None:
            log.warning("dropping notification for a receiver no longer configured",
                        extra={"receiver": row.receiver, "group_key": row.group_key})
            self.state.drop_pending(row.id)
            self.dropped += 1
            return
        ctx = NotifyContext(job["receiver"], job["group_key"], dict(job["group_labels"]),
                            datetime.fromtimestamp(job["now"], UTC), self.external_url, self.rt.templates)
        try:
            await integ.notify(ctx, [_de(a) for a in job["alerts"]])
        except DeliveryError as e:
            self._failed(row, e.message, e.retryable)
            return
        except Exception as e:  # a template error or a bug: retrying will not help
            self._failed(row, f"{e.__class__.__name__}: {e}", retryable=False)
            return
        self.delivered += 1
        self.nflog.log(row.receiver, row.group_key, frozenset(job["firing"]), frozenset(job["resolved"]), _utc())
        if not self.state.delete_pending(row.id, row.seq):
            # A newer notification replaced this one while it was being sent: deliver that one too.
            heapq.heappush(self._queue, (time.time(), row.id))

    def _failed(self, row: PendingRow, error: str, retryable: bool) -> None:
        self.failed += 1
        age = time.time() - row.created_at
        if not retryable or age * 1000 > self.settings.retry_max_age:
            log.error("notification dropped", extra={"receiver": row.receiver, "group_key": row.group_key,
                                                     "error": error, "attempts": row.attempts + 1})
            self.state.drop_pending(row.id)
            self.dropped += 1
            return
        s = self.settings
        delay = min(s.retry_max, s.retry_initial * 2 ** min(row.attempts, 30)) / 1000
        delay *= random.uniform(0.8, 1.2)  # jitter spreads retries of many groups
        due = time.time() + delay
        log.warning("notification failed; will retry", extra={"receiver": row.receiver, "error": error,
                                                               "attempt": row.attempts + 1, "retry_in_s": delay})
        self.state.reschedule_pending(row.id, row.seq, row.attempts + 1, due, error)
        heapq.heappush(self._queue, (due, row.id))

    async def _gc_loop(self, every: float = 60.0) -> None:
        while True:
            await asyncio.sleep(every)
            now = _utc()
            self.silences.gc()
            self.nflog.gc(now)
            self.alerts.gc(now, timedelta(minutes=30))


def _validate(labels: dict[str, str], annotations: dict[str, str], starts: datetime, ends: datetime) -> str:
    """Alertmanager's ``Alert.Validate`` message, or ``""`` when valid."""
    if ends < starts:
        return "start time must be before end time"
    for k in labels:
        if not is_valid_label_name(k):
            return f'invalid label set: invalid name "{k}"'
    if not labels:
        return "at least one label pair required"
    for k in annotations:
        if not is_valid_label_name(k):
            return f'invalid annotations: invalid name "{k}"'
    return ""
