"""Group evaluation: alert states, notifications, ALERTS series, staleness, limits, restore."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from pitwall.alerting.model import Alert
from pitwall.alerting.rules.alerting_rule import AlertingRule, AlertState
from pitwall.alerting.rules.base import OutSample, Vector
from pitwall.alerting.rules.group import Group, eval_timestamp_ns, group_offset_ns
from pitwall.alerting.rules.recording_rule import RecordingRule
from pitwall.metrics.memory import MemoryQuerier
from pitwall.metrics.model import is_stale

M = 60_000


class Fake:
    """A query function returning what ``data`` holds, and sinks for samples and alerts."""

    def __init__(self) -> None:
        self.data: Vector = []
        self.queried: list[tuple[str, int]] = []
        self.written: list[OutSample] = []
        self.sent: list[Alert] = []

    def query(self, expr: str, at_ms: int) -> Vector:
        self.queried.append((expr, at_ms))
        return list(self.data)

    async def append(self, samples: list[OutSample]) -> None:
        self.written.extend(samples)

    async def notify(self, alerts: Sequence[Alert]) -> None:
        self.sent.extend(alerts)


def _group(f: Fake, rule: AlertingRule | RecordingRule, **kw: int) -> Group:
    return Group("g", "f.yml", [rule], interval_ms=M, append=f.append, notify=f.notify, offload=False,
                 external_labels={"cluster": "c1"}, external_url="http://pw", **kw)


def _alert(f: Fake, hold_ms: int = 2 * M, keep: int = 0) -> AlertingRule:
    return AlertingRule("HighLoad", "load > 1", hold_ms=hold_ms, keep_firing_for_ms=keep,
                        labels={"severity": "page"}, annotations={"summary": "load {{ $value }} on {{ $labels.host }}"},
                        query=f.query, external_labels={"cluster": "c1"})


async def test_pending_firing_resolved_and_notifications() -> None:
    f = Fake()
    rule = _alert(f)
    g = _group(f, rule)
    f.data = [((("__name__", "load"), ("host", "h1")), 3.0)]
    await g.eval(0)
    assert rule.state() == AlertState.PENDING and f.sent == []
    await g.eval(1 * M)
    assert rule.state() == AlertState.PENDING
    await g.eval(2 * M)
    assert rule.state() == AlertState.FIRING
    (a,) = f.sent
    assert a.labels == {"alertname": "HighLoad", "host": "h1", "severity": "page", "cluster": "c1"}
    assert a.annotations == {"summary": "load 3 on h1"}
    assert a.starts_at is not None and a.starts_at.timestamp() == 120
    # endsAt = now + 4 * max(resend delay, interval)
    assert a.ends_at is not None and a.ends_at.timestamp() == 120 + 4 * 60
    assert a.generator_url == "http://pw/graph?g0.expr=load+%3E+1&g0.tab=1"
    await g.eval(3 * M)  # within the resend delay: nothing new
    assert len(f.sent) == 1
    await g.eval(3 * M + 1)  # resend delay (1m) passed
    assert len(f.sent) == 2
    f.data = []
    await g.eval(4 * M)
    resolved = f.sent[-1]
    assert resolved.ends_at is not None and resolved.ends_at.timestamp() == 240
    assert rule.active_alerts() == []


async def test_alerts_series_and_staleness() -> None:
    f = Fake()
    g = _group(f, _alert(f, hold_ms=0))
    f.data = [((("host", "h1"),), 2.0)]
    await g.eval(5 * M)
    names = sorted((dict(s.labels)["__name__"], dict(s.labels).get("alertstate", ""), s.value) for s in f.written)
    assert names == [("ALERTS", "firing", 1.0), ("ALERTS_FOR_STATE", "", 300.0)]
    f.written.clear()
    f.data = []
    await g.eval(6 * M)
    assert len(f.written) == 2 and all(is_stale(s.value) and s.ts_ms == 6 * M for s in f.written)


async def test_query_offset_shifts_query_and_samples() -> None:
    f = Fake()
    g = _group(f, RecordingRule("r:sum", "sum(x)", {"a": "b"}, f.query), query_offset_ms=30_000)
    f.data = [((), 7.0)]
    await g.eval(10 * M)
    assert f.queried == [("sum(x)", 10 * M - 30_000)]
    (s,) = f.written
    assert (s.labels, s.ts_ms, s.value) == ((("__name__", "r:sum"), ("a", "b")), 10 * M - 30_000, 7.0)


async def test_limit_and_duplicate_labelset_errors() -> None:
    f = Fake()
    rule = _alert(f)
    g = _group(f, rule, limit=1)
    f.data = [((("host", "a"),), 2.0), ((("host", "b"),), 2.0)]
    await g.eval(0)
    assert rule.last_error == "exceeded limit of 1 with 2 alerts" and rule.health == "err"
    rec = RecordingRule("r", "x", {"host": ""}, f.query)
    g2 = _group(f, rec)
    await g2.eval(0)
    assert rec.last_error == "vector contains metrics with the same labelset after applying rule labels"
    dup = AlertingRule("D", "x", hold_ms=0, keep_firing_for_ms=0, labels={"host": "same"}, annotations={},
                       query=f.query)
    g3 = _group(f, dup)
    await g3.eval(0)
    assert dup.last_error == "vector contains metrics with the same labelset after applying alert labels"


async def test_keep_firing_for() -> None:
    f = Fake()
    rule = _alert(f, hold_ms=0, keep=2 * M)
    g = _group(f, rule)
    f.data = [((("host", "h"),), 2.0)]
    await g.eval(0)
    f.data = []
    await g.eval(1 * M)
    assert rule.state() == AlertState.FIRING
    assert rule.active_alerts()[0].keep_firing_since_ms == 1 * M
    await g.eval(2 * M)
    assert rule.state() == AlertState.FIRING
    await g.eval(3 * M)
    assert rule.state() == AlertState.INACTIVE


async def test_template_error_becomes_annotation() -> None:
    f = Fake()
    rule = AlertingRule("T", "x", hold_ms=0, keep_firing_for_ms=0, labels={},
                        annotations={"a": "{{ index $labels 1 }}"}, query=f.query)
    f.data = [((), 1.0)]
    await _group(f, rule).eval(0)
    (a,) = rule.active_alerts()
    assert a.annotations["a"].startswith("<error expanding template: error executing template __alert_T: "
                                         "template: __alert_T:1:")


def test_restore_for_state() -> None:
    f = Fake()
    rule = _alert(f, hold_ms=30 * M)
    rule.restored = False
    g = _group(f, rule)
    store = MemoryQuerier()
    labels = (("__name__", "ALERTS_FOR_STATE"), ("alertname", "HighLoad"), ("host", "h1"), ("severity", "page"))
    # Pending since t=1000s; the process went down at t=1600s (10 of 30 minutes spent pending).
    for t in range(1000, 1601, 60):
        store.add(labels, t * 1000, 1000.0)
    f.data = [((("host", "h1"),), 3.0)]
    rule.eval(2000 * 1000, 0, 0)
    g.restore_for_state(2000 * 1000, store, for_grace_ms=10 * M, outage_tolerance_ms=60 * M)
    (a,) = rule.active_alerts()
    # Remaining 20m >= grace: ActiveAt moves forward by the downtime (400s).
    assert a.active_at_ms == (1000 + 400) * 1000
    assert rule.restored


def test_group_offset_is_deterministic_and_bounded() -> None:
    interval = 60 * 10**9
    off = group_offset_ns("rules.yml", "g", interval)
    assert 0 <= off < interval and off == group_offset_ns("rules.yml", "g", interval)
    assert off != group_offset_ns("rules.yml", "h", interval)
    now = 1_700_000_000 * 10**9 + 12345
    ts = eval_timestamp_ns("rules.yml", "g", interval, now)
    assert ts <= now < ts + interval and (ts - off) % interval == 0


@pytest.mark.parametrize("value", [math.inf, 0.5])
async def test_value_rendering(value: float) -> None:
    f = Fake()
    rule = AlertingRule("V", "x", hold_ms=0, keep_firing_for_ms=0, labels={}, annotations={"v": "{{ $value }}"},
                        query=f.query)
    f.data = [((), value)]
    await _group(f, rule).eval(0)
    assert rule.active_alerts()[0].annotations["v"] == ("+Inf" if value == math.inf else "0.5")
