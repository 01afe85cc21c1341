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

from pitwall.core.durations import short_age
from pitwall.ui.objects import condition, obj_time, quote
from pitwall.ui.workloads_view import age

__all__ = ["ChaosSource", "ExperimentRow", "experiment_row", "golden_charts", "phase_of", "signal_selector"]

Obj = dict[str, Any]
PAUSE = "experiment.chaos-mesh.org/pause"
_ONE_SHOT = ("pod-kill", "container-kill")
MIN_MARGIN_S = 120.0  # signals are shown from this long before the start to this long after the end
MAX_MARGIN_S = 3600.0


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
        if condition(o, "Accomplished").get("status") == "True":
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
            t = obj_time(e.get("timestamp"))
            if t is not None and e.get("operation") == op and e.get("type") == "Succeeded":
                out.append(t)
    return sorted(out)


def window(o: Obj) -> tuple[datetime | None, datetime | None]:
    """When the experiment acted: its first fault applied (a Workflow's startTime; else its creation) to
    its last fault reverted (a Workflow's endTime); end None while it runs."""
    m, st = o.get("metadata") or {}, o.get("status") or {}
    kind, phase = str(o.get("kind", "")), phase_of(o)
    if kind == "Workflow":
        return obj_time(st.get("startTime")) or obj_time(m.get("creationTimestamp")), obj_time(st.get("endTime"))
    if kind == "Schedule":
        return obj_time(m.get("creationTimestamp")), None
    applied = _record_times(o, "Apply")
    start = applied[0] if applied else obj_time(m.get("creationTimestamp"))
    end = None
    if phase in ("Finished", "Paused"):
        recovered = _record_times(o, "Recover")
        end = recovered[-1] if recovered else (applied[-1] if applied else start)
    return start, end


def find_selector(spec: Any, depth: int = 0) -> Obj:
    """The first ``selector`` in a spec (a Schedule or Workflow embeds the chaos spec one level or two down)."""
    if not isinstance(spec, dict) or depth > 4:
        return {}
    if isinstance(spec.get("selector"), dict):
        return dict(spec["selector"])
    for v in spec.values():
        for item in v if isinstance(v, list) else [v]:
            found = find_selector(item, depth + 1)
            if found:
                return found
    return {}


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


def signal_selector(o: Obj) -> tuple[str, str]:
    """The PromQL label matchers of the target's inbound requests in the mesh's Istio metrics, and the name
    shown for it: the pods' ``app`` label (``destination_app``) when the selector names one, else the whole
    namespace."""
    sel = find_selector(o.get("spec") or {})
    ns = str(((sel.get("namespaces") or [None])[0]) or (o.get("metadata") or {}).get("namespace", ""))
    labels = sel.get("labelSelectors") or {}
    base = f'reporter="destination",destination_workload_namespace="{quote(ns)}"'
    app = labels.get("app") or labels.get("app.kubernetes.io/name")
    if app:
        return f'{base},destination_app="{quote(str(app))}"', f"{ns}/{app}"
    return base, f"namespace {ns}"


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
        duration=short_age(span) if start else "—", records=len(_records(o)), message=message,
        start_s=start.timestamp() if start else 0.0, end_s=end.timestamp() if end else 0.0)


def margin_s(row: ExperimentRow, now: float) -> float:
    """Half the experiment's length, within [MIN_MARGIN_S, MAX_MARGIN_S]."""
    span = (row.end_s or now) - row.start_s
    return max(MIN_MARGIN_S, min(span / 2, MAX_MARGIN_S))


def golden_charts(o: Obj, row: ExperimentRow, now: float, only: str = "") -> list[dict[str, str]]:
    """Chart sources (``/ui/api/chart``) of the target's request rate, error ratio and p99 latency over the
    experiment's window plus margins; ``only`` keeps one of ``rate``, ``errors``, ``p99``."""
    if not row.start_s:
        return []
    sel, _ = signal_selector(o)
    margin = margin_s(row, now)
    frm, to = row.start_s - margin, min((row.end_s or now) + margin, now)
    total = f"sum(rate(istio_requests_total{{{sel}}}[1m]))"
    errors = f'sum(rate(istio_requests_total{{{sel},response_code=~"5.*"}}[1m]))'
    charts = {
        "rate": ("Request rate (req/s)", total),
        "errors": ("Error ratio (% 5xx)", f"100 * ({errors} or vector(0)) / {total}"),
        "p99": ("p99 latency (ms)",
                f"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{sel}}}[1m])))"),
    }
    out = []
    for key, (title, expr) in charts.items():
        if only and key != only:
            continue
        qs = urlencode([("expr", expr), ("legend", title.split(" (")[0]), ("from", f"{frm:.0f}"), ("to", f"{to:.0f}")])
        out.append({"key": key, "title": title, "query": expr, "src": "/ui/api/chart?" + qs})
    return out


def window_link(row: ExperimentRow, now: float) -> str:
    """The query string of the experiment's window plus margins (for links to other pages)."""
    margin = margin_s(row, now)
    return urlencode({"from": f"{row.start_s - margin:.0f}", "to": f"{min((row.end_s or now) + margin, now):.0f}"})
