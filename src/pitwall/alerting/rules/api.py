"""``/api/v1/rules`` and ``/api/v1/alerts`` in Prometheus' shapes and error format."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request

from pitwall.alerting.rules.alerting_rule import ActiveAlert, AlertingRule
from pitwall.alerting.rules.group import Group, Rule
from pitwall.alerting.rules.manager import RuleManager
from pitwall.core.errors import BadData
from pitwall.core.gofmt import format_float
from pitwall.core.http_errors import error_router

__all__ = ["rules_router"]


def rfc3339(ms: int) -> str:
    """Go's time.Time JSON (RFC 3339 with trimmed nanoseconds), zero time for 0."""
    if ms <= 0:
        return "0001-01-01T00:00:00Z"
    secs, frac = divmod(ms, 1000)
    base = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return base + (f".{frac:03d}".rstrip("0") if frac else "") + "Z"


def _secs(ms: int) -> int | float:
    """Seconds as Go's JSON prints a float64: ``60``, not ``60.0``."""
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def _alert_json(a: ActiveAlert) -> dict[str, Any]:
    out: dict[str, Any] = {
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "state": a.state.value,
        "activeAt": rfc3339(a.active_at_ms),
        "value": format_float(a.value, "e", -1),
    }
    if a.keep_firing_since_ms:
        out["keepFiringSince"] = rfc3339(a.keep_firing_since_ms)
    return out


def _rule_json(r: Rule, exclude_alerts: bool) -> dict[str, Any]:
    common = {"name": r.name, "query": r.expr, "labels": dict(r.labels), "health": r.health.value}
    if r.last_error:
        common["lastError"] = r.last_error
    timing = {"evaluationTime": r.evaluation_seconds, "lastEvaluation": rfc3339(r.last_evaluation_ms)}
    if isinstance(r, AlertingRule):
        out: dict[str, Any] = {"state": r.state().value, **common, "duration": _secs(r.hold_ms),
                               "keepFiringFor": _secs(r.keep_firing_for_ms), "annotations": dict(r.annotations)}
        if not exclude_alerts:
            out["alerts"] = [_alert_json(a) for a in r.active_alerts()]
        return {**out, **timing, "type": "alerting"}
    return {**common, **timing, "type": "recording"}


def _filters(request: Request) -> tuple[str, set[str], set[str], set[str], bool]:
    q = request.query_params
    typ = q.get("type", "").lower()
    if typ not in ("", "alert", "record"):
        raise BadData(f'invalid parameter "type": not supported value "{typ}"')
    exclude = q.get("exclude_alerts", "false").lower()
    if exclude not in ("true", "false", "1", "0"):
        raise BadData(f'invalid parameter "exclude_alerts": strconv.ParseBool: parsing "{exclude}": invalid syntax')
    return (typ, set(q.getlist("rule_name[]")), set(q.getlist("rule_group[]")), set(q.getlist("file[]")),
            exclude in ("true", "1"))


def _group_json(g: Group, typ: str, names: set[str], exclude_alerts: bool) -> dict[str, Any]:
    rules = []
    for r in g.rules:
        if typ == "alert" and not isinstance(r, AlertingRule):
            continue
        if typ == "record" and isinstance(r, AlertingRule):
            continue
        if names and r.name not in names:
            continue
        rules.append(_rule_json(r, exclude_alerts))
    return {"name": g.name, "file": g.file, "rules": rules, "interval": _secs(g.interval_ms),
            "limit": g.limit, "evaluationTime": g.evaluation_seconds,
            "lastEvaluation": rfc3339(g.last_evaluation_ms)}


def rules_router(manager: Callable[[], RuleManager | None]) -> APIRouter:
    """Routes over the (possibly replaced) rule manager returned by ``manager``."""
    r = error_router("prometheus", tags=["rules"])

    @r.get("/api/v1/rules")
    async def rules(request: Request) -> dict[str, Any]:
        typ, names, groups, files, exclude = _filters(request)
        mgr = manager()
        out = []
        filtered = bool(typ or names or groups or files)
        for g in mgr.rule_groups() if mgr else []:
            if (groups and g.name not in groups) or (files and g.file not in files):
                continue
            gj = _group_json(g, typ, names, exclude)
            if gj["rules"] or not filtered:
                out.append(gj)
        return {"status": "success", "data": {"groups": out}}

    @r.get("/api/v1/alerts")
    async def alerts() -> dict[str, Any]:
        mgr = manager()
        out = [_alert_json(a) for g in (mgr.rule_groups() if mgr else []) for rule in g.rules
               if isinstance(rule, AlertingRule) for a in rule.active_alerts()]
        return {"status": "success", "data": {"alerts": out}}

    return r
