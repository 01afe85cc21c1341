"""What an experiment did to its target: its window, the target's golden signals, and the resilience report.

An experiment acts from its first fault applied to its last fault reverted (``window``); its target's signals
are the mesh's Istio metrics of the requests its pods receive (``signal_selector``, ``golden_signals``). The
resilience report (``ResilienceReporter.report``) compares those signals before, during and after the window,
says how long the target took to recover once the fault was reverted, and how much error budget the target's
SLOs spent in the window. The chaos page and ``GET /api/chaos/v1/experiments/{ns}/{kind}/{name}/report`` show it;
``report_run`` computes the same report for a Chaos Toolkit run's window and target (``POST /api/chaos/v1/report``).
A report is ``complete`` once the target recovered or the whole margin after the revert is in the data.

Recovered means: the error ratio is back within one point (or a tenth, if more) of the baseline's and the p99
latency within a quarter (or 5 ms, if more) of it, for ``HOLD_STEPS`` steps in a row. The baseline is the same
length of time before the window as the margin after it (2 min to 1 h, half the window).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from pitwall.chaos.target import BadTarget, find_selector, parse_target, selector_target
from pitwall.kube import parse_time

if TYPE_CHECKING:
    from pitwall.metrics import RangeQuery

__all__ = [
    "BadTarget",
    "ResilienceReporter",
    "SloBudgets",
    "find_selector",
    "golden_signals",
    "margin_s",
    "parse_target",
    "phase_of",
    "selector_target",
    "signal_selector",
    "target_selector",
    "window",
]

Obj = dict[str, Any]
PAUSE = "experiment.chaos-mesh.org/pause"
_ONE_SHOT = ("pod-kill", "container-kill")
MIN_MARGIN_S = 120.0  # signals are compared from this long before the start to this long after the end
MAX_MARGIN_S = 3600.0
MAX_POINTS = 240  # of each range query
HOLD_STEPS = 3  # consecutive steps within the baseline's bounds that count as recovered
# The budget a service's SLOs spent in [start_ms, end_ms]: objects with ``name`` and ``consumed`` (a share of
# the period's budget, None without data); the SLO pillar's ``consumed_by_service``.
SloBudgets = Callable[[str, int, int], Awaitable[Sequence[Any]]]


def _condition_status(o: Obj, type_: str) -> str:
    return str(next((c.get("status") for c in (o.get("status") or {}).get("conditions") or []
                     if c.get("type") == type_), ""))


def _records(o: Obj) -> list[Obj]:
    return list(((o.get("status") or {}).get("experiment") or {}).get("containerRecords") or [])


def _paused(o: Obj) -> bool:
    return ((o.get("metadata") or {}).get("annotations") or {}).get(PAUSE) == "true"


def phase_of(o: Obj) -> str:
    """The phase Chaos Mesh's dashboard shows: Injecting, Running, Paused, Finished (or Failed for a Workflow
    past its deadline; Active for a Schedule); ``Not selected`` when nothing matched or a guard refused."""
    kind = str(o.get("kind", ""))
    if kind == "Schedule":
        return "Paused" if _paused(o) else "Active"
    if kind == "Workflow":
        if _condition_status(o, "Accomplished") == "True":
            return "Finished"
        return "Paused" if _paused(o) else "Running"
    records = _records(o)
    desired = str(((o.get("status") or {}).get("experiment") or {}).get("desiredPhase") or "")
    injected = bool(records) and all(r.get("phase") == "Injected" for r in records)
    recovered = all(r.get("phase") == "Not Injected" for r in records)
    if kind == "PodChaos" and (o.get("spec") or {}).get("action") in _ONE_SHOT and injected:
        return "Finished"  # a kill is done once it happened
    if _paused(o):
        return "Paused" if recovered else "Pausing"
    if desired == "Stop":
        return "Finished" if recovered else "Recovering"
    if not records:
        return "Not selected" if desired == "Run" else "Injecting"
    return "Running" if injected else "Injecting"


def _record_times(o: Obj, op: str) -> list[datetime]:
    out = []
    for r in _records(o):
        for e in r.get("events") or []:
            t = parse_time(e.get("timestamp"))
            if t is not None and e.get("operation") == op and e.get("type") == "Succeeded":
                out.append(t)
    return sorted(out)


def window(o: Obj) -> tuple[datetime | None, datetime | None]:
    """When the experiment acted: its first fault applied (a Workflow's startTime; else its creation) to
    its last fault reverted (a Workflow's endTime); end None while it runs."""
    m, st = o.get("metadata") or {}, o.get("status") or {}
    kind, phase = str(o.get("kind", "")), phase_of(o)
    if kind == "Workflow":
        return parse_time(st.get("startTime")) or parse_time(m.get("creationTimestamp")), parse_time(st.get("endTime"))
    if kind == "Schedule":
        return parse_time(m.get("creationTimestamp")), None
    applied = _record_times(o, "Apply")
    start = applied[0] if applied else parse_time(m.get("creationTimestamp"))
    end = None
    if phase in ("Finished", "Paused"):
        recovered = _record_times(o, "Recover")
        end = recovered[-1] if recovered else (applied[-1] if applied else start)
    return start, end


def _quote(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


def target_app(o: Obj) -> tuple[str, str]:
    """The target's namespace and ``app`` label (empty when the selector names none)."""
    return selector_target(find_selector(o.get("spec") or {}), str((o.get("metadata") or {}).get("namespace", "")))


def target_selector(ns: str, app: str) -> tuple[str, str]:
    """The PromQL label matchers of a target's inbound requests in the mesh's Istio metrics, and the name
    shown for it: the pods' ``app`` label (``destination_app``) when there is one, else the whole namespace."""
    base = f'reporter="destination",destination_workload_namespace="{_quote(ns)}"'
    if app:
        return f'{base},destination_app="{_quote(app)}"', f"{ns}/{app}"
    return base, f"namespace {ns}"


def signal_selector(o: Obj) -> tuple[str, str]:
    """``target_selector`` of a Chaos Mesh object's target."""
    return target_selector(*target_app(o))


def golden_signals(sel: str) -> dict[str, tuple[str, str]]:
    """Title and PromQL of the request rate, error ratio (% 5xx) and p99 latency of the requests ``sel`` matches."""
    total = f"sum(rate(istio_requests_total{{{sel}}}[1m]))"
    errors = f'sum(rate(istio_requests_total{{{sel},response_code=~"5.*"}}[1m]))'
    return {
        "rate": ("Request rate (req/s)", total),
        "errors": ("Error ratio (% 5xx)", f"100 * ({errors} or vector(0)) / {total}"),
        "p99": ("p99 latency (ms)",
                f"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{sel}}}[1m])))"),
    }


def margin_s(start_s: float, end_s: float, now: float) -> float:
    """Half the experiment's length (``end_s`` 0 while it runs), within [MIN_MARGIN_S, MAX_MARGIN_S]."""
    return max(MIN_MARGIN_S, min(((end_s or now) - start_s) / 2, MAX_MARGIN_S))


def _final_at(end_s: float, start_s: float, now: float) -> float:
    """When the margin after a reverted window ends: a report that has not found the recovery by then is final."""
    return end_s + margin_s(start_s, end_s, now)


def _mean(ts: np.ndarray, vs: np.ndarray, lo: float, hi: float) -> float | None:
    keep = (ts >= lo) & (ts < hi) & ~np.isnan(vs)
    return float(vs[keep].mean()) if keep.any() else None


def _recovered_at(ts: np.ndarray, errors: np.ndarray, p99: np.ndarray, end_s: float,
                  base_err: float | None, base_p99: float | None) -> float | None:
    """The first time at or after ``end_s`` from which both signals stay within the baseline's bounds for
    ``HOLD_STEPS`` steps; None when they never do in the data."""
    err_max = None if base_err is None else base_err + max(1.0, base_err / 10)  # percentage points
    p99_max = None if base_p99 is None else max(base_p99 * 1.25, base_p99 + 5.0)
    run_start, run = None, 0
    for t, e, p in zip(ts, errors, p99, strict=True):
        if t < end_s:
            continue
        ok = (err_max is None or math.isnan(e) or e <= err_max) and (p99_max is None or math.isnan(p) or p <= p99_max)
        if ok:
            run_start = t if run == 0 else run_start
            run += 1
            if run >= HOLD_STEPS:
                return float(run_start)  # type: ignore[arg-type]
        else:
            run = 0
    return None


class ResilienceReporter:
    """Builds an experiment's resilience report from the metrics pillar's range queries (``range_query``) and
    the SLO pillar's budget reads (``slo_budgets``); either may be None (that part then says it is missing)."""

    def __init__(self, range_query: RangeQuery | None = None, slo_budgets: SloBudgets | None = None,
                 tenant: str = "default") -> None:
        self.range_query = range_query
        self.slo_budgets = slo_budgets
        self.tenant = tenant

    async def _series(self, expr: str, frm: float, to: float, step_s: float) -> tuple[np.ndarray, np.ndarray]:
        assert self.range_query is not None
        res = await asyncio.to_thread(self.range_query, expr, int(frm * 1000), int(to * 1000), int(step_s * 1000),
                                      self.tenant)
        grid = np.arange(int(frm * 1000), int(to * 1000) + 1, int(step_s * 1000), dtype=np.int64)
        out = np.full(len(grid), np.nan)
        if res.series:  # one series (every query is a sum or a quantile of a sum): align it on the grid
            idx = np.searchsorted(grid, res.timestamps[0])
            ok = (idx < len(grid)) & (grid[np.minimum(idx, len(grid) - 1)] == res.timestamps[0])
            out[idx[ok]] = res.values[0][ok]
        return grid / 1000.0, out

    async def report(self, o: Obj, now: float) -> Obj:
        """The report of one Chaos Mesh object, Schedule or Workflow (JSON-ready)."""
        start, end = window(o)
        return await self._report(target_app(o), start, end, now, phase_of(o))

    async def report_run(self, target: Obj, start: datetime, end: datetime, now: float,
                         reverted_at: datetime | None = None) -> Obj:
        """The report of a Chaos Toolkit run that acted on ``target`` (``parse_target``'s shapes) from ``start``
        (its first fault) and reverted its last fault at ``reverted_at`` (default: ``end``, the run's end):
        the window is [start, reverted_at], recovery is counted from ``reverted_at``."""
        out = await self._report(parse_target(target), start, reverted_at or end, now, "Finished")
        return {**out, "run_end": end.isoformat()}

    async def _report(self, target: tuple[str, str], start: datetime | None, end: datetime | None, now: float,
                      phase: str) -> Obj:
        """The report over [start, end] (``end`` None while the fault is in force): one code path for Chaos
        Mesh objects and Chaos Toolkit runs."""
        sel, name = target_selector(*target)
        out: Obj = {"target": name, "phase": phase,
                    "start": start.isoformat() if start else None, "end": end.isoformat() if end else None}
        if start is None:
            return {**out, "signals": None, "recovery_s": None, "recovery_note": "the experiment has not acted yet",
                    "slo": None, "complete": False}
        start_s, end_s = start.timestamp(), end.timestamp() if end else 0.0
        margin = margin_s(start_s, end_s, now)
        frm, to = start_s - margin, min((end_s or now) + margin, now)
        out["margin_s"] = margin
        out["signals"], out["recovery_s"], out["recovery_note"], pending = await self._signals(
            sel, frm, to, start_s, end_s, now)
        # final once reverted and not pending: a later report may still find the recovery only while the
        # margin after the revert is filling (without a baseline or metrics, it never will)
        out["complete"] = bool(end_s) and not pending
        out["slo"] = await self._slo(target[1], start_s, end_s or now)
        return out

    async def _signals(self, sel: str, frm: float, to: float, start_s: float, end_s: float,
                       now: float) -> tuple[Obj | None, float | None, str, bool]:
        """The phases' means, the recovery, its note and whether a later report may still find it."""
        if self.range_query is None:
            return None, None, "the metrics query interface is not available", False
        step = max(5.0, math.ceil((to - frm) / MAX_POINTS))
        series = {k: await self._series(expr, frm, to, step) for k, (_, expr) in golden_signals(sel).items()}
        phases = {"before": (frm, start_s), "during": (start_s, end_s or now), "after": (end_s or now, to + step)}
        signals = {k: {ph: _mean(ts, vs, lo, hi) for ph, (lo, hi) in phases.items()}
                   for k, (ts, vs) in series.items()}
        if not end_s:
            return signals, None, "still running", True
        base_err, base_p99 = signals["errors"]["before"], signals["p99"]["before"]
        if base_err is None and base_p99 is None:
            return signals, None, "no signals before the window to compare with", False
        ts, errors = series["errors"]
        at = _recovered_at(ts, errors, series["p99"][1], end_s, base_err, base_p99)
        if at is None and now < _final_at(end_s, start_s, now):
            return signals, None, (f"not recovered yet: {max(0.0, now - end_s):.0f} s of the "
                                   f"{_final_at(end_s, start_s, now) - end_s:.0f} s after the revert observed"), True
        if at is None:
            return signals, None, "not back within the baseline's bounds in the data", False
        return signals, max(0.0, at - end_s), "", False

    async def _slo(self, app: str, start_s: float, end_s: float) -> list[Obj] | None:
        if self.slo_budgets is None or not app:
            return None
        uses = await self.slo_budgets(app, int(start_s * 1000), int(end_s * 1000))
        return [{"name": str(u.name), "consumed": u.consumed} for u in uses]
