"""The SLO pages: ``/slos`` (every SLO with objective, window, remaining budget, burn rate now) and
``/slos/{namespace}/{name}`` (one SLO by its PrometheusServiceLevel's namespace and its sloth id:
budget burn-down and burn-rate charts over the period, the arithmetic, its alerts, the incidents
on its service). ``?calendar=month|week`` judges the budgets over the calendar period so far (UTC, weeks
from Monday) instead of each SLO's rolling period, as the budget API's ``calendar`` parameter does.

They read ``UIDeps.slos`` (an ``SLOSource``, the budget API's service); without one they say the
SLO capability is not available. SLOs are Kubernetes objects of the whole server, so the pages
are server-wide as the workloads pages are.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from pitwall.core.durations import parse_duration_ms
from pitwall.core.errors import NotFound, PitwallError
from pitwall.core.tenancy import server_wide as whole_server
from pitwall.ui.incidents_view import incident_row
from pitwall.ui.slo_view import (
    MAX_INCIDENT_BUDGETS,
    SLOSource,
    budget_chart,
    burn_rate_chart,
    incident_window,
    service_incidents,
    slo_alerts,
    slo_row,
)
from pitwall.ui.timerange import TimeRange
from pitwall.ui.web import Pages, call

__all__ = ["add_routes"]


def add_routes(r: APIRouter, pages: Pages) -> None:
    deps = pages.deps
    server_wide = [Depends(whole_server)]

    @r.get("/slos", response_class=HTMLResponse, dependencies=server_wide)
    async def slos(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        if deps.slos is None:
            return pages.render(request, "slos.html", "slos", tr, error=err, available=False)
        calendar = request.query_params.get("calendar", "")
        try:
            rows = [slo_row(s) for s in await deps.slos.list(calendar)]
        except PitwallError as e:
            return pages.render(request, "slos.html", "slos", tr, error=e.message, available=True, rows=[],
                                calendar=calendar, status=400)
        return pages.render(request, "slos.html", "slos", tr, error=err, available=True, rows=rows, calendar=calendar)

    @r.get("/slos/{namespace}/{name}", response_class=HTMLResponse, dependencies=server_wide)
    async def slo(namespace: str, name: str, request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        calendar = request.query_params.get("calendar", "")
        ctx: dict[str, Any] = {"namespace": namespace, "name": name, "calendar": calendar}
        if deps.slos is None:
            return pages.render(request, "slo.html", "slos", tr, error=err, available=False, **ctx)
        try:
            st = await deps.slos.slo_status(name, calendar)
            if slo_row(st).namespace != namespace:
                raise NotFound(f"SLO {name!r} not found in namespace {namespace!r}")
        except NotFound as e:
            return pages.render(request, "slo.html", "slos", tr, error=e.message, available=True, st=None,
                                status=404, **ctx)
        except PitwallError as e:
            return pages.render(request, "slo.html", "slos", tr, error=e.message, available=True, st=None,
                                status=400, **ctx)
        row = slo_row(st)
        tr, err = _period_range(request, st.period, pages.deps.settings.default_range)
        rules: list[Any] | None = None
        alerts: list[Any] = []
        if deps.alerts is not None:
            rules, alerts = slo_alerts(st.name, await call(deps.alerts.rule_list),
                                       [*await call(deps.alerts.firing), *await call(deps.alerts.pending)])
        incidents = None
        if deps.incidents is not None:
            span_ms = max(0, st.at_ms - _period_ms(st.period))
            found = service_incidents(await deps.incidents.incidents((), "", 1000), st.service, span_ms, st.at_ms)
            incidents = [(incident_row(i), await _budget_use(deps.slos, st.name, i, span_ms, st.at_ms)
                          if n < MAX_INCIDENT_BUDGETS else None) for n, i in enumerate(found)]
        return pages.render(request, "slo.html", "slos", tr, error=err, available=True, st=st, row=row,
                            charts=[budget_chart(st, tr.params()), burn_rate_chart(st, tr.params())], rules=rules, alerts=alerts,
                            incidents=incidents, **ctx)


async def _budget_use(slos: SLOSource, name: str, incident: Any, start_ms: int, end_ms: int) -> Any:
    """The share of SLO ``name``'s budget ``incident`` spent in the period, or None when it cannot be told."""
    a, b = incident_window(incident, start_ms, end_ms)
    if b <= a:
        return None
    try:
        return await slos.consumed(name, a, b)
    except PitwallError:
        return None


def _period_range(request: Request, period: str, default: str) -> tuple[TimeRange, str]:
    """The picker's range, by default the SLO's whole period up to now (the window its budget covers)."""
    p = request.query_params
    try:
        return TimeRange.parse(p.get("from") or f"now-{period}", p.get("to"), p.get("refresh"), default), ""
    except PitwallError as e:
        return TimeRange.parse(None, None, None, default), e.message


def _period_ms(period: str) -> int:
    try:
        return parse_duration_ms(period)
    except (ValueError, PitwallError):
        return 0
