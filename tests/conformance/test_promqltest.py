"""Runs Prometheus' promqltest scripts against the engine, one test per file.

Each test prints ``<file>: N passed, N failed, N skipped``; skipped cases and
their reasons are listed in ``promqltest.SKIP_FILES`` / ``SKIP_CASES`` / the
native-histogram rules of ``promqltest.skip_reason``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.promqltest import TESTDATA, run_file

FILES = sorted(TESTDATA.glob("*.test"))


@pytest.mark.skipif(not FILES, reason=f"promqltest scripts not found under {TESTDATA}")
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_promqltest_file(path: Path) -> None:
    report = run_file(path)
    print(report.summary(path.name))
    for skip in report.skips:
        print("  skipped", skip)
    assert report.failed == 0, report.summary(path.name) + "\n" + "\n".join(report.failures)
