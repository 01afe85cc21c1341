"""Rule groups added, replaced and removed at run time without a file (the SLO controller's seam)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitwall.alerting.rules.base import OutSample, Vector
from pitwall.alerting.rules.manager import RuleManager, promql_check
from pitwall.core.errors import ConfigError
from pitwall.metrics.model import is_stale

pytestmark = pytest.mark.timeout(20)

RULES = """
groups:
- name: g1
  rules:
  - record: r1
    expr: vector(1)
- name: g2
  rules:
  - alert: A
    expr: vector(1) > 2
"""


class Sink:
    def __init__(self) -> None:
        self.written: list[OutSample] = []

    async def append(self, samples: list[OutSample]) -> None:
        self.written.extend(samples)


def _query(expr: str, at_ms: int) -> Vector:
    return [((), 1.0)] if expr == "vector(1)" else []


def _manager(sink: Sink) -> RuleManager:
    return RuleManager(languages={"promql": (_query, promql_check)}, append=sink.append, notify=None)


async def test_add_replace_remove_and_file_reload_keeps_generated(tmp_path: Path) -> None:
    sink = Sink()
    mgr = _manager(sink)
    f = tmp_path / "file.yml"
    f.write_text("groups:\n- name: fromfile\n  rules:\n  - record: x\n    expr: vector(2)\n")
    await mgr.update({"promql": [str(f)]})
    await mgr.set_rule_groups("slo:default/a", RULES)
    assert sorted(mgr.groups) == [(str(f), "fromfile"), ("slo:default/a", "g1"), ("slo:default/a", "g2")]
    kept = mgr.groups[("slo:default/a", "g1")]
    # Replacing with one group changed: the unchanged one keeps running as is, the dropped one goes.
    await mgr.set_rule_groups("slo:default/a", RULES.split("- name: g2")[0] + "- name: g3\n  rules:\n"
                              "  - record: r3\n    expr: vector(3)\n")
    assert mgr.groups[("slo:default/a", "g1")] is kept
    assert ("slo:default/a", "g2") not in mgr.groups and ("slo:default/a", "g3") in mgr.groups
    # A file reload leaves generated groups alone.
    await mgr.update({"promql": [str(f)]})
    assert ("slo:default/a", "g3") in mgr.groups and mgr.generated_sources() == ["slo:default/a"]
    await mgr.remove_rule_groups("slo:default/a")
    assert sorted(mgr.groups) == [(str(f), "fromfile")]
    await mgr.remove_rule_groups("slo:default/unknown")


async def test_invalid_rules_change_nothing() -> None:
    mgr = _manager(Sink())
    await mgr.set_rule_groups("slo:default/a", RULES)
    before = dict(mgr.groups)
    with pytest.raises(ConfigError, match=r'slo:default/a: .*could not parse expression'):
        await mgr.set_rule_groups("slo:default/a", RULES.replace("vector(1) > 2", "vector(1) >"))
    assert mgr.groups == before


async def test_removed_group_series_are_marked_stale() -> None:
    sink = Sink()
    mgr = _manager(sink)
    await mgr.set_rule_groups("slo:default/a", RULES)
    g = mgr.groups[("slo:default/a", "g1")]
    await g.eval(1_000_000)
    assert any(s.value == 1 for s in sink.written)
    await mgr.remove_rule_groups("slo:default/a")
    assert any(is_stale(s.value) for s in sink.written)
