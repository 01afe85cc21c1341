"""What the releases pages show, computed from Flagger Canaries, their Events, the judge's result and the
change events of each rollout.

``ReleasesSource`` is the UI's read interface onto the releases pillar (the composition root hands in
``pitwall.releases.ReleasesConsole``) and ``ChangesSource`` onto the change-event stream
(``pitwall.incidents.ChangeLog``); everything else is pure functions from objects to template rows, so
they are tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlencode

from pitwall.releases import ABTEST_FIELDS, ABTEST_ROW_KEYS
from pitwall.ui.objects import condition, meta, quote
from pitwall.ui.timerange import TimeRange
from pitwall.ui.workloads_view import age

__all__ = [
    "ABTestForm",
    "CanaryRow",
    "ChangesSource",
    "ReleasesSource",
    "StepRow",
    "abtest_form",
    "abtest_pairs",
    "abtest_rows",
    "canary_charts",
    "canary_row",
    "change_rows",
    "metric_rows",
    "plan",
    "verdicts",
]

Obj = dict[str, Any]
# Flagger's phases, by how the page colours them.
_DONE_OK = {"Succeeded", "Initialized"}
_BAD = {"Failed"}


class ReleasesSource(Protocol):
    """The reads the releases pages make."""

    judged_condition: str

    async def canaries(self, namespace: str = "") -> list[Obj]:
        """Every Canary of ``namespace`` (all when empty)."""
        ...

    async def canary(self, namespace: str, name: str) -> Obj | None:
        """One Canary, or None."""
        ...

    async def abtests(self) -> list[Obj]:
        """Every saved A/B experiment (``pitwall.dev/v1`` ABTest)."""
        ...

    async def abtest(self, namespace: str, name: str) -> Obj | None:
        """One saved A/B experiment, or None."""
        ...

    async def events(self, namespace: str, name: str) -> list[Obj]:
        """The Canary's Events, oldest first."""
        ...

    async def split(self, canary: Obj) -> dict[str, Any] | None:
        """The weights its VirtualService holds now (``primary``, ``canary``, ``mirrored``...), or None."""
        ...

    def judgement(self, canary: Obj) -> dict[str, Any] | None:
        """The judge's last result document, or None."""
        ...


class ChangeLike(Protocol):
    kind: str
    summary: str
    source: str
    service: str
    who: str
    ts_ns: int
    details: dict[str, Any]


class ChangesSource(Protocol):
    """The change-event stream's reads (``pitwall.incidents.ChangeLog``)."""

    async def between(self, start_ns: int, end_ns: int, *, service: str = "",
                      limit: int = 1000) -> list[Any]:
        """Events with ``start_ns <= ts_ns < end_ns``, oldest first, of ``service`` when given."""
        ...


def phase_class(phase: str) -> str:
    """The pill class of a Flagger phase."""
    return "h-ok" if phase in _DONE_OK else ("h-err" if phase in _BAD else "h-unknown")


def strategy(spec: Obj) -> str:
    """Flagger's strategy as it decides it: A/B with ``match``, blue/green with ``iterations``, else canary."""
    a = spec.get("analysis") or {}
    if a.get("match"):
        return "A/B testing"
    if a.get("iterations"):
        return "Blue/Green"
    return "Canary" + (" (mirroring)" if a.get("mirror") else "")


@dataclass(frozen=True)
class CanaryRow:
    """A Canary as ``kubectl get canaries`` shows it, plus what the judge said last."""

    namespace: str
    name: str
    target: str
    strategy: str
    phase: str
    phase_class: str
    weight: int
    max_weight: int
    iterations: int
    failed_checks: int
    threshold: int
    last_transition: str  # RFC 3339 as stored
    last_transition_age: str
    message: str  # the Promoted condition's message
    judged: str  # the Judged condition's reason (Pass, Marginal, Nodata, Fail) or ""


