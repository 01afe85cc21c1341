"""Dashboards: list, view (panels load as htmx fragments), edit as YAML, Grafana import."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import MultiDict

from pitwall.core.body import FORM_MAX_BYTES, read_form
from pitwall.core.errors import BadData, BodyTooLarge, NotFound, PitwallError
from pitwall.core.http_errors import status_of
from pitwall.core.params import tenant_of
from pitwall.ui.dashboards import (
    Dashboard,
    Panel,
    Variable,
    VarValue,
    builtin_values,
    relayout,
    substitute,
    to_yaml,
    variable_query,
)
from pitwall.ui.grafana import from_grafana
from pitwall.ui.pages_signals import trace_filter
from pitwall.ui.queries import legend_name, query_error
from pitwall.ui.timerange import TimeRange
from pitwall.ui.web import Pages, call, json_response
from pitwall.ui.web import fmt_num as _fmt_num

__all__ = ["add_routes", "trace_params"]

API = "/api/ui/v1"  # the UI's own JSON API
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


ALL = "$__all"


@dataclass
class ResolvedVariable:
    """A variable's options and current choice on one page view."""

    var: Variable
    options: list[str]
    chosen: list[str]
    problem: str = ""

    def value(self) -> VarValue:
        if ALL in self.chosen:
            return VarValue(tuple(self.options), True, self.var.all_value or None)
        return VarValue(tuple(self.chosen), self.var.multi)

    def view(self) -> dict[str, Any]:
        opts = ([ALL] if self.var.include_all else []) + self.options
        return {"name": self.var.name, "label": self.var.label or self.var.name, "type": self.var.type,
                "options": opts, "value": self.chosen[0] if self.chosen else "", "values": self.chosen,
                "multi": self.var.multi, "hide": self.var.hide, "problem": self.problem}


async def _resolve(pages: Pages, d: Dashboard, request: Request, tr: TimeRange) -> list[ResolvedVariable]:
    """Each variable's options (label values for a query variable, read with the earlier variables
    substituted as Grafana chains them) and the choice in the URL (``var-name``, repeated when multi)."""
    out: list[ResolvedVariable] = []
    values: dict[str, VarValue] = {}
    for v in d.variables:
        problem = ""
        options: list[str] = []
        if v.type == "query":
            try:
                selector, label = variable_query(v)
                selector = substitute(selector, values)
                found = await call(pages.deps.metrics.label_values, label, selector, tr, tenant_of(request))
                options = v.filtered(list(found))[:_MAX_OPTIONS]
            except PitwallError as e:
                problem = e.message
        else:
            options = v.options()[:_MAX_OPTIONS]
        asked = [x for x in request.query_params.getlist(f"var-{v.name}") if x != ""][:_MAX_OPTIONS]
        if v.type == "constant":
            chosen = options[:1]
        elif asked:
            chosen = asked if v.multi or v.type == "textbox" else asked[:1]
            chosen = [ALL] if ALL in chosen and v.include_all else chosen
        elif v.default:
            chosen = [v.default] if v.default != ALL or v.include_all else []
        else:
            chosen = [ALL] if v.include_all else options[:1]
        if v.type == "textbox":
            chosen = chosen[:1] or [""]
        r = ResolvedVariable(v, options, chosen, problem)
        values[v.name] = r.value()
        out.append(r)
    return out


def _values(resolved: list[ResolvedVariable], tr: TimeRange) -> dict[str, VarValue]:
    values = builtin_values(tr.span_ms)
    values.update({r.var.name: r.value() for r in resolved})
    return values


