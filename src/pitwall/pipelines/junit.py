"""JUnit XML reports (``artifacts:reports:junit``) into GitLab's test report shape."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from pitwall.pipelines.spec import glob_match

__all__ = ["empty_report", "merge_reports", "parse_junit"]

MAX_REPORT_BYTES = 30 << 20  # GitLab's junit report limit


def empty_report() -> dict[str, Any]:
    return {"total_time": 0.0, "total_count": 0, "success_count": 0, "failed_count": 0, "skipped_count": 0,
            "error_count": 0, "test_suites": []}


def parse_junit(root: Path, patterns: tuple[str, ...]) -> dict[str, Any]:
    """The test cases of every report file under ``root`` matching ``patterns``, as one suite."""
    cases: list[dict[str, Any]] = []
    suite_error = None
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or not any(glob_match(p, rel) for p in patterns):
            continue
        if path.stat().st_size > MAX_REPORT_BYTES:
            suite_error = f"JUnit report {rel} is larger than {MAX_REPORT_BYTES} bytes"
            continue
        try:
            tree = ET.parse(path)
        except ET.ParseError as e:
            suite_error = f"JUnit XML parsing failed: {e}"
            continue
        for tc in tree.getroot().iter("testcase"):
            cases.append(_case(tc))
    return _suite(cases, suite_error)


def _case(tc: ET.Element) -> dict[str, Any]:
    status, trace = "success", None
    for tag, st in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        el = tc.find(tag)
        if el is not None:
            status, trace = st, (el.text or el.get("message") or "")
            break
    try:
        t = float(tc.get("time") or 0)
    except ValueError:
        t = 0.0
    out = tc.find("system-out")
    return {"status": status, "name": tc.get("name", ""), "classname": tc.get("classname", ""),
            "file": tc.get("file"), "execution_time": t, "system_output": out.text if out is not None else None,
            "stack_trace": trace, "recent_failures": None, "attachment_url": None}


def _suite(cases: list[dict[str, Any]], suite_error: str | None) -> dict[str, Any]:
    counts = {s: sum(1 for c in cases if c["status"] == s) for s in ("success", "failed", "skipped", "error")}
    return {"total_time": round(sum(c["execution_time"] for c in cases), 6), "total_count": len(cases),
            "success_count": counts["success"], "failed_count": counts["failed"],
            "skipped_count": counts["skipped"], "error_count": counts["error"], "suite_error": suite_error,
            "test_cases": cases}


def merge_reports(suites: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """GitLab's pipeline test report: one suite per job, summed."""
    out = empty_report()
    for name, s in suites:
        out["test_suites"].append({"name": name, **s})
        out["total_time"] = round(out["total_time"] + s["total_time"], 6)
        for k in ("total_count", "success_count", "failed_count", "skipped_count", "error_count"):
            out[k] += s[k]
    return out
