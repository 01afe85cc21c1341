"""The web UI router, mounted at ``/`` (the native and compatibility APIs keep their own paths).

Pages: ``/`` overview, ``/graph`` metrics explorer, ``/logs``, ``/traces``
(+ ``/traces/{id}``), ``/services`` (+ ``/services/{name}``), ``/alerts``,
``/dashboards`` (+ view, edit, import), ``/targets``, ``/workloads``
(+ ``/workloads/{namespace}/{kind}/{name}``), ``/incidents`` (+ ``/incidents/{id}``),
``/slos`` (+ ``/slos/{namespace}/{name}``), ``/releases`` (+ ``/releases/{namespace}/{name}``),
``/gateway`` (+ ``/gateway/consumers/{name}``),
``/chaos`` (+ ``/chaos/{namespace}/{kind}/{name}``, ``/chaos/halt``), ``/pipelines`` (+
``/pipelines/{project}/{id}``, ``/pipelines/dora``), ``/backups`` (+ ``/backups/{namespace}/{name}``),
``/status`` (self-monitoring). Fragments and chart data live under ``/ui/``; static files under ``/ui/static/`` (pitwall's own CSS/JS,
and the pinned htmx/uPlot shipped in ``static/vendor/``).
"""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, HTMLResponse

from pitwall.core.errors import BadData, NotFound, PitwallError
from pitwall.core.http_errors import error_router
from pitwall.core.params import tenant_of
from pitwall.core.tenancy import sees_whole_server, server_wide
from pitwall.traces import STATUS_ERROR, SpanFilter
from pitwall.ui import (
    pages_alerts,
    pages_backups,
    pages_chaos,
    pages_config,
    pages_dashboards,
    pages_gateway,
    pages_incidents,
    pages_pipelines,
    pages_releases,
    pages_signals,
    pages_slo,
    pages_status,
    pages_workloads,
)
from pitwall.ui.objects import quote
from pitwall.ui.queries import PROMQL_FUNCTIONS, MetricsView, query_error, service_stats, targets_view
from pitwall.ui.web import HERE, Pages, UIDeps, call, int_param, json_error, json_response

__all__ = ["ui_router"]

STATIC = HERE / "static"
MAX_QUERIES = 10  # queries drawn in one explorer chart


def _static_file(name: str) -> Path:
    p = (STATIC / name).resolve()
    if not p.is_relative_to(STATIC) or not p.is_file():
        raise NotFound(name)
    return p


