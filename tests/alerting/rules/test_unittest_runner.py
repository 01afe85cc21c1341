"""``pitwall rules test`` against promtool-format files, and differentially against promtool."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from pitwall.alerting.rules.unittest import parse_values, run_test_files

TESTDATA = Path(__file__).parent / "testdata"
SHARED = Path(__file__).resolve().parents[4] / "shared"
AG_RULES = SHARED / "conformance" / "prometheus-compliance" / "alert_generator" / "rules.yaml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _staged(tmp_path: Path) -> Path:
    """testdata plus the alert-generator rule file in one directory."""
    for f in TESTDATA.iterdir():
        shutil.copy(f, tmp_path / f.name)
    if AG_RULES.exists():
        shutil.copy(AG_RULES, tmp_path / "rules.yaml")
    return tmp_path


def _run(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run_test_files([str(path)], out, err)
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("text", "want"), [
    ("1 2 3", [1, 2, 3]),
    ("-2+4x3", [-2, 2, 6, 10]),
    ("1-2x4", [1, -1, -3, -5, -7]),
    ("1x4", [1, 1, 1, 1, 1]),
    ("1 _x3 4", [1, None, None, None, 4]),
    ("_ 0.5+0.5x2", [None, 0.5, 1.0, 1.5]),
])
def test_expanding_notation(text: str, want: list[float | None]) -> None:
    assert parse_values(text) == want


def test_passing_file(tmp_path: Path) -> None:
    rc, out, err = _run(_staged(tmp_path) / "pass_test.yml")
    assert (rc, err) == (0, "")
    assert out == f"Unit Testing:  {tmp_path / 'pass_test.yml'}\n  SUCCESS\n\n"


def test_failing_file_reports_like_promtool(tmp_path: Path) -> None:
    rc, _out, err = _run(_staged(tmp_path) / "fail_test.yml")
    assert rc == 1
    assert err.startswith("  FAILED:\n    alertname: InstanceDown, time: 3m, \n        exp:[\n            0:\n"
                          '              Labels:{alertname="InstanceDown", instance="a", job="node", severity="page"}')
    assert "        got:[]" in err
    assert ('    expr: "up", time: 1m,\n        exp: {__name__="up", instance="a", job="node"} 1E+00\n'
            '        got: {__name__="up", instance="a", job="node"} 0E+00') in err


@pytest.mark.skipif(not AG_RULES.exists(), reason="alert-generator compliance rules not present")
def test_alert_generator_compliance_rules(tmp_path: Path) -> None:
    rc, _out, err = _run(_staged(tmp_path) / "alert_generator_test.yml")
    assert (rc, err) == (0, "")


def test_bad_rule_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up ==\n")
    (tmp_path / "t.yml").write_text("rule_files: [r.yml]\ntests: []\n")
    rc, _out, err = _run(tmp_path / "t.yml")
    assert rc == 1
    assert 'group "g", rule 1, "A": could not parse expression' in err


@pytest.mark.peer
@pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool not installed")
@pytest.mark.parametrize("name", ["pass_test.yml", "fail_test.yml", "alert_generator_test.yml"])
def test_same_verdict_as_promtool(tmp_path: Path, name: str) -> None:
    staged = _staged(tmp_path) / name
    if name.startswith("alert_generator") and not AG_RULES.exists():
        pytest.skip("alert-generator compliance rules not present")
    peer = subprocess.run([PROMTOOL, "test", "rules", str(staged)], capture_output=True, text=True, timeout=60)
    rc, _out, _err = _run(staged)
    assert rc == peer.returncode, peer.stdout + peer.stderr