_MAX_OPTIONS = 1000


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
        text = str(form.get("json", "") or "")  # a chosen file is read into the text box by pitwall.js
        try:
            uid, warnings = await _import(text, tenant_of(request))
        except PitwallError as e:
            return pages.render(request, "dashboard_import.html", "dashboards", tr, error=err, text=text,
                                problem=e.message, skipped=[], status=status_of(e))
        if warnings:
            return pages.render(request, "dashboard_import.html", "dashboards", tr, error=err, text="",
                                problem="", skipped=warnings, imported=uid)
        return RedirectResponse(f"/dashboards/{uid}?{tr.qs()}", 303)

    async def _import(text: str, tenant: str) -> tuple[str, list[str]]:
        if len(text) > FORM_MAX_BYTES:
            raise BadData(f"the dashboard is larger than {FORM_MAX_BYTES} bytes")
        imp = from_grafana(text)
        uid = await call(deps.dashboards.new_uid, imp.dashboard.title, tenant)
        await call(deps.dashboards.save, uid, to_yaml(imp.dashboard), tenant)
        return uid, imp.warnings

    @r.post(f"{API}/dashboards/import")
    async def import_api(request: Request) -> Response:
        """Grafana dashboard JSON in the body (or Grafana's ``{"dashboard": ...}`` import payload); answers
        ``{uid, url, title, panels, warnings}`` with 200, or ``{status: error, errorType, error}``."""
        try:
            body = await _read_limited(request)
            uid, warnings = await _import(body, tenant_of(request))
            entry = await call(deps.dashboards.get, uid, tenant_of(request))
        except PitwallError as e:
            return json_response({"status": "error", "errorType": e.kind, "error": e.message}, status_of(e))
        return json_response({"status": "success", "uid": uid, "url": f"/dashboards/{uid}",
                              "title": entry.dashboard.title,
                              "panels": sum(len(row.panels) for row in entry.dashboard.rows),
                              "warnings": warnings})

    @r.get(f"{API}/dashboards")
    async def list_api(request: Request) -> Response:
        entries = await call(deps.dashboards.list, tenant_of(request))
        return json_response({"status": "success", "data": [
            {"uid": e.uid, "title": e.dashboard.title, "source": e.source,
             "file": e.path.name if e.path else None, "problems": e.problems,
             "panels": sum(len(row.panels) for row in e.dashboard.rows)} for e in entries]})

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
        resolved = await _resolve(pages, entry.dashboard, request, tr)
        var_qs = urlencode([(f"var-{r.var.name}", x) for r in resolved for x in r.chosen])
        return pages.render(request, "dashboard.html", "dashboards", tr, error=err, entry=entry,
                            variables=[r.view() for r in resolved], var_qs=var_qs)

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

    @r.post("/dashboards/{uid}/layout")
    async def save_layout(uid: str, request: Request) -> Response:
        """The grid editor's arrangement (form field ``layout``: JSON, see ``dashboards.relayout``), saved as
        the dashboard's YAML (a provisioned dashboard gets a saved copy, as an edit does)."""
        tr, _ = pages.range_or_error(request)
        form = await read_form(request)
        tenant = tenant_of(request)
        entry = await call(deps.dashboards.get, uid, tenant)
        try:
            layout = json.loads(str(form.get("layout", "")))
        except ValueError:
            raise BadData("layout: not a JSON document") from None
        d = relayout(entry.dashboard, layout)
        await call(deps.dashboards.save, uid, to_yaml(d), tenant)
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
        values = _values(await _resolve(pages, entry.dashboard, request, tr), tr)
        queries = [(substitute(q.query, values), q.legend) for q in p.all_queries()]
        ctx.update(panel=p, query="\n".join(q for q, _ in queries), unit=unit_label(p.unit))
        try:
            if p.datasource == "prometheus":
                await _prometheus_panel(pages, p, queries, tr, tenant, ctx)
            elif p.datasource == "loki":
                if deps.logs is None:
                    raise BadData("the logs pillar is not available")
                if p.type == "logs":
                    res = await call(deps.logs.run, queries[0][0], tr, p.limit or 50, 100, tenant)
                    ctx["lines"] = res.lines
                else:
                    ctx["chart_src"] = "/ui/api/logs/chart?" + urlencode(
                        [("mode", "metric"), *_pairs("query", queries), *tr.params().items()])
            else:
                if deps.traces is None:
                    raise BadData("the traces pillar is not available")
                f = trace_filter(trace_params(queries[0][0]), tr.start_ms, tr.end_ms)
                ctx["traces"] = await call(deps.traces.search, tenant, f, p.limit or 20)
        except PitwallError as e:
            ctx["problem"] = query_error(e).message
        return pages.render(request, "_panel.html", "dashboards", tr, **ctx)


