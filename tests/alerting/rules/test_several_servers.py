"""Two rule managers on one metrics engine (as two servers with a shared ``backends.metrics``): only the leader
writes series and sends alerts; a server gaining the lead restores ``for`` state from what the old one wrote.

Evaluations are driven by hand at chosen timestamps, so the ``for`` arithmetic is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from pitwall.alerting.model import Alert
from pitwall.alerting.rules.alerting_rule import AlertingRule, AlertState
from pitwall.alerting.rules.base import OutSample, Vector
from pitwall.alerting.rules.group import querier_reader
from pitwall.alerting.rules.manager import RuleManager, RuleOptions, promql_check
from pitwall.metrics.memory import MemoryQuerier

pytestmark = pytest.mark.timeout(20)

S = 1000
T0 = 1_700_000_000 * S  # the alert's condition holds from T0 on
RULES = """
groups:
- name: g
  interval: 1s
  rules:
  - record: job:up:sum
    expr: vector(1)
  - alert: Down
    expr: down
    for: 30s
    labels: {severity: page}
"""


class Engine:
    """The shared metrics engine: every sample any server appended, readable as a store."""

    def __init__(self) -> None:
        self.samples: list[OutSample] = []

    async def append(self, samples: list[OutSample]) -> None:
        self.samples.extend(samples)

    def querier(self) -> MemoryQuerier:
        q = MemoryQuerier()
        for s in self.samples:
            q.add(s.labels, s.ts_ms, s.value)
        return q

    def of(self, name: str) -> list[OutSample]:
        return [s for s in self.samples if dict(s.labels)["__name__"] == name]


def _query(expr: str, at_ms: int) -> Vector:
    if expr == "vector(1)":
        return [((), 1.0)]
    if expr == "down":
        return [((("job", "api"),), 1.0)] if at_ms >= T0 else []
    raise AssertionError(expr)


class Server:
    """One server's rule manager, following ``lead`` and writing to ``engine``."""

    def __init__(self, name: str, engine: Engine, lead: dict[str, str], rules: Path) -> None:
        self.sent: list[Alert] = []
        self.mgr = RuleManager(languages={"promql": (_query, promql_check)}, append=engine.append,
                               notify=self._notify, options=RuleOptions(for_grace_period_ms=5 * S),
                               for_state=lambda m, lo, hi: querier_reader(engine.querier())(m, lo, hi))
        self.mgr.groups = {g.key: g for g in self.mgr.load({"promql": [str(rules)]})}
        self.mgr.follow(lambda: lead["who"] == name)
        self.started = False

    async def _notify(self, alerts: Sequence[Alert]) -> None:
        self.sent.extend(alerts)

    async def eval(self, ts_ms: int) -> None:
        (g,) = self.mgr.groups.values()
        await g.eval(ts_ms)
        if not self.started:  # as Group.run restores after its first evaluations
            self.mgr.restore_group(g, ts_ms)
            self.started = True

    def alert(self) -> tuple[AlertState, int]:
        (g,) = self.mgr.groups.values()
        rule = g.rules[1]
        assert isinstance(rule, AlertingRule)
        (a,) = rule.active_alerts()
        return a.state, a.active_at_ms


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    f = tmp_path / "rules.yml"
    f.write_text(RULES)
    return f


async def test_only_the_leader_writes_and_a_new_leader_continues_the_for_timer(rules: Path) -> None:
    engine, lead = Engine(), {"who": "a"}
    a, b = Server("a", engine, lead, rules), Server("b", engine, lead, rules)
    for k in range(21):  # a leads from T0 to T0+20s; b joins at T0+15s (started late, or restarted)
        await a.eval(T0 + k * S)
        if k >= 15:
            await b.eval(T0 + k * S)
    # One sample per evaluation of each series, all from the leader.
    assert [s.ts_ms for s in engine.of("job:up:sum")] == [T0 + k * S for k in range(21)]
    assert {s.value for s in engine.of("ALERTS_FOR_STATE")} == {T0 / S}
    # (not at the first evaluation: like Prometheus, ALERTS are written once the state was restored)
    assert [s.ts_ms for s in engine.of("ALERTS_FOR_STATE")] == [T0 + k * S for k in range(1, 21)]
    # b's own view, for its API: its start restored the leader's timer (pending since T0), it wrote nothing.
    assert b.alert() == (AlertState.PENDING, T0)

    # a dies after T0+20s; b leads from T0+25s. a had spent 20 of 30 s pending: 10 s remain, and the 5 s
    # without a leader do not count (Prometheus' RestoreForState), so b fires at T0+35s, not at T0+45s.
    lead["who"] = "b"
    for k in range(25, 36):
        await b.eval(T0 + k * S)
        state, active_at = b.alert()
        assert active_at == T0 + 5 * S
        assert state == (AlertState.FIRING if k >= 35 else AlertState.PENDING), k
    assert [s.ts_ms for s in engine.of("job:up:sum")][21:] == [T0 + k * S for k in range(25, 36)]
    assert {s.value for s in engine.of("ALERTS_FOR_STATE")[20:]} == {(T0 + 5 * S) / S}
    assert [x.labels["alertname"] for x in b.sent] == ["Down"] and not a.sent


