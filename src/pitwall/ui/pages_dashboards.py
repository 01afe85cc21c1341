"""Dashboards: list, view (panels load as htmx fragments), edit as YAML, Grafana import."""

from __future__ import annotations

import shlex
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import MultiDict

from pitwall.core.body import read_form
from pitwall.core.errors import BadData, NotFound, PitwallError
from pitwall.core.params import tenant_of
from pitwall.ui.dashboards import Dashboard, Panel, from_grafana, substitute, to_yaml, variable_query
from pitwall.ui.pages_signals import trace_filter
from pitwall.ui.queries import legend_name, query_error
from pitwall.ui.timerange import TimeRange
from pitwall.ui.web import Pages, call

__all__ = ["add_routes", "trace_params"]

_TRACE_KEYS = {"service", "operation", "status", "min_duration", "max_duration"}


def trace_params(query: str) -> MultiDict:
    """A traces panel query (``service=x status=error min_duration=100ms http.route=/a``) as search params."""
    items: list[tuple[str, str]] = []
    try:
        terms = shlex.split(query)
    except ValueError as e:
        raise BadData(f"invalid traces query: {e}") from None
    for term in terms:
        key = term.split("=", 1)[0].rstrip("!<>") if any(op in term for op in "=<>") else ""
        if key in _TRACE_KEYS and "=" in term:
            items.append((key, term.split("=", 1)[1]))
        elif key:
            items.append(("attr", term))
        else:
            raise BadData(f"invalid traces query term {term[:64]!r}: expected key=value")
    return MultiDict(items)


async def _variables(pages: Pages, d: Dashboard, request: Request, tr: TimeRange) -> list[dict[str, Any]]:
    out = []
    for v in d.variables:
        try:
            selector, label = variable_query(v)
            values = await call(pages.deps.metrics.label_values, label, selector, tr, tenant_of(request))
            problem = ""
        except PitwallError as e:
            values, problem = [], e.message
        chosen = request.query_params.get(f"var-{v.name}") or v.default or (values[0] if values else "")
        out.append({"name": v.name, "label": v.label or v.name, "options": values, "value": chosen,
                    "problem": problem})
    return out


def _gauge_arc(value: float, lo: float, hi: float) -> str:
    import math

    frac = 0.0 if hi <= lo else max(0.0, min(1.0, (value - lo) / (hi - lo)))
    a = math.pi * (1 - frac)
    x, y = 60 + 50 * math.cos(a), 60 - 50 * math.sin(a)
    return f"M10 60 A50 50 0 0 1 {x:.1f} {y:.1f}"