async def _prometheus_panel(pages: Pages, p: Panel, queries: list[tuple[str, str]], tr: TimeRange, tenant: str,
                            ctx: dict[str, Any]) -> None:
    deps = pages.deps
    if p.type in ("stat", "gauge", "bargauge"):
        stats: list[dict[str, Any]] = []
        for query, legend in queries:
            for lb, v in await call(deps.metrics.vector, query, tr.end_ms, tenant):
                shown = v * 100 if p.unit == "percentunit" else v
                lo = p.min if p.min is not None else 0.0
                hi = p.max if p.max is not None else _auto_max(v, p.unit)
                stats.append({"name": legend_name(legend, dict(lb)) if legend else _name(lb),
                              "value": v, "text": _fmt_value(shown, p.decimals), "color": p.color_of(v),
                              "arc": _gauge_arc(v, lo, hi),
                              "pct": 0.0 if hi <= lo else max(0.0, min(100.0, (v - lo) / (hi - lo) * 100))})
        if p.type == "bargauge" and p.max is None and stats:
            # bars share one scale, as Grafana's bar gauge: up to the largest value shown
            lo = p.min if p.min is not None else 0.0
            hi = max(s["value"] for s in stats)
            for s in stats:
                s["pct"] = 0.0 if hi <= lo else max(0.0, min(100.0, (s["value"] - lo) / (hi - lo) * 100))
        ctx["stats"] = stats[:24]
    elif p.type == "table":
        table = None
        for query, _ in queries:
            one = await call(deps.metrics.table, query, tr.end_ms, tenant)
            if table is None:
                table = one
            else:
                table.rows.extend(one.rows)
        ctx["table"] = table
    else:
        ctx["chart_src"] = "/ui/api/chart?" + urlencode([*_pairs("expr", queries), *tr.params().items()])


def _pairs(key: str, queries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each query with its legend (an empty legend keeps the series' own names), in order."""
    out: list[tuple[str, str]] = []
    for q, legend in queries:
        out += [(key, q), ("legend", legend)]
    return out


def _fmt_value(v: float, decimals: int | None) -> str:
    if decimals is None:
        return _fmt_num(v)
    return f"{v:,.{decimals}f}"


_UNITS = {"reqps": "req/s", "percent": "%", "percentunit": "%", "s": "s", "ms": "ms", "bytes": "B",
          "decbytes": "B", "bps": "b/s", "Bps": "B/s", "ops": "ops/s", "rps": "req/s", "wps": "writes/s",
          "rpm": "req/min", "dtdurations": "s", "µs": "µs", "ns": "ns", "short": "", "none": ""}


def unit_label(unit: str) -> str:
    """How a unit reads next to a value (Grafana's unit ids shown as their symbols)."""
    return _UNITS.get(unit, unit)


def _name(labels: Any) -> str:
    parts = [f"{k}={v}" for k, v in labels if k != "__name__"]
    return ", ".join(parts) or "value"


def _auto_max(v: float, unit: str) -> float:
    if unit in ("percent", "%"):
        return 100.0
    if unit in ("percentunit", "ratio"):
        return 1.0
    return max(abs(v) * 1.25, 1.0)


async def _read_limited(request: Request) -> str:
    """The request body as text, refused past the form limit (a dashboard is at most a few MB)."""
    size = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > FORM_MAX_BYTES:
            raise BodyTooLarge(f"body exceeds the limit of {FORM_MAX_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")
