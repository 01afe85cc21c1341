"""Runs Prometheus' promqltest scripts against the engine, one test per file and backend.

Each test prints ``[<backend>] <file>: N passed, N failed, N skipped``; skipped
cases and their reasons are listed in ``promqltest.SKIP_FILES`` /
``SKIP_CASES`` / the native-histogram rules of ``promqltest.skip_reason``.

Backends: ``memory`` (MemoryQuerier) and ``store`` (the real MetricStore,
DuckDB blocks + head). Which cases run depends only on the script, so the
check that every run case passes also means both backends pass the same
number of cases; ``test_skips_do_not_depend_on_backend`` pins that.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.promqltest import BACKENDS, SKIP_FILES, TESTDATA, EvalCase, parse_script, run_file

FILES = sorted(TESTDATA.glob("*.test"))
pytestmark = pytest.mark.skipif(not FILES, reason=f"promqltest scripts not found under {TESTDATA}")


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_promqltest_file(path: Path, backend: str) -> None:
    report = run_file(path, backend)
    print(f"[{backend}] {report.summary(path.name)}")
    for skip in report.skips:
        print("  skipped", skip)
    cases = sum(isinstance(c, EvalCase) for c in parse_script(path.read_text()))
    assert report.passed + report.failed + report.skipped == cases
    assert report.failed == 0, report.summary(path.name) + "\n" + "\n".join(report.failures)


@pytest.mark.parametrize(
    "name", [p.name for p in FILES if p.name not in SKIP_FILES and p.name in ("operators.test", "limit.test")]
)
def test_skips_do_not_depend_on_backend(name: str) -> None:
    reports = {b: run_file(TESTDATA / name, b) for b in BACKENDS}
    skips = {b: r.skips for b, r in reports.items()}
    assert skips["memory"] == skips["store"]
    assert reports["memory"].passed == reports["store"].passed