def ui_router(deps: UIDeps) -> APIRouter:
    """Every page, fragment and static file of the web UI, over ``deps``."""
    pages = Pages(deps)
    # Most pages show their errors themselves; anything else (a tenant the token may not use) as a bare page.
    r = error_router("html", include_in_schema=False)

    @r.get("/ui/static/{name:path}")
    async def static(name: str) -> Response:
        try:
            p = _static_file(name)
        except NotFound as e:
            return Response(e.message, 404, media_type="text/plain")
        ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        return FileResponse(p, media_type=ctype, headers={"Cache-Control": "public, max-age=3600"})

    # ---------------------------------------------------------------- overview

    @r.get("/", response_class=HTMLResponse)
    async def overview(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        tenant = tenant_of(request)
        services: list[str] = []
        if deps.traces is not None:
            services = await call(deps.traces.services, tenant)
        stats: list[Any] = []
        try:
            stats = await call(service_stats, deps.metrics, tr, services, tenant)
        except PitwallError as e:
            err = err or e.message
        alerts = None
        if deps.alerts is not None and sees_whole_server(request):  # alerting serves the whole server
            alerts = await call(deps.alerts.firing, tenant)
        return pages.render(request, "overview.html", "overview", tr, error=err, stats=stats, alerts=alerts,
                            traces_available=deps.traces is not None)

    # ---------------------------------------------------------------- metrics explorer

    @r.get("/graph", response_class=HTMLResponse)
    async def graph(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        p = request.query_params
        exprs = [e.strip() for e in p.getlist("expr") if e.strip()][:MAX_QUERIES]
        expr = exprs[0] if exprs else ""
        qtype = "instant" if p.get("type") == "instant" else "range"
        view = "table" if qtype == "instant" or p.get("view") == "table" else "graph"
        tables: list[Any] = []
        qerr = None
        if exprs and view == "table":
            try:
                for e in exprs:
                    if qtype == "range":
                        tables.append(await call(_range_table, deps.metrics, e, tr, tenant_of(request)))
                    else:
                        tables.append(await call(deps.metrics.table, e, tr.end_ms, tenant_of(request)))
            except PitwallError as e:
                qerr = query_error(e)
        chart_src = "/ui/api/chart?" + urlencode([("expr", e) for e in exprs] + [("from", tr.raw_from),
                                                                                ("to", tr.raw_to)])
        return pages.render(request, "graph.html", "metrics", tr, error=err, expr=expr, more=exprs[1:],
                            qtype=qtype, view=view, stacked=p.get("stacked") == "1",
                            tables=list(zip(exprs, tables, strict=False)), qerr=qerr, chart_src=chart_src)

    @r.get("/ui/api/chart")
    async def chart(request: Request) -> Response:
        """One chart of up to 25 queries (``expr`` repeated, each with its ``legend``: a dashboard panel's)."""
        p = request.query_params
        exprs = [e.strip() for e in p.getlist("expr")][:25]
        legends = p.getlist("legend")
        try:
            tr = pages.time_range(request)
            if not exprs or not all(exprs):
                return json_error(BadData("empty query"))
            points = int_param(request, "points", 600, 10, 4000)
            data = None
            for i, expr in enumerate(exprs):
                one = (await call(deps.metrics.chart, expr, tr, points, tenant_of(request)))
                one.named(legends[i] if i < len(legends) else "", expr)
                data = one if data is None else data.merge(one)
        except PitwallError as e:
            return json_error(e)
        assert data is not None
        return json_response(data.to_json())

    @r.get("/ui/api/complete")
    async def complete(request: Request) -> Response:
        """Completion candidates: ``kind`` = metric (names + functions), label (names), value."""
        p = request.query_params
        kind = p.get("kind", "metric")
        prefix = p.get("prefix", "")
        tenant = tenant_of(request)
        try:
            tr = pages.time_range(request)
            if kind == "label":
                items = await call(deps.metrics.label_names, p.get("metric", ""), tr, tenant)
            elif kind == "value":
                metric = p.get("metric", "")
                items = await call(deps.metrics.label_values, p.get("label", ""), metric, tr, tenant)
            else:
                names = await call(deps.metrics.metric_names, tr, tenant)
                items = [*names, *PROMQL_FUNCTIONS]
        except PitwallError as e:
            return json_error(e)
        low = prefix.lower()
        hits = [i for i in items if i.lower().startswith(low)]
        hits += [i for i in items if low and low in i.lower() and not i.lower().startswith(low)]
        return json_response({"items": hits[:100]})

    # ---------------------------------------------------------------- targets

    @r.get("/targets", response_class=HTMLResponse, dependencies=[Depends(server_wide)])
    async def targets(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        pools = targets_view(deps.targets(), time.time())
        only = request.query_params.get("health", "")
        if only:
            pools = {k: [t for t in v if t.health == only] for k, v in pools.items()}
        return pages.render(request, "targets.html", "targets", tr, error=err, pools=pools, health=only)

    # ---------------------------------------------------------------- service page (RED from span metrics)

    @r.get("/services/{name}", response_class=HTMLResponse)
    async def service(name: str, request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        tenant = tenant_of(request)
        stats = await call(service_stats, deps.metrics, tr, [name], tenant, name)
        ops: list[tuple[str, float | None]] = []
        errors: list[Any] = []
        try:
            w = f"{max(tr.span_ms // 1000, 60)}s"
            vec = await call(deps.metrics.vector,
                             f'topk(10, sum by (span_name) (rate(traces_span_metrics_calls_total{{service_name="{quote(name)}"}}[{w}])))',
                             tr.end_ms, tenant)
            ops = sorted(((dict(lb).get("span_name", ""), v) for lb, v in vec), key=lambda t: -(t[1] or 0))
        except PitwallError as e:
            err = err or e.message
        if deps.traces is not None:
            f = SpanFilter(start_ns=tr.start_ms * 1_000_000, end_ns=tr.end_ms * 1_000_000 + 999_999, service=name,
                           status=STATUS_ERROR)
            errors = await call(deps.traces.search, tenant, f, 10)
        return pages.render(request, "service.html", "services", tr, error=err, name=name,
                            stats=stats[0] if stats else None, ops=ops, errors=errors,
                            logs_available=deps.logs is not None)

    pages_signals.add_routes(r, pages)
    pages_alerts.add_routes(r, pages)
    pages_dashboards.add_routes(r, pages)
    pages_workloads.add_routes(r, pages)
    pages_incidents.add_routes(r, pages)
    pages_slo.add_routes(r, pages)
    pages_releases.add_routes(r, pages)
    pages_gateway.add_routes(r, pages)
    pages_chaos.add_routes(r, pages)
    pages_config.add_routes(r, pages)
    pages_status.add_routes(r, pages)
    pages_pipelines.add_routes(r, pages)
    pages_backups.add_routes(r, pages)
    return r


def _range_table(mv: MetricsView, expr: str, tr: Any, tenant: str) -> Any:
    from pitwall.ui.queries import table_of

    step = max(tr.span_ms // 250, 1000)
    return table_of(mv.range_query(expr, tr.start_ms, tr.end_ms, step, tenant))
