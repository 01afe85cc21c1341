"""DORA's four keys computed from recorded deployments (and incidents), as dora.dev and Google's Four Keys
define them, over a window ending at ``end``:

* deployment frequency: successful deployments to the environment per day;
* lead time for changes: median time from a change's commit to its successful deployment (each commit a
  deployment brought, when the deployment recorded them, else its head commit);
* change failure rate: failed changes / changes, a change being a deployment that finished ``success`` or
  ``failed``; failed when its deployment failed (its job failed: a canary rolled back, a manifest refused) or
  an incident on its service opened after it succeeded and before the next successful deployment;
* time to restore service (DORA's failed deployment recovery time): median time from a failed change's
  failure (the failed deployment's end, or the incident's start) to the restore (the next successful
  deployment, or the incident's resolution, whichever is first).

Pure functions: the clock and the data are arguments (tests pass recorded deployments and a fake ``end``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from statistics import median
from typing import Any

from pitwall.pipelines.durations import parse_human_duration

__all__ = ["Incident", "commit_time", "dora_figures", "parse_window"]

MAX_WINDOW_S = 366 * 86400.0


@dataclass(frozen=True)
class Incident:
    """An incident as DORA joins it: the service it is on, when it opened and when it was resolved."""

    services: frozenset[str]
    created_at: float
    resolved_at: float | None


def parse_window(text: str) -> float:
    """Seconds of a window like ``30d``, ``1w``, ``12h`` (at most a year); ``ValueError`` otherwise."""
    s = parse_human_duration(text)
    if not 0 < s <= MAX_WINDOW_S:
        raise ValueError(f"window {text!r} must be more than 0 and at most 366 days")
    return s


def commit_time(ts: str | None) -> float | None:
    """A commit timestamp (git's ISO 8601 ``%cI``) in seconds."""
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _services(d: dict[str, Any]) -> set[str]:
    return {s for s in (d.get("environment"), d.get("project"), d.get("service")) if s}


def _failure(d: dict[str, Any], after: list[dict[str, Any]], incidents: list[Incident]
             ) -> tuple[float, float | None] | None:
    """When change ``d`` failed and when service came back (None: not yet); None for a change that did not
    fail. ``after``: the successful deployments that followed ``d``, oldest first."""
    next_ok = after[0]["finished_at"] if after else None
    if d["status"] == "failed":
        return d["finished_at"], next_ok
    svc = _services(d)
    for inc in sorted(incidents, key=lambda i: i.created_at):
        if inc.services & svc and inc.created_at >= d["finished_at"] and (next_ok is None or
                                                                          inc.created_at < next_ok):
            ends = [t for t in (inc.resolved_at, next_ok) if t is not None and t >= inc.created_at]
            return inc.created_at, min(ends) if ends else None
    return None


def _round(v: float | None) -> float | None:
    return round(v, 3) if v is not None else None


def dora_figures(deployments: list[dict[str, Any]], incidents: list[Incident], *, environment: str,
                 project_id: int | None, end: float, window_s: float) -> dict[str, Any]:
    """The four keys over ``(end - window_s, end]`` for deployments to ``environment`` (of one project or all)."""
    start = end - window_s
    mine = sorted((d for d in deployments if d["environment"] == environment and d.get("finished_at")
                   and (project_id is None or d["project_id"] == project_id)
                   and d["status"] in ("success", "failed")), key=lambda d: d["finished_at"])
    changes = [d for d in mine if start < d["finished_at"] <= end]
    ok = [d for d in changes if d["status"] == "success"]
    leads: list[float] = []
    for d in ok:
        times = [t for t in d.get("commit_times") or [commit_time(d.get("commit_timestamp"))] if t is not None]
        leads.extend(max(0.0, d["finished_at"] - t) for t in times)
    failed, restores = 0, []
    for d in changes:
        later_ok = [x for x in mine if x["status"] == "success" and x["finished_at"] > d["finished_at"]]
        f = _failure(d, later_ok, incidents)
        if f is None:
            continue
        failed += 1
        if f[1] is not None and f[1] <= end:
            restores.append(f[1] - f[0])
    days = window_s / 86400
    return {"environment": environment, "project_id": project_id, "window_seconds": window_s,
            "start": start, "end": end,
            "deployments": len(ok), "changes": len(changes), "failed_changes": failed,
            "deployment_frequency_per_day": round(len(ok) / days, 4),
            "lead_time_seconds": _round(median(leads)) if leads else None,
            "change_failure_rate": round(failed / len(changes), 4) if changes else None,
            "time_to_restore_seconds": _round(median(restores)) if restores else None,
            "restored": len(restores)}
