"""OpenSLO v1 (``openslo/v1``) -> ``SLOGroup``: SLO with an inline or referenced SLI
(``ratioMetric`` good/total or bad/total, ``thresholdMetric``), objectives, a rolling
``timeWindow``, and AlertPolicy/AlertCondition (inline or by reference) mapped to
Sloth's page and ticket alerts.

Mapping (Sloth itself reads only ``openslo/v1alpha``; this follows the same shape):
- each objective is one SLO named ``<metadata.name>-<index>``, objective
  ``target`` (ratio) or ``targetPercent``;
- ``ratioMetric`` good/total -> Sloth's raw ratio ``1 - (good/total)``;
  bad/total -> events (error = bad);
- ``thresholdMetric`` -> the fraction of the window the metric breaches the
  objective's ``op``/``value``: ``1 - avg_over_time(((Q) OP bool VALUE)[W:])``
  (the query must not need ``{{.window}}``);
- the metric source must be Prometheus (``metricSource.type: Prometheus``,
  ``spec.query`` holding ``{{.window}}`` for ratio metrics);
- an AlertPolicy's conditions of severity page/critical/high enable the page
  alert, any other severity the ticket alert; the alert is named after the
  policy, with the condition's severity as label ``severity``. The burn-rate
  windows and thresholds come from the windows catalog (Sloth's MWMB
  alerts): a condition's ``threshold``/``lookbackWindow`` are checked for
  type but not used;
- only rolling windows: ``isRolling: false`` (calendar) is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitwall.slo.model import SLI, SLO, AlertMeta, SLOGroup

if TYPE_CHECKING:
    from pitwall.slo.spec import _Node

__all__ = ["openslo_v1"]

_OPS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_PAGE = {"page", "critical", "high"}


def _query(metric: _Node) -> str:
    src = metric.child("metricSource")
    if src.text("type").lower() != "prometheus":
        raise src.fail(f"only Prometheus metric sources are supported, got {src.text('type')!r}", "type")
    q = src.child("spec").text("query")
    if not q:
        raise src.fail("is required", "spec.query")
    return q


def _indicator(node: _Node, refs: dict[str, dict[str, _Node]]) -> _Node:
    spec = node.child("spec")
    if spec.mapping().get("indicator") is not None:
        return spec.child("indicator").child("spec")
    ref = spec.text("indicatorRef")
    if not ref:
        raise spec.fail("indicator or indicatorRef is required")
    target = refs["SLI"].get(ref)
    if target is None:
        raise spec.fail(f"SLI {ref!r} is not defined", "indicatorRef")
    return target.child("spec")


def _sli(ind: _Node, objective: _Node) -> SLI:
    from pitwall.slo.spec import openslo_error_ratio

    if ind.mapping().get("ratioMetric") is not None:
        r = ind.child("ratioMetric")
        total = _query(r.child("total"))
        if r.mapping().get("good") is not None:
            return SLI(error_ratio_query=openslo_error_ratio(_query(r.child("good")), total))
        if r.mapping().get("bad") is not None:
            return SLI(error_query=_query(r.child("bad")), total_query=total)
        raise r.fail("good or bad is required")
    if ind.mapping().get("thresholdMetric") is not None:
        q = _query(ind.child("thresholdMetric"))
        op = objective.text("op")
        if op not in _OPS:
            raise objective.fail(f"must be one of lt, lte, gt, gte for a thresholdMetric, got {op!r}", "op")
        value = objective.number("value")
        return SLI(error_ratio_query=f"1 - avg_over_time((({q}) {_OPS[op]} bool {value!r})[{{{{.window}}}}:])")
    raise ind.fail("ratioMetric or thresholdMetric is required")


def _alerts(spec: _Node, refs: dict[str, dict[str, _Node]]) -> tuple[AlertMeta, AlertMeta]:
    page, ticket = AlertMeta(), AlertMeta()
    for p in spec.child("alertPolicies").items():
        policy = p
        if p.mapping().get("alertPolicyRef") is not None:
            name = p.text("alertPolicyRef")
            found = refs["AlertPolicy"].get(name)
            if found is None:
                raise p.fail(f"AlertPolicy {name!r} is not defined", "alertPolicyRef")
            policy = found
        pname = policy.child("metadata").text("name")
        for c in policy.child("spec").child("conditions").items():
            cond = c
            if c.mapping().get("conditionRef") is not None:
                ref = c.text("conditionRef")
                found = refs["AlertCondition"].get(ref)
                if found is None:
                    raise c.fail(f"AlertCondition {ref!r} is not defined", "conditionRef")
                cond = found
            cspec = cond.child("spec")
            sev = cspec.text("severity")
            if not sev:
                raise cspec.fail("is required", "severity")
            cspec.child("condition").number("threshold")
            meta = AlertMeta(disable=False, name=pname, labels={"severity": sev},
                             annotations={"description": cspec.text("description")}
                             if cspec.text("description") else {})
            if sev.lower() in _PAGE:
                page = meta
            else:
                ticket = meta
    return page, ticket


def openslo_v1(node: _Node, period_ms: int, refs: dict[str, dict[str, _Node]]) -> SLOGroup:
    """One ``openslo/v1`` SLO document (references resolved through ``refs``)."""
    from pitwall.slo.spec import SPEC_OPENSLO_V1, period_of

    spec = node.child("spec")
    name, service = node.child("metadata").text("name"), spec.text("service")
    tws = spec.child("timeWindow").items()
    if len(tws) > 1:
        raise spec.fail("only 1 time window is supported", "timeWindow")
    if tws:
        if not tws[0].flag("isRolling") and tws[0].mapping().get("calendar") is not None:
            raise tws[0].fail("calendar windows are not supported; use isRolling: true", "isRolling")
        period_ms = period_of(tws[0].text("duration"), tws[0], "duration")
    ind = _indicator(node, refs)
    page, ticket = _alerts(spec, refs)
    objectives = spec.child("objectives").items()
    if not objectives:
        raise spec.fail("at least one objective is required", "objectives")
    slos = []
    for idx, o in enumerate(objectives):
        if o.mapping().get("target") is not None:
            objective = o.number("target") * 100
        elif o.mapping().get("targetPercent") is not None:
            objective = o.number("targetPercent")
        else:
            raise o.fail("target or targetPercent is required")
        slo_name = f"{name}-{idx}"
        slos.append(SLO(id=f"{service}-{slo_name}", name=slo_name, service=service, sli=_sli(ind, o),
                        period_ms=period_ms, objective=objective, description=spec.text("description"),
                        page=page, ticket=ticket))
    return SLOGroup(tuple(slos), SPEC_OPENSLO_V1)