def canary_row(cd: Obj, judged_type: str = "Judged", now: datetime | None = None) -> CanaryRow:
    """The Canary's row; ``judged_type`` is the judge's condition type."""
    m, spec, st = meta(cd), cd.get("spec") or {}, cd.get("status") or {}
    a = spec.get("analysis") or {}
    ready = condition(cd, "Ready")
    promoted = condition(cd, "Promoted")
    message = str(promoted.get("message") or "")
    if ready.get("status") == "False":  # a Canary that cannot run says why here
        message = f"{ready.get('reason', '')}: {ready.get('message', '')}"
    steps = [int(w) for w in a.get("stepWeights") or [] if isinstance(w, int | float)]
    phase = str(st.get("phase") or "")
    return CanaryRow(
        namespace=str(m.get("namespace", "")), name=str(m.get("name", "")),
        target=f"{(spec.get('targetRef') or {}).get('kind', '')}/{(spec.get('targetRef') or {}).get('name', '')}",
        strategy=strategy(spec), phase=phase or "—", phase_class=phase_class(phase),
        weight=int(st.get("canaryWeight") or 0), max_weight=int(a.get("maxWeight") or (steps[-1] if steps else 0)),
        iterations=int(st.get("iterations") or 0), failed_checks=int(st.get("failedChecks") or 0),
        threshold=int(a.get("threshold") or 0), last_transition=str(st.get("lastTransitionTime") or ""),
        last_transition_age=age(st.get("lastTransitionTime"), now), message=message,
        judged=str(condition(cd, judged_type).get("reason") or ""))


@dataclass(frozen=True)
class StepRow:
    """One step of the analysis plan and where the rollout is in it."""

    n: int
    label: str  # "weight 20%", "iteration 3", "promote"
    state: str  # done, current, next


def plan(cd: Obj) -> list[StepRow]:
    """The analysis steps Flagger will walk: the weights of a canary (``stepWeights`` or ``stepWeight`` up to
    ``maxWeight``), the iterations of A/B and blue/green, then promotion; each marked done/current/next from
    the status."""
    spec, st = cd.get("spec") or {}, cd.get("status") or {}
    a = spec.get("analysis") or {}
    phase = str(st.get("phase") or "")
    weight = int(st.get("canaryWeight") or 0)
    labels: list[str] = []
    pos = 0  # how many steps are done
    if a.get("match") or a.get("iterations"):
        n = min(int(a.get("iterations") or 0), 1000)
        labels = [f"iteration {i}" for i in range(1, n + 1)]
        pos = int(st.get("iterations") or 0)
    else:
        weights = [int(w) for w in a.get("stepWeights") or [] if isinstance(w, int | float)]
        if not weights:
            step, top = int(a.get("stepWeight") or 0), int(a.get("maxWeight") or 50)
            weights = list(range(step, top + 1, step))[:1000] if step > 0 else []
            if weights and weights[-1] < top:
                weights.append(top)
        labels = [f"weight {w}%" for w in weights]
        pos = sum(1 for w in weights if w < weight)
        if weight and weight in weights:
            pos = weights.index(weight)
    labels.append("promote")
    finished = phase in ("Promoting", "Finalising", "Succeeded")
    out = []
    for i, label in enumerate(labels):
        if finished:
            state = "done" if phase == "Succeeded" or i < len(labels) - 1 else "current"
        elif phase in ("Progressing", "Waiting", "WaitingPromotion"):
            state = "done" if i < pos else ("current" if i == pos else "next")
        else:
            state = "next"
        out.append(StepRow(i + 1, label, state))
    return out


@dataclass(frozen=True)
class MetricRow:
    """A metric check of the analysis, with the latest failure Flagger reported for it."""

    name: str
    source: str  # built-in, or the MetricTemplate's namespace/name
    threshold: str  # "min 99", "max 500", "min 0 · max 10"
    interval: str
    last_failure: str
    judged: bool


