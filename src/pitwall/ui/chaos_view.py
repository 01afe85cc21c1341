"""What the chaos page shows: every Chaos Mesh experiment, Schedule and Workflow with its target, window
and phase, and the effect on the target's golden signals (from the mesh's Istio metrics).

``ChaosSource`` is the UI's interface onto the chaos pillar (the composition root hands in
``pitwall.chaos.ChaosConsole``); the rest are pure functions from objects to rows, tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlencode

from pitwall.chaos import find_selector, golden_signals, margin_s, phase_of, signal_selector, window
from pitwall.core.durations import short_age
from pitwall.ui.objects import condition
from pitwall.ui.workloads_view import age

__all__ = ["ChaosSource", "ExperimentRow", "experiment_row", "golden_charts", "phase_of", "signal_selector"]

Obj = dict[str, Any]
class ChaosSource(Protocol):
    """The reads the chaos page makes, and the halt-all (the same one the API and the CLI call)."""

    kinds: tuple[str, ...]

    async def experiments(self, namespace: str = "") -> list[Obj]:
        """Every chaos object, Schedule and Workflow of ``namespace`` (all when empty)."""
        ...

    async def experiment(self, kind: str, namespace: str, name: str) -> Obj | None:
        """One of them, or None."""
        ...

    async def events(self, namespace: str, kind: str, name: str) -> list[Obj]:
        """Its Events, oldest first."""
        ...

    async def halt(self, who: str) -> list[str]:
        """Pause every experiment; ``Kind ns/name`` of those newly paused."""
        ...

    async def resilience_report(self, obj: Obj, now: float) -> Obj:
        """Its signals before, during and after its window, time to recover, SLO budget spent."""
        ...


def target_of(o: Obj) -> str:
    """The blast radius in words: namespaces, labels, pods, and the mode."""
    spec = o.get("spec") or {}
    sel = find_selector(spec)
    ns = str((o.get("metadata") or {}).get("namespace", ""))
    parts = []
    namespaces = sel.get("namespaces") or [ns]
    parts.append("ns " + ",".join(str(n) for n in namespaces))
    labels = sel.get("labelSelectors") or {}
    if labels:
        parts.append(",".join(f"{k}={v}" for k, v in sorted(labels.items())))
    pods = sel.get("pods") or {}
    if pods:
        parts.append("pods " + ",".join(f"{k}/{p}" for k, v in pods.items() for p in v or []))
    mode = spec.get("mode") or find_mode(spec)
    if mode:
        parts.append(f"mode {mode}" + (f" {spec.get('value')}" if spec.get("value") else ""))
    return " · ".join(parts)


def find_mode(spec: Any, depth: int = 0) -> str:
    if not isinstance(spec, dict) or depth > 4:
        return ""
    if isinstance(spec.get("mode"), str) and isinstance(spec.get("selector"), dict):
        return str(spec["mode"])
    for v in spec.values():
        for item in v if isinstance(v, list) else [v]:
            found = find_mode(item, depth + 1)
            if found:
                return found
    return ""


@dataclass(frozen=True)
class ExperimentRow:
    """One experiment as the chaos page lists it."""

    kind: str
    namespace: str
    name: str
    action: str
    target: str
    service: str  # whose golden signals are shown
    phase: str
    start: str
    end: str
    duration: str
    records: int
    message: str
    start_s: float
    end_s: float  # 0 while running


def _action(o: Obj) -> str:
    spec = o.get("spec") or {}
    kind = str(o.get("kind", ""))
    if kind == "Schedule":
        return f"{spec.get('type', '')} on {spec.get('schedule', '')!s}"
    if kind == "Workflow":
        return f"entry {spec.get('entry', '')} · {len(spec.get('templates') or [])} templates"
    if kind == "HTTPChaos":  # no action field: the faults are the fields that are set
        faults = [f for f in ("abort", "delay", "replace", "patch") if spec.get(f)]
        return f"{' + '.join(faults) or 'no fault'} on {spec.get('target', 'Request').lower()}s to port {spec.get('port', '?')}"
    if kind == "StressChaos":
        return ",".join(sorted((spec.get("stressors") or {}).keys())) or "stress"
    return str(spec.get("action", ""))


def _fmt(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%SZ") if t else ""


def experiment_row(o: Obj, now: datetime | None = None) -> ExperimentRow:
    """The experiment's row: what it does to whom, when, and where it is now."""
    now = now or datetime.now(UTC)
    m = o.get("metadata") or {}
    start, end = window(o)
    phase = phase_of(o)
    message = ""
    for t in ("Selected", "AllInjected"):
        c = condition(o, t)
        if c.get("status") == "False" and (c.get("reason") or c.get("message")):
            message = str(c.get("message") or c.get("reason"))
            break
    if str(o.get("kind")) == "Schedule":
        st = o.get("status") or {}
        message = (f"last fired {age(st['time'], now)} ago" if st.get("time") else "not fired yet") + \
            f" · {len(st.get('active') or [])} active"
    span = ((end or now) - start).total_seconds() if start else 0.0
    return ExperimentRow(
        kind=str(o.get("kind", "")), namespace=str(m.get("namespace", "")), name=str(m.get("name", "")),
        action=_action(o), target=target_of(o), service=signal_selector(o)[1], phase=phase,
        start=_fmt(start), end=_fmt(end) if end else ("—" if phase not in ("Running", "Injecting") else "running"),
        duration=short_age(span) if start else "—", records=len(((o.get("status") or {}).get("experiment") or {}).get("containerRecords") or []),
        message=message,
        start_s=start.timestamp() if start else 0.0, end_s=end.timestamp() if end else 0.0)


def golden_charts(o: Obj, row: ExperimentRow, now: float, only: str = "") -> list[dict[str, str]]:
    """Chart sources (``/ui/api/chart``) of the target's request rate, error ratio and p99 latency over the
    experiment's window plus margins; ``only`` keeps one of ``rate``, ``errors``, ``p99``."""
    if not row.start_s:
        return []
    sel, _ = signal_selector(o)
    margin = margin_s(row.start_s, row.end_s, now)
    frm, to = row.start_s - margin, min((row.end_s or now) + margin, now)
    out = []
    for key, (title, expr) in golden_signals(sel).items():
        if only and key != only:
            continue
        qs = urlencode([("expr", expr), ("legend", title.split(" (")[0]), ("from", f"{frm:.0f}"), ("to", f"{to:.0f}")])
        out.append({"key": key, "title": title, "query": expr, "src": "/ui/api/chart?" + qs})
    return out


def window_link(row: ExperimentRow, now: float) -> str:
    """The query string of the experiment's window plus margins (for links to other pages)."""
    margin = margin_s(row.start_s, row.end_s, now)
    return urlencode({"from": f"{row.start_s - margin:.0f}", "to": f"{min((row.end_s or now) + margin, now):.0f}"})
