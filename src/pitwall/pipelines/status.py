"""GitLab's status arithmetic: a composite status of many jobs, and which statuses let a job start.

Follows ``Gitlab::Ci::Status::Composite``: a failed job allowed to fail counts as success with warnings;
an allowed-to-fail job that failed, was canceled or waits as manual is ignored; with ``needs`` (DAG) any
skipped or ignored need skips the job."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["ACTIVE", "COMPLETED", "composite", "next_status"]

COMPLETED = frozenset({"success", "failed", "canceled", "skipped"})
ACTIVE = frozenset({"pending", "running", "waiting_for_resource", "preparing"})


def composite(jobs: Iterable[dict[str, Any]], *, dag: bool = False) -> str | None:
    """The status of ``jobs`` taken together (None for no jobs)."""
    seen: set[str] = set()
    for j in jobs:
        st, af = j["status"], j.get("allow_failure", False)
        if af and st == "failed":
            seen.add("success_with_warnings")
        elif af and st in ("canceled", "manual"):
            seen.add("ignored")
        else:
            seen.add(st)
    if not seen:
        return None

    def only(*names: str) -> bool:
        return seen <= set(names)

    if dag and seen & {"skipped", "ignored"}:
        return "skipped"
    if only("skipped", "ignored"):
        return "skipped"
    if only("success", "skipped", "success_with_warnings", "ignored"):
        return "success"
    if only("created", "success_with_warnings", "ignored"):
        return "created"
    if only("canceled", "success", "skipped", "success_with_warnings", "ignored"):
        return "canceled"
    if only("pending", "created", "skipped", "success_with_warnings", "ignored"):
        return "pending"
    if seen & {"running", "pending"}:
        return "running"
    if "waiting_for_resource" in seen:
        return "waiting_for_resource"
    if "manual" in seen:
        return "manual"
    if "scheduled" in seen:
        return "scheduled"
    if "created" in seen:
        return "running"
    return "failed"


def next_status(when: str, preds: list[dict[str, Any]], dag: bool) -> str | None:
    """What a created job becomes given its predecessors (its needs, or every job of earlier stages):
    ``pending``, ``manual``, ``scheduled``, ``skipped``, or None to keep waiting."""
    if dag and any(p["status"] == "manual" for p in preds):
        return None  # a job that needs a manual job waits for it to be played
    if any(p["status"] not in COMPLETED and not (p["status"] == "manual" and p.get("allow_failure")) for p in preds):
        return None
    state = composite(preds, dag=dag) or "success"
    valid = {"on_success": {"success"} if dag else {"success", "skipped"},
             "manual": {"success"} if dag else {"success", "skipped"},
             "delayed": {"success"} if dag else {"success", "skipped"},
             "on_failure": {"failed"},
             "always": {"success", "failed", "skipped", "canceled"}}[when]
    if state in valid:
        return {"manual": "manual", "delayed": "scheduled"}.get(when, "pending")
    return "skipped" if state in COMPLETED else None