def metric_rows(cd: Obj, events: list[Obj]) -> list[MetricRow]:
    """The Canary's ``analysis.metrics`` with their thresholds and the last Warning Event naming each."""
    a = (cd.get("spec") or {}).get("analysis") or {}
    ns = str(meta(cd).get("namespace", ""))
    out = []
    for mt in a.get("metrics") or []:
        name = str(mt.get("name", ""))
        ref = mt.get("templateRef") or {}
        tr = mt.get("thresholdRange") or {}
        bounds = " · ".join(f"{k} {tr[k]}" for k in ("min", "max") if tr.get(k) is not None)
        if not bounds and mt.get("threshold") is not None:
            bounds = f"min {mt['threshold']}" if name == "request-success-rate" else f"max {mt['threshold']}"
        fails = [e for e in events if e.get("type") == "Warning" and name and name in str(e.get("message", ""))]
        out.append(MetricRow(
            name=name,
            source=f"template {ref.get('namespace') or ns}/{ref.get('name')}" if ref.get("name") else
            ("built-in (Istio metrics)" if name in ("request-success-rate", "request-duration") else "inline query"),
            threshold=bounds or "—", interval=str(mt.get("interval") or a.get("interval") or "1m"),
            last_failure=str(fails[-1].get("message", "")) if fails else "",
            judged="judge" in str(fails[-1].get("message", "")).lower() if fails else False))
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _explain(m: Obj) -> str:
    """One verdict in words: what was compared and why it got its classification."""
    cls = str(m.get("classification", ""))
    c, b = m.get("canary") or {}, m.get("baseline") or {}
    sizes = f"{c.get('count', 0)} canary vs {b.get('count', 0)} primary samples"
    if cls in ("Nodata", "NodataFailMetric", "Error"):
        return f"{sizes}: {m.get('reason', '')}"
    ci = f"[{_fmt(m.get('lower'))}, {_fmt(m.get('upper'))}]"
    return (f"{sizes}; canary − primary: estimate {_fmt(m.get('estimate'))}, 98% interval {ci}; mean ratio "
            f"{_fmt(m.get('ratio'))}; effect size {_fmt(m.get('effectSize'))}. {m.get('reason', '')}").strip()


def verdicts(judgement: Obj | None) -> list[dict[str, Any]]:
    """The judge's last result per judged metric: score, classification, group scores and each verdict
    with its numbers and an explanation."""
    if not judgement:
        return []
    out = []
    for name, r in sorted((judgement.get("metrics") or {}).items()):
        if not isinstance(r, dict):
            continue
        rows = [{"name": str(m.get("name", "")), "group": str(m.get("group", "")),
                 "classification": str(m.get("classification", "")), "critical": bool(m.get("critical")),
                 "direction": str(m.get("direction", "")), "explain": _explain(m)}
                for m in r.get("metrics") or [] if isinstance(m, dict)]
        cls = "Nodata" if r.get("inconclusive") else str(r.get("classification", ""))
        out.append({"name": str(name), "score": r.get("score"), "classification": cls,
                    "reason": str(r.get("reason", "")), "groups": r.get("groups") or {}, "metrics": rows})
    return out


