"""Rule groups: sequential evaluation at a fixed, per-group offset interval.

Mirrors Prometheus' ``rules/group.go``: rules run in file order, results are
appended with staleness markers for series a rule stopped producing, alerts
due for sending go to the ``NotifyFunc``, and ``for`` state is restored from
``ALERTS_FOR_STATE`` after a restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import xxhash

from pitwall.alerting.model import Alert, NotifyFunc
from pitwall.alerting.rules.alerting_rule import ActiveAlert, AlertingRule, AlertState
from pitwall.alerting.rules.base import ForStateReader, Health, OutSample
from pitwall.alerting.rules.recording_rule import RecordingRule
from pitwall.alerting.rules.templates import table_link
from pitwall.core.labels import METRIC_NAME, Labels, Matcher, MatchType
from pitwall.metrics import STALE_NAN, Querier, is_stale

log = logging.getLogger(__name__)

Rule = AlertingRule | RecordingRule
AppendFunc = Callable[[list[OutSample]], Awaitable[None]]


def querier_reader(querier: Querier) -> ForStateReader:
    """Read ``for`` state from a store's raw samples (the embedded store: stale markers are seen)."""

    def read(matchers: Sequence[Matcher], mint: int, maxt: int) -> dict[Labels, tuple[int, float]]:
        found: dict[Labels, tuple[int, float]] = {}
        for s in querier.select(list(matchers), mint, maxt):
            if len(s.ts):
                key = tuple(p for p in s.labels if p[0] != METRIC_NAME)
                found[key] = (int(s.ts[-1]), float(s.values[-1]))
        return found

    return read


def _as_reader(source: Querier | ForStateReader) -> ForStateReader:
    if callable(source):
        return source
    return querier_reader(source)


def group_offset_ns(file: str, name: str, interval_ns: int) -> int:
    """Prometheus' deterministic per-group offset: hash of labels {file, name} modulo the interval."""
    payload = b"".join(p.encode() + b"\xff" for p in ("file", file, "name", name))
    return xxhash.xxh64_intdigest(payload) % interval_ns


def eval_timestamp_ns(file: str, name: str, interval_ns: int, now_ns: int) -> int:
    """The latest slot of this group at or before ``now_ns`` (Group.EvalTimestamp)."""
    offset = group_offset_ns(file, name, interval_ns)
    adj = now_ns - offset
    return adj - adj % interval_ns + offset


def to_alert(a: ActiveAlert, expr: str, external_url: str, external_labels: dict[str, str]) -> Alert:
    """The notification for an active alert (Prometheus' SendAlerts plus external labels)."""
    labels = dict(external_labels)
    labels.update(dict(a.labels))
    ends = a.resolved_at_ms or a.valid_until_ms
    return Alert(
        labels=labels,
        annotations=dict(a.annotations),
        starts_at=_dt(a.fired_at_ms),
        ends_at=_dt(ends) if ends else None,
        generator_url=external_url.rstrip("/") + table_link(expr),
    )


def restored_active_at(ts_ms: int, sample_ms: int, value: float, hold_ms: int, for_grace_ms: int) -> int:
    """An alert's ``ActiveAt`` restored at ``ts_ms`` from its last ALERTS_FOR_STATE sample (written at
    ``sample_ms``, value: active-since in Unix seconds), as Prometheus' RestoreForState computes it."""
    down_at = sample_ms // 1000 * 1000  # Prometheus works in whole seconds here
    active_at = int(value) * 1000  # Go's time.Unix(int64(v), 0)
    remaining = hold_ms - (down_at - active_at)
    if remaining <= 0:
        return active_at  # it was firing: the next evaluation fires it again
    if remaining < for_grace_ms:
        return ts_ms + for_grace_ms - hold_ms  # at least the grace period left to wait
    return active_at + ts_ms - down_at  # the time spent down does not count as pending


def _dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


