"""A Chaos Toolkit run's resilience report: its target and window read from the journal, the request the
server answers (``POST /api/chaos/v1/report``), and the report written back into the journal.

The target is the experiment's ``pitwall`` extension's ``target`` (``{"namespace", "app"}``,
``{"namespace", "labelSelectors"}`` or a Chaos Mesh selector); without one, the one target of the faults the
run started with ``pitwall.chaos.ctk.start_fault`` (their ``spec``'s selector, as the Chaos Mesh report reads
an object's). No target, or faults on several, is no report, with the reason in the journal.

The window runs from the first fault started (else the first method activity, else the run's start) to the
last activity of the method or the rollbacks ended (``reverted_at``: the last revert the run could have made);
recovery is counted from there. The server computes the report with the experiment report's code
(``ResilienceReporter.report_run``); this module only reads the journal and writes the answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pitwall.chaos.target import find_selector, selector_target

__all__ = ["EXTENSION", "NoTarget", "extension_entry", "journal_target", "render", "report_request", "run_window"]

Obj = dict[str, Any]
EXTENSION = "pitwall"  # the name of pitwall's entry in an experiment's ``extensions``
CTK_MODULE = "pitwall.chaos.ctk"


class NoTarget(ValueError):
    """The run names no target and started no fault, or faults on several targets (the message says which)."""


def _provider(run: Obj) -> Obj:
    return dict((run.get("activity") or {}).get("provider") or {})


def _substitute(value: Any, mapping: Obj) -> Any:
    if not mapping or "${" not in repr(value):  # nothing to substitute: spare the runner's import (0.5 s)
        return value
    # the runner's ${name} rules (chaoslib's), here: the runner imports YAML
    from pitwall.chaos.experiment import substitute

    return substitute(value, mapping)


def fault_runs(journal: Obj) -> list[Obj]:
    """The method's and rollbacks' ``start_fault`` calls that succeeded, in the journal's order."""
    return [r for r in [*(journal.get("run") or []), *(journal.get("rollbacks") or [])]
            if _provider(r).get("module") == CTK_MODULE and _provider(r).get("func") == "start_fault"
            and r.get("status") == "succeeded"]


def extension_entry(experiment: Obj) -> Obj | None:
    """The experiment's ``pitwall`` extension entry, if it has one."""
    return next((e for e in experiment.get("extensions") or []
                 if isinstance(e, dict) and e.get("name") == EXTENSION), None)


def journal_target(journal: Obj, mapping: Obj | None = None) -> Obj:
    """The target the report is about: the ``pitwall`` extension's, else the one target of the run's faults
    (``{namespace, app}``; ``app`` empty for a whole namespace); ``NoTarget`` otherwise."""
    ext = extension_entry(journal.get("experiment") or {})
    if ext is not None and ext.get("target") is not None:
        target = _substitute(ext["target"], mapping or {})
        if not isinstance(target, dict):
            raise NoTarget("the pitwall extension's target must be an object (namespace and app or labelSelectors)")
        return dict(target)
    found: set[tuple[str, str]] = set()
    for r in fault_runs(journal):
        args = _substitute(_provider(r).get("arguments") or {}, mapping or {})
        found.add(selector_target(find_selector(args.get("spec") or {}), str(args.get("namespace") or "default")))
    if not found:
        raise NoTarget("no target: the run started no fault through pitwall.chaos.ctk.start_fault; name one in "
                       'the experiment\'s extensions: {"name": "pitwall", "target": {"namespace": ..., "app": ...}}')
    if len(found) > 1:
        names = ", ".join(sorted(f"{ns}/{app}" if app else f"namespace {ns}" for ns, app in found))
        raise NoTarget(f"the run started faults on {len(found)} targets ({names}): name the one to report on in "
                       "the pitwall extension's target")
    ns, app = found.pop()
    return {"namespace": ns, "app": app}


def _iso(v: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(v).replace("Z", "+00:00")) if v else None
    except ValueError:
        return None


def run_window(journal: Obj, now: datetime) -> tuple[datetime, datetime, datetime]:
    """``(start, end, reverted_at)``: the first fault started (else the first method activity, else the run's
    start), the run's end (``now`` before the journal has one) and the last method or rollback activity's end."""
    run_start = _iso(journal.get("start")) or now
    faults = [t for t in (_iso(r.get("start")) for r in fault_runs(journal)) if t is not None]
    method = [t for t in (_iso(r.get("start")) for r in journal.get("run") or []) if t is not None]
    start = min(faults) if faults else (min(method) if method else run_start)
    ends = [t for t in (_iso(r.get("end")) for r in [*(journal.get("run") or []), *(journal.get("rollbacks") or [])])
            if t is not None]
    end = _iso(journal.get("end")) or now
    reverted = max(max(ends) if ends else end, start)
    return start, max(end, reverted), reverted


def report_request(journal: Obj, now: datetime, mapping: Obj | None = None) -> Obj:
    """The body of ``POST /api/chaos/v1/report`` for this run; ``NoTarget`` when it has none."""
    target = journal_target(journal, mapping)
    start, end, reverted = run_window(journal, now)
    return {"target": target, "start": start.isoformat(), "end": end.isoformat(), "reverted_at": reverted.isoformat()}


def _fmt(v: Any, unit: str) -> str:
    return "-" if v is None else f"{v:.2f}{unit}"


def render(report: Obj) -> str:
    """The report as a few lines of text (``pitwall chaos run`` prints it)."""
    lines = [f"Resilience report: {report.get('target')} from {report.get('start')} to {report.get('end')}"]
    signals = report.get("signals") or {}
    for key, title, unit in (("rate", "request rate", " req/s"), ("errors", "error ratio", " %"),
                             ("p99", "p99 latency", " ms")):
        s = signals.get(key) or {}
        lines.append(f"  {title:<13} before {_fmt(s.get('before'), unit):>12}  during {_fmt(s.get('during'), unit):>12}"
                     f"  after {_fmt(s.get('after'), unit):>12}")
    rec = report.get("recovery_s")
    lines.append(f"  recovered {rec:.0f} s after the last revert" if rec is not None
                 else f"  recovery: {report.get('recovery_note')}")
    slo = report.get("slo")
    if not slo:
        lines.append("  SLO budget: no SLO whose service is the target's app" if slo == []
                     else "  SLO budget: not read (no app label, or no SLO pillar)")
    for s in slo or []:
        consumed = s.get("consumed")
        lines.append(f"  SLO {s.get('name')}: " + ("no data" if consumed is None
                                                   else f"{consumed * 100:.2f}% of its error budget spent"))
    return "\n".join(lines)
