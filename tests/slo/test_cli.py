"""``pitwall slo generate|validate`` as a user runs them (a subprocess of the real CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SLOTH = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "wave2" / "sloth"
pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not SLOTH.exists(), reason="../shared is not beside the repo")]
INTEG = SLOTH / "test" / "integration" / "prometheus"


def _pitwall(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.run([sys.executable, "-m", "pitwall.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=50, check=False)


def test_generate_prints_sloths_rules() -> None:
    p = _pitwall("slo", "generate", "-l", "cmd=examplesgen.sh", str(SLOTH / "examples" / "getting-started.yml"))
    assert p.returncode == 0, p.stderr
    got = [d for d in yaml.safe_load_all(p.stdout) if d]
    want = [d for d in yaml.safe_load_all((SLOTH / "examples" / "_gen" / "getting-started.yml").read_text()) if d]
    # Only the version differs: pitwall's instead of Sloth's "dev".
    info = got[0]["groups"][1]["rules"][-1]["labels"]
    assert info.pop("sloth_version").startswith("pitwall-")
    want[0]["groups"][1]["rules"][-1]["labels"].pop("sloth_version")
    assert got == want


def test_generate_with_period_and_windows_dir() -> None:
    p = _pitwall("slo", "generate", "--default-slo-period", "7d", "--slo-period-windows-path", "./windows",
                 "./testdata/in-base.yaml", cwd=INTEG)
    assert p.returncode == 0, p.stderr
    assert "(13.44 * 0.0009999999999999432)" in p.stdout and "slo:sli_error:ratio_rate1w" in p.stdout


def test_generate_bad_spec_exits_1_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('version: "prometheus/v1"\nservice: s\nslos:\n  - name: a\n    objective: high\n')
    p = _pitwall("slo", "generate", str(bad))
    assert p.returncode == 1
    assert "slos[0].objective: not a number: 'high'" in p.stderr
    assert p.stdout == ""


def test_validate_exit_codes() -> None:
    data = INTEG / "testdata"
    ok = _pitwall("slo", "validate", "-i", str(data / "validate" / "good"), "--ignore-slo-duplicates")
    assert ok.returncode == 0, ok.stderr
    bad = _pitwall("slo", "validate", "-i", str(data / "validate" / "bad"))
    assert bad.returncode == 1 and "objective: must be >0 and <=100, got 101" in bad.stderr
    assert _pitwall("slo", "validate", "-i", str(data / "validate"), "--ignore-slo-duplicates",
                    "--fs-exclude", "bad").returncode == 0