class Group:
    """One rule group of one file."""

    def __init__(self, name: str, file: str, rules: Sequence[Rule], *, interval_ms: int, query_offset_ms: int = 0,
                 limit: int = 0, append: AppendFunc, notify: NotifyFunc | None = None,
                 resend_delay_ms: int = 60_000, external_labels: dict[str, str] | None = None,
                 external_url: str = "", offload: bool = True) -> None:
        self.name = name
        self.file = file
        self.rules: list[Rule] = list(rules)
        self.interval_ms = interval_ms
        self.query_offset_ms = query_offset_ms
        self.limit = limit
        self.append = append
        self.notify = notify
        self.resend_delay_ms = resend_delay_ms
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url
        self.offload = offload
        self.prev_series: list[set[Labels]] = [set() for _ in self.rules]
        self.last_evaluation_ms = 0
        self.evaluation_seconds = 0.0
        # Several servers on one metrics engine: only while ``writes()`` holds (the leader) are series
        # written and alerts sent; a follower evaluates for its own API. ``on_lead`` runs on gaining it.
        self.writes: Callable[[], bool] = lambda: True
        self.on_lead: Callable[[int], None] | None = None
        self.wrote = True  # whether the last evaluation wrote (led)

    @property
    def key(self) -> tuple[str, str]:
        return self.file, self.name

    def identity(self) -> tuple[Any, ...]:
        return (self.interval_ms, self.query_offset_ms, self.limit, tuple(r.identity() for r in self.rules),
                tuple(getattr(r, "annotations", {}).items() for r in self.rules),
                tuple((getattr(r, "hold_ms", 0), getattr(r, "keep_firing_for_ms", 0)) for r in self.rules))

    async def _call(self, fn: Callable[..., list[OutSample]], *args: Any) -> list[OutSample]:
        if self.offload:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def _run_sync(self, fn: Callable[[int], None], arg: int) -> None:
        """A blocking step (a restore may query a remote engine) off the event loop when offloading."""
        if self.offload:
            await asyncio.to_thread(fn, arg)
        else:
            fn(arg)

    async def eval(self, ts_ms: int) -> None:
        """Evaluate every rule once at ``ts_ms``."""
        started = time.perf_counter()
        writes = self.writes()
        if writes and not self.wrote and self.on_lead is not None and self.last_evaluation_ms:
            await self._run_sync(self.on_lead, ts_ms)  # a new leader continues from the old one's ``for`` state
        self.wrote = writes
        for i, rule in enumerate(self.rules):
            t0 = time.perf_counter()
            rule.last_evaluation_ms = int(time.time() * 1000)
            try:
                samples = await self._call(rule.eval, ts_ms, self.query_offset_ms, self.limit)
            except Exception as e:  # any failure marks the rule unhealthy; the group goes on
                rule.health = Health.ERR
                rule.last_error = getattr(e, "message", None) or str(e)
                rule.evaluation_seconds = time.perf_counter() - t0
                log.warning("rule evaluation failed", extra={"group": self.name, "rule": rule.name,
                                                              "err": rule.last_error})
                continue
            rule.health = Health.OK
            rule.last_error = ""
            if isinstance(rule, AlertingRule) and writes:
                await self._send(rule, ts_ms)
            await self._write(i, samples, ts_ms, writes)
            rule.evaluation_seconds = time.perf_counter() - t0
        self.evaluation_seconds = time.perf_counter() - started
        self.last_evaluation_ms = int(time.time() * 1000)

    async def _send(self, rule: AlertingRule, ts_ms: int) -> None:
        due = rule.alerts_to_send(ts_ms, self.resend_delay_ms, self.interval_ms)
        if not due or self.notify is None:
            return
        alerts = [to_alert(a, rule.expr, self.external_url, self.external_labels) for a in due]
        try:
            await self.notify(alerts)
        except Exception:
            log.exception("sending alerts failed", extra={"group": self.name, "rule": rule.name})

    async def _write(self, i: int, samples: list[OutSample], ts_ms: int, writes: bool = True) -> None:
        returned = {s.labels for s in samples}
        stale_at = ts_ms - self.query_offset_ms
        stale = [OutSample(lbl, stale_at, STALE_NAN) for lbl in self.prev_series[i] if lbl not in returned]
        self.prev_series[i] = returned  # tracked on a follower too: as leader it marks what the old one wrote
        if writes and (samples or stale):
            try:
                await self.append(samples + stale)
            except Exception:
                log.exception("writing rule results failed", extra={"group": self.name})

    async def mark_stale(self, ts_ms: int) -> None:
        """Stale markers for everything this group wrote (it was removed by a reload)."""
        stale = [OutSample(lbl, ts_ms, STALE_NAN) for prev in self.prev_series for lbl in prev]
        self.prev_series = [set() for _ in self.rules]
        if stale and self.writes():
            await self.append(stale)

    def copy_state(self, old: Group) -> None:
        """Keep alerts and staleness tracking of rules that survive a reload (Group.CopyState)."""
        by_identity = {r.identity(): (j, r) for j, r in enumerate(old.rules)}
        for i, rule in enumerate(self.rules):
            hit = by_identity.get(rule.identity())
            if hit is None:
                continue
            j, prev = hit
            self.prev_series[i] = old.prev_series[j]
            rule.health, rule.last_error = prev.health, prev.last_error
            rule.last_evaluation_ms, rule.evaluation_seconds = prev.last_evaluation_ms, prev.evaluation_seconds
            if isinstance(rule, AlertingRule) and isinstance(prev, AlertingRule):
                rule.active = prev.active
                rule.restored = prev.restored
        self.last_evaluation_ms, self.evaluation_seconds = old.last_evaluation_ms, old.evaluation_seconds

    def restore_for_state(self, ts_ms: int, source: Querier | ForStateReader, for_grace_ms: int,
                          outage_tolerance_ms: int, *, demote: bool = False) -> None:
        """Re-establish ``ActiveAt`` of pending/firing alerts from ALERTS_FOR_STATE (Prometheus' RestoreForState).

        ``source`` is the embedded store's querier or a reader over the metrics engine's query API.
        ``demote`` (a follower gaining the lead) also turns a firing alert whose restored ``ActiveAt`` is
        less than ``for`` ago back to pending: its own evaluation, not the leader's, had fired it.
        """
        read = _as_reader(source)
        for rule in self.rules:
            if not isinstance(rule, AlertingRule):
                continue
            if rule.hold_ms < for_grace_ms:
                rule.restored = True  # a short ``for`` would otherwise wait the whole grace period
                continue
            matchers = [Matcher.of(MatchType.EQUAL, METRIC_NAME, "ALERTS_FOR_STATE"),
                        Matcher.of(MatchType.EQUAL, "alertname", rule.name)]
            matchers += [Matcher.of(MatchType.EQUAL, k, v) for k, v in rule.labels.items() if "{{" not in v]
            found = read(matchers, ts_ms - outage_tolerance_ms, ts_ms)
            for a in rule.active_alerts():
                hit = found.get(a.labels)
                if hit is None or is_stale(hit[1]) or math.isnan(hit[1]):
                    continue
                a.active_at_ms = restored_active_at(ts_ms, hit[0], hit[1], rule.hold_ms, for_grace_ms)
                if demote and a.state == AlertState.FIRING and ts_ms - a.active_at_ms < rule.hold_ms:
                    a.state, a.fired_at_ms = AlertState.PENDING, 0
            rule.restored = True

    async def run(self, stop: asyncio.Event, restore: Callable[[int], None] | None = None) -> None:
        """Evaluate at this group's slots until ``stop`` is set."""
        interval_ns = self.interval_ms * 1_000_000
        eval_ns = eval_timestamp_ns(self.file, self.name, interval_ns, time.time_ns()) + interval_ns
        if await self._sleep_until(eval_ns, stop):
            return
        await self._iterate(eval_ns)
        if restore is not None:
            # Like Prometheus, wait for a second evaluation so recording rules have fresh data, then restore.
            eval_ns = self._next_slot(eval_ns, interval_ns)
            if await self._sleep_until(eval_ns, stop):
                return
            await self._iterate(eval_ns)
            await self._run_sync(restore, time.time_ns() // 1_000_000)
        while not stop.is_set():
            eval_ns = self._next_slot(eval_ns, interval_ns)
            if await self._sleep_until(eval_ns, stop):
                return
            await self._iterate(eval_ns)

    @staticmethod
    def _next_slot(eval_ns: int, interval_ns: int) -> int:
        missed = max(0, (time.time_ns() - eval_ns) // interval_ns - 1) if time.time_ns() > eval_ns else 0
        return eval_ns + (missed + 1) * interval_ns

    async def _iterate(self, eval_ns: int) -> None:
        try:
            await self.eval(eval_ns // 1_000_000)
        except Exception:
            log.exception("rule group evaluation failed", extra={"group": self.name})

    @staticmethod
    async def _sleep_until(target_ns: int, stop: asyncio.Event) -> bool:
        """Sleep until ``target_ns`` (wall clock); True when stopped meanwhile."""
        delay = max(0.0, (target_ns - time.time_ns()) / 1e9)
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
            return True
        except TimeoutError:
            return stop.is_set()