async def test_a_follower_that_fired_on_its_own_is_pending_again_when_it_takes_over(rules: Path) -> None:
    engine, lead = Engine(), {"who": "a"}
    a, b = Server("a", engine, lead, rules), Server("b", engine, lead, rules)
    # b evaluates from T0; a (the leader) only from T0+20s (it restarted): its timer says 10 s pending.
    for k in range(0, 31):
        if k >= 20:
            await a.eval(T0 + k * S)
        await b.eval(T0 + k * S)
    assert b.alert()[0] == AlertState.FIRING and not b.sent  # b's view says firing; as follower it sent nothing
    lead["who"] = "b"
    await b.eval(T0 + 32 * S)  # a's last state (written at T0+30s): active since T0+20s, 20 s left
    assert b.alert() == (AlertState.PENDING, T0 + 22 * S)
    assert not b.sent


async def test_without_follow_every_manager_writes(rules: Path) -> None:
    """One server on its embedded store (no shared engine): nothing is gated."""
    engine = Engine()
    mgr = RuleManager(languages={"promql": (_query, promql_check)}, append=engine.append, notify=None)
    mgr.groups = {g.key: g for g in mgr.load({"promql": [str(rules)]})}
    (g,) = mgr.groups.values()
    await g.eval(T0)
    assert len(engine.of("job:up:sum")) == 1


def test_for_state_through_the_query_api() -> None:
    """A shared engine is read with an instant query of a range selector; its last sample per series counts."""
    import numpy as np

    from pitwall.alerting.rules.base import instant_for_state
    from pitwall.core.labels import Matcher, MatchType
    from pitwall.metrics.promql import QueryResult

    asked: list[tuple[str, int]] = []

    def instant(expr: str, at_ms: int, tenant: str = "default") -> QueryResult:
        asked.append((expr, at_ms))
        lbl = (("__name__", "ALERTS_FOR_STATE"), ("alertname", "Down"), ("job", 'a"b'))
        return QueryResult("matrix", [lbl], [np.array([T0, T0 + S], dtype=np.int64)],
                           [np.array([1.0, 2.0])])

    read = instant_for_state(instant)
    got = read([Matcher.of(MatchType.EQUAL, "__name__", "ALERTS_FOR_STATE"),
                Matcher.of(MatchType.EQUAL, "job", 'a"b')], T0 - 3_600_000, T0 + 5 * S)
    assert asked == [('{__name__="ALERTS_FOR_STATE",job="a\\"b"}[3605000ms]', T0 + 5 * S)]
    assert got == {(("alertname", "Down"), ("job", 'a"b')): (T0 + S, 2.0)}


async def test_a_failed_restore_leaves_the_rules_writing(rules: Path) -> None:
    engine = Engine()

    def down(*_: object) -> dict[tuple[tuple[str, str], ...], tuple[int, float]]:
        raise ConnectionError("engine unreachable")

    mgr = RuleManager(languages={"promql": (_query, promql_check)}, append=engine.append, notify=None,
                      options=RuleOptions(for_grace_period_ms=5 * S), for_state=down)
    mgr.groups = {g.key: g for g in mgr.load({"promql": [str(rules)]})}
    (g,) = mgr.groups.values()
    await g.eval(T0)
    assert not engine.of("ALERTS")  # not restored yet: nothing written, as in Prometheus
    mgr.restore_group(g, T0)
    await g.eval(T0 + S)
    assert [dict(s.labels)["alertstate"] for s in engine.of("ALERTS")] == ["pending"]
