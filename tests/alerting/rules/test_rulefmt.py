"""Rule file validation: promtool's messages and line:column positions."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pitwall.alerting.rules.manager import promql_check
from pitwall.alerting.rules.rulefmt import parse_rules
from pitwall.cli.rules import check_files

GOOD = """groups:
  - name: g
    interval: 30s
    query_offset: 1m
    limit: 10
    labels: {team: a}
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: Down
        expr: up == 0
        for: 5m
        keep_firing_for: 1m
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.instance }} down ({{ $value | humanize }})"
"""

BAD_CASES = [
    ("groups:\n  - name: g\n    rules:\n      - alert: Bad\n        expr: sum(rate(x[5m])\n",
     ['5:15: group "g", rule 1, "Bad": could not parse expression: 1:16: parse error: unclosed left parenthesis']),
    ("groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up\n        for: 1m\n",
     ["4:17: group \"g\", rule 1, \"r\": invalid field 'for' in recording rule"]),
    ("groups:\n  - name: g\n    rules:\n      - expr: up\n",
     ["0:0: 0:0: group \"g\", rule 1, \"\": one of 'record' or 'alert' must be set"]),
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        record: B\n        expr: up\n",
     ["5:17: 4:16: group \"g\", rule 1, \"A\": only one of 'record' and 'alert' must be set"]),
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n",
     ["0:0: group \"g\", rule 1, \"A\": field 'expr' must be set in rule"]),
    ("groups:\n  - name: g\n    rules:\n      - alert: T\n        expr: up\n        annotations:\n          a: '{{ nope }}'\n",
     ['group "g", rule 1, "T": annotation "a": template: __alert_T:1: function "nope" not defined']),
    ("groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n",
     ['4:5: groupname: "g" is repeated in the same file']),
    ("groups:\n  - name: ''\n    rules: []\n", ["2:5: Groupname must not be empty"]),
    ("groups:\n  - name: g\n    foo: 1\n    rules:\n      - alert: X\n        expr: up\n        bar: 2\n",
     ["yaml: unmarshal errors:\n  line 3: field foo not found in type rulefmt.RuleGroup\n"
      "  line 7: field bar not found in type rulefmt.RuleNode"]),
    ("groups:\n  - name: g\n    interval: 5x\n    rules: []\n", ['not a valid duration string: "5x"']),
    ("groups:\n  - name: g\n    rules:\n      - record: 'a{b}'\n        expr: up\n",
     ['4:17: group "g", rule 1, "a{b}": braces present in the recording rule name; should it be in expr?: a{b}']),
]


def test_good_file() -> None:
    groups, errs = parse_rules(GOOD, "f.yml", promql_check)
    assert errs == []
    (g,) = groups
    assert (g.name, g.interval_ms, g.query_offset_ms, g.limit, g.labels) == ("g", 30_000, 60_000, 10, {"team": "a"})
    rec, alert = g.rules
    assert (rec.alert, rec.name, rec.expr) == (False, "job:up:sum", "sum by (job) (up)")
    assert (alert.alert, alert.for_ms, alert.keep_firing_for_ms, alert.labels) == (True, 300_000, 60_000,
                                                                                   {"severity": "page"})


@pytest.mark.parametrize(("text", "want"), BAD_CASES)
def test_bad_files(text: str, want: list[str]) -> None:
    _groups, errs = parse_rules(text, "f.yml", promql_check)
    assert errs == want


def test_yaml_syntax_error_reported_twice() -> None:
    _g, errs = parse_rules("groups:\n - name: g\n   rules: [\n", "f.yml", promql_check)
    assert len(errs) == 2 and errs[0] == errs[1] and errs[0].startswith("yaml: line ")


def test_check_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yml"
    good.write_text(GOOD)
    bad.write_text(BAD_CASES[0][0])
    assert check_files([str(good), str(bad)]) == 1
    cap = capsys.readouterr()
    assert cap.out == f"Checking {good}\n  SUCCESS: 2 rules found\n\nChecking {bad}\n\n"
    assert cap.err == f"  FAILED:\n{bad}: {BAD_CASES[0][1][0]}\n"


PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


@pytest.mark.peer
@pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool not installed")
@pytest.mark.parametrize("index", [0, 1, 4, 5, 6, 8, 9])
def test_same_messages_as_promtool(tmp_path: Path, index: int, capsys: pytest.CaptureFixture[str]) -> None:
    """Messages Prometheus 2.42 and 3.x word alike (2.42 predates UTF-8 names and query_offset)."""
    f = tmp_path / "rules.yml"
    f.write_text(BAD_CASES[index][0])
    peer = subprocess.run([PROMTOOL, "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    rc = check_files([str(f)])
    cap = capsys.readouterr()
    assert rc == peer.returncode == 1
    assert (cap.out, cap.err) == (peer.stdout, peer.stderr)