def add_routes(r: APIRouter, pages: Pages) -> None:
    deps = pages.deps

    @r.get("/dashboards", response_class=HTMLResponse)
    async def dashboards(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        entries = await call(deps.dashboards.list, tenant_of(request))
        return pages.render(request, "dashboards.html", "dashboards", tr, error=err, entries=entries,
                            folder=deps.settings.dashboards_dir)

    @r.get("/dashboards/import", response_class=HTMLResponse)
    async def import_form(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        return pages.render(request, "dashboard_import.html", "dashboards", tr, error=err, text="", problem="",
                            skipped=[])

    @r.post("/dashboards/import", response_class=HTMLResponse)
    async def import_post(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        form = await read_form(request)
        text = str(form.get("json", ""))
        tenant = tenant_of(request)
        try:
            d, skipped = from_grafana(text)
            uid = await call(deps.dashboards.new_uid, d.title, tenant)
            await call(deps.dashboards.save, uid, to_yaml(d), tenant)
        except PitwallError as e:
            return pages.render(request, "dashboard_import.html", "dashboards", tr, error=err, text=text,
                                problem=e.message, skipped=[], status=400)
        if skipped:
            return pages.render(request, "dashboard_import.html", "dashboards", tr, error=err, text="",
                                problem="", skipped=skipped, imported=uid)
        return RedirectResponse(f"/dashboards/{uid}?{tr.qs()}", 303)

    @r.get("/dashboards/new", response_class=HTMLResponse)
    async def new(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        text = "title: New dashboard\nrows:\n  - title: Row\n    panels:\n      - title: Up\n        type: stat\n" \
               "        datasource: prometheus\n        query: sum(up)\n"
        return pages.render(request, "dashboard_edit.html", "dashboards", tr, error=err, uid="", text=text,
                            problem="", source="new")

    @r.get("/dashboards/{uid}", response_class=HTMLResponse)
    async def view(uid: str, request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        try:
            entry = await call(deps.dashboards.get, uid, tenant_of(request))
        except PitwallError as e:
            return pages.render(request, "dashboards.html", "dashboards", tr, error=e.message, entries=[],
                                folder=deps.settings.dashboards_dir, status=404)
        if "from" not in request.query_params and entry.dashboard.time:
            tr = TimeRange.parse(f"now-{entry.dashboard.time}", "now", request.query_params.get("refresh")
                                 or entry.dashboard.refresh or None)
        variables = await _variables(pages, entry.dashboard, request, tr)
        var_qs = urlencode([(f"var-{v['name']}", v["value"]) for v in variables])
        return pages.render(request, "dashboard.html", "dashboards", tr, error=err, entry=entry,
                            variables=variables, var_qs=var_qs)

    @r.get("/dashboards/{uid}/edit", response_class=HTMLResponse)
    async def edit(uid: str, request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        try:
            entry = await call(deps.dashboards.get, uid, tenant_of(request))
        except NotFound as e:
            return pages.render(request, "dashboards.html", "dashboards", tr, error=e.message, entries=[],
                                folder=deps.settings.dashboards_dir, status=404)
        return pages.render(request, "dashboard_edit.html", "dashboards", tr, error=err, uid=uid, text=entry.yaml,
                            problem="", source=entry.source)

    @r.post("/dashboards/{uid}/edit", response_class=HTMLResponse)
    async def save(uid: str, request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        form = await read_form(request)
        text = str(form.get("yaml", ""))
        tenant = tenant_of(request)
        try:
            if uid == "_new":
                from pitwall.ui.dashboards import parse_dashboard

                uid = await call(deps.dashboards.new_uid, parse_dashboard(text).title, tenant)
            await call(deps.dashboards.save, uid, text, tenant)
        except PitwallError as e:
            return pages.render(request, "dashboard_edit.html", "dashboards", tr, error=err, uid=uid, text=text,
                                problem=e.message, source="", status=400)
        return RedirectResponse(f"/dashboards/{uid}?{tr.qs()}", 303)

    @r.post("/dashboards/{uid}/delete")
    async def delete(uid: str, request: Request) -> Response:
        await call(deps.dashboards.delete, uid, tenant_of(request))
        return RedirectResponse("/dashboards", 303)

    @r.get("/ui/panel/{uid}/{row}/{index}", response_class=HTMLResponse)
    async def panel(uid: str, row: int, index: int, request: Request) -> Response:
        tr, _ = pages.range_or_error(request)
        tenant = tenant_of(request)
        ctx: dict[str, Any] = {"problem": "", "panel": None}
        try:
            entry = await call(deps.dashboards.get, uid, tenant)
            p: Panel = entry.dashboard.rows[row].panels[index]
        except (PitwallError, IndexError):
            return pages.render(request, "_panel.html", "dashboards", tr, problem="no such panel", panel=None)
        values = {k.removeprefix("var-"): v for k, v in request.query_params.items() if k.startswith("var-")}
        query = substitute(p.query, values)
        ctx.update(panel=p, query=query)
        try:
            if p.datasource == "prometheus":
                if p.type in ("stat", "gauge"):
                    vec = await call(deps.metrics.vector, query, tr.end_ms, tenant)
                    vals = [(lb, v) for lb, v in vec]
                    ctx["stats"] = [{"name": legend_name(p.legend, dict(lb)) if p.legend else _name(lb), "value": v,
                                     "color": p.color_of(v),
                                     "arc": _gauge_arc(v, p.min if p.min is not None else 0.0,
                                                       p.max if p.max is not None else _auto_max(v, p.unit))}
                                    for lb, v in vals[:12]]
                elif p.type == "table":
                    ctx["table"] = await call(deps.metrics.table, query, tr.end_ms, tenant)
                else:
                    ctx["chart_src"] = "/ui/api/chart?" + urlencode({"expr": query, **_legend(p), **tr.params()})
            elif p.datasource == "loki":
                if deps.logs is None:
                    raise BadData("the logs pillar is not available")
                if p.type == "logs":
                    res = await call(deps.logs.run, query, tr, p.limit or 50, 100, tenant)
                    ctx["lines"] = res.lines
                else:
                    ctx["chart_src"] = "/ui/api/logs/chart?" + urlencode({"query": query, "mode": "metric",
                                                                         **_legend(p), **tr.params()})
            else:
                if deps.traces is None:
                    raise BadData("the traces pillar is not available")
                f = trace_filter(trace_params(query), tr.start_ms, tr.end_ms)
                ctx["traces"] = await call(deps.traces.search, tenant, f, p.limit or 20)
        except PitwallError as e:
            ctx["problem"] = query_error(e).message
        return pages.render(request, "_panel.html", "dashboards", tr, **ctx)


def _legend(p: Panel) -> dict[str, str]:
    return {"legend": p.legend} if p.legend else {}


def _name(labels: Any) -> str:
    parts = [f"{k}={v}" for k, v in labels if k != "__name__"]
    return ", ".join(parts) or "value"


def _auto_max(v: float, unit: str) -> float:
    if unit in ("percent", "%"):
        return 100.0
    if unit in ("percentunit", "ratio"):
        return 1.0
    return max(abs(v) * 1.25, 1.0)