def change_rows(events: list[Any]) -> list[dict[str, str]]:
    """Change events (oldest first) as rows: time, phase, weight, summary."""
    out = []
    for e in events:
        d = e.details or {}
        out.append({"time": datetime.fromtimestamp(e.ts_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
                    "kind": e.kind, "phase": str(d.get("phase", "")),
                    "weight": "" if d.get("canaryWeight") is None else str(d["canaryWeight"]),
                    "summary": e.summary, "who": e.who or e.source})
    return out


def canary_charts(cd: Obj, tr: TimeRange) -> list[dict[str, str]]:
    """Chart sources (``/ui/api/chart``): the weights set over time (Flagger's ``flagger_canary_weight``), then
    over the mesh's Istio metrics the share of requests the canary served (the weight as the traffic saw it),
    success rate and p99 latency, canary against primary, with the queries Flagger's built-in checks use."""
    spec = cd.get("spec") or {}
    ns = quote(str(meta(cd).get("namespace", "")))
    target = str((spec.get("targetRef") or {}).get("name", ""))
    canary, primary = quote(target), quote(target + "-primary")

    def sel(w: str) -> str:
        return f'reporter="destination",destination_workload_namespace="{ns}",destination_workload="{w}"'

    def rate(w: str, extra: str = "") -> str:
        return f"sum(rate(istio_requests_total{{{sel(w)}{extra}}}[1m]))"

    ok = ',response_code!~"5.*"'
    share = f"100 * {rate(canary)} / (({rate(canary)} or vector(0)) + ({rate(primary)} or vector(0)))"
    weight = 'flagger_canary_weight{{namespace="{ns}",workload="{w}"}}'
    charts = [("Weight set (%)", [(weight.format(ns=ns, w=w), label)
                                  for w, label in ((canary, "canary"), (primary, "primary"))]),
              ("Canary share of requests (%)", [(share, "canary")])]
    charts.append(("Request success rate (%)", [
        (f"100 * {rate(w, ok)} / {rate(w)}", label)
        for w, label in ((canary, "canary"), (primary, "primary"))]))
    charts.append(("p99 latency (ms)", [
        (f"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{sel(w)}}}[1m])))",
         label) for w, label in ((canary, "canary"), (primary, "primary"))]))
    out = []
    for title, qs in charts:
        pairs: list[tuple[str, str]] = []
        for expr, legend in qs:
            pairs += [("expr", expr), ("legend", legend)]
        out.append({"title": title, "src": "/ui/api/chart?" + urlencode([*pairs, *tr.params().items()]),
                    "query": qs[0][0]})
    return out


@dataclass(frozen=True)
class ABTestForm:
    """The A/B page's form as submitted (to fill it in again): the single fields and the per-variant rows,
    padded with empty rows to at least ``MIN_ROWS`` plus one; ``submitted`` when any field has a value."""

    fields: dict[str, str]
    rows: list[tuple[str, str, str]]
    submitted: bool

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name) or default


AB_MIN_ROWS = 2


def abtest_form(pairs: list[tuple[str, str]]) -> ABTestForm:
    """The A/B form's state from the query string (the fields the releases pillar reads)."""
    fields = {k: v for k, v in pairs if k in ABTEST_FIELDS}
    cols = {k: [v for kk, v in pairs if kk == k] for k in ABTEST_ROW_KEYS}
    n = max(len(c) for c in cols.values())
    rows = [tuple(cols[k][i] if i < len(cols[k]) else "" for k in ABTEST_ROW_KEYS) for i in range(n)]
    filled = [(r[0], r[1], r[2]) for r in rows if any(r)]
    padded = filled + [("", "", "")] * max(1, AB_MIN_ROWS - len(filled))
    return ABTestForm(fields, padded, any(v.strip() for v in fields.values()) or bool(filled))


def abtest_pairs(spec: Obj) -> list[tuple[str, str]]:
    """A saved experiment's ``spec`` as the A/B form's parameters (to fill it in and run it)."""
    pairs = [(k, str(v)) for k, v in spec.items() if k in ABTEST_FIELDS and k != "variants" and v is not None]
    for row in spec.get("variants") or []:
        if isinstance(row, dict):
            pairs += [("variant", str(row.get("name", ""))), ("successes", str(row.get("successes", ""))),
                      ("trials", str(row.get("trials", "")))]
    return pairs


def abtest_rows(objs: list[Obj]) -> list[dict[str, str]]:
    """The saved experiments' list: namespace, name, what they compare, the window."""
    rows = []
    for o in objs:
        spec = o.get("spec") or {}
        variants = [str(v.get("name", "")) for v in spec.get("variants") or [] if isinstance(v, dict)]
        what = ", ".join(variants) if variants else f"split by {spec.get('by') or 'variant'}"
        rows.append({"namespace": str(meta(o).get("namespace", "")), "name": str(meta(o).get("name", "")),
                     "variants": what, "control": str(spec.get("control") or ""),
                     "window": str(spec.get("window") or "")})
    return sorted(rows, key=lambda r: (r["namespace"], r["name"]))
