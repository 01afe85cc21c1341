"""Pages over logs and traces: the logs explorer, trace search and trace view, the service map."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from pitwall.core.durations import NS_PER_MS, parse_duration_ms
from pitwall.core.errors import BadData, PitwallError, Unavailable
from pitwall.core.http_errors import status_of
from pitwall.core.labels import Labels
from pitwall.core.params import tenant_of
from pitwall.traces import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_UNSET,
    DependencyLink,
    SpanFilter,
    parse_attr_filter,
)
from pitwall.ui.queries import ServiceStats, query_error, service_stats
from pitwall.ui.servicemap import (
    MAP_WIDTH,
    MODES,
    MeshData,
    ServiceGraph,
    build_graph,
    draw,
    fetch_mesh,
    layout_graph,
    mesh_expr,
    parse_mode,
)
from pitwall.ui.timerange import TimeRange
from pitwall.ui.web import Pages, call, int_param, json_error, json_response

__all__ = ["add_routes", "layout_graph"]

_STATUS = {"ok": STATUS_OK, "error": STATUS_ERROR, "unset": STATUS_UNSET}
SCATTER_TRACES = 1000  # traces drawn in the search page's scatter
API = "/api/ui/v1"  # the UI's own JSON API
MAP_NODES = 60  # services the map draws by default: the busiest (``limit`` changes it)
MAX_MAP_NODES = 300


def _duration_ns(raw: str, name: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return int(float(raw) * NS_PER_MS)
    except ValueError:
        pass
    try:
        return parse_duration_ms(raw) * NS_PER_MS
    except ValueError:
        raise BadData(f"{name}: not a duration: {raw[:64]!r} (use e.g. 250ms, 2s)") from None


def trace_filter(p: Any, start_ms: int, end_ms: int) -> SpanFilter:
    status = (p.get("status") or "").lower()
    if status and status not in _STATUS:
        raise BadData(f"status must be one of ok, error, unset; got {status[:32]!r}")
    attrs = [a for a in p.getlist("attr") if a.strip()] if hasattr(p, "getlist") else list(p.get("attr", []))
    return SpanFilter(
        start_ns=start_ms * NS_PER_MS, end_ns=end_ms * NS_PER_MS + NS_PER_MS - 1, service=p.get("service", ""),
        name=p.get("operation", ""), attrs=tuple(parse_attr_filter(a) for a in attrs),
        status=_STATUS[status] if status else None,
        min_duration_ns=_duration_ns(p.get("min_duration", ""), "min duration"),
        max_duration_ns=_duration_ns(p.get("max_duration", ""), "max duration"))


def add_routes(r: APIRouter, pages: Pages) -> None:
    deps = pages.deps

    # ---------------------------------------------------------------- logs

    @r.get("/logs", response_class=HTMLResponse)
    async def logs(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        p = request.query_params
        expr = p.get("query", "").strip()
        trace_id = p.get("trace_id", "").strip().lower()
        limit = int_param(request, "limit", 200, 1, 5000)
        result = None
        qerr = None
        labels: list[str] = []
        if deps.logs is None:
            return pages.render(request, "logs.html", "logs", tr, error=err, available=False, expr=expr)
        tenant = tenant_of(request)
        try:
            labels = await call(deps.logs.label_names, tr, tenant)
            if trace_id:
                result = {"kind": "streams", "lines": await call(deps.logs.by_trace, trace_id, tenant, limit)}
            elif expr:
                res = await call(deps.logs.run, expr, tr, limit, 600, tenant)
                result = {"kind": res.kind, "lines": res.lines}
        except PitwallError as e:
            qerr = query_error(e)
        return pages.render(request, "logs.html", "logs", tr, error=err, available=True, expr=expr, result=result,
                            qerr=qerr, labels=labels, trace_id=trace_id, limit=limit)

    @r.get("/ui/api/logs/chart")
    async def logs_chart(request: Request) -> Response:
        """The volume histogram of a log query, or the series of a metric LogQL query."""
        if deps.logs is None:
            return json_error(Unavailable("the logs pillar is not available"))
        p = request.query_params
        expr = p.get("query", "").strip()
        points = int_param(request, "points", 120, 10, 2000)
        try:
            tr = pages.time_range(request)
            if p.get("mode") == "metric":  # up to 25 queries (``query`` repeated, each with its ``legend``)
                legends = p.getlist("legend")
                merged = None
                for i, q in enumerate(p.getlist("query")[:25]):
                    res = await call(deps.logs.run, q.strip(), tr, 100, points, tenant_of(request))
                    if res.chart is None:
                        raise BadData("not a metric query")
                    res.chart.named(legends[i] if i < len(legends) else "")
                    merged = res.chart if merged is None else merged.merge(res.chart)
                if merged is None:
                    raise BadData("empty query")
                return json_response(merged.to_json())
            data = await call(deps.logs.volume, expr, tr, points, tenant_of(request))
        except PitwallError as e:
            return json_error(e)
        return json_response(data.to_json())

    @r.get("/ui/fragment/log-context", response_class=HTMLResponse)
    async def log_context(request: Request) -> Response:
        """Lines around one hit in its stream (``labels``: the stream's labels as JSON, ``ts``: the hit)."""
        tr = pages.time_range(request)
        if deps.logs is None:
            raise Unavailable("the logs pillar is not available")
        p = request.query_params
        try:
            labels = json.loads(p.get("labels", "") or "{}")
            ts = int(p.get("ts", ""))
        except ValueError:
            raise BadData("labels must be a JSON object and ts an integer of nanoseconds") from None
        if not isinstance(labels, dict) or not labels or not all(isinstance(v, str) for v in labels.values()):
            raise BadData("labels must be a non-empty JSON object of strings")
        size = int_param(request, "size", 10, 1, 100)
        older, newer = await call(deps.logs.context, labels, ts, size, tenant_of(request))
        return pages.render(request, "_log_context.html", "logs", tr, older=older, newer=newer, ts=ts)

    @r.get("/ui/fragment/log-label-values", response_class=HTMLResponse)
    async def log_label_values(request: Request) -> Response:
        tr, _ = pages.range_or_error(request)
        name = request.query_params.get("name", "")
        values: list[str] = []
        if deps.logs is not None and name:
            values = await call(deps.logs.label_values, name, tr, tenant_of(request))
        return pages.render(request, "_label_values.html", "logs", tr, name=name, values=values[:200])

    # ---------------------------------------------------------------- traces

    @r.get("/traces", response_class=HTMLResponse)
    async def traces(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        if deps.traces is None:
            return pages.render(request, "traces.html", "traces", tr, error=err, available=False)
        p = request.query_params
        tenant = tenant_of(request)
        service = p.get("service", "")
        services = await call(deps.traces.services, tenant)
        ops = await call(deps.traces.operations, tenant, service)
        found: list[Any] = []
        qerr = None
        limit = int_param(request, "limit", 50, 1, 1000)
        try:
            f = trace_filter(p, tr.start_ms, tr.end_ms)
            found = await call(deps.traces.search, tenant, f, limit)
        except PitwallError as e:
            qerr = query_error(e)
        keep = [(k, v) for k, v in p.multi_items() if k != "limit"]
        return pages.render(request, "traces.html", "traces", tr, error=err, available=True, services=services,
                            ops=ops, found=found, qerr=qerr, limit=limit, attrs=[a for a in p.getlist("attr") if a],
                            points_src="/ui/api/trace_points?" + urlencode(keep))

    @r.get("/ui/api/trace_points")
    async def trace_points(request: Request) -> Response:
        """The search page's scatter: start and duration of up to ``SCATTER_TRACES`` matching traces spread over
        the whole range (the table below lists only the newest ``limit``)."""
        if deps.traces is None:
            return json_error(Unavailable("the traces pillar is not available"))
        try:
            tr = pages.time_range(request)
            f = trace_filter(request.query_params, tr.start_ms, tr.end_ms)
            found, sampled = await call(deps.traces.scatter, tenant_of(request), f, SCATTER_TRACES)
        except PitwallError as e:
            return json_error(e)
        points = sorted(({"t": t.summary.start_ns / 1e9, "d": t.summary.duration_ns / 1e6,
                          "e": t.summary.error_count > 0, "id": t.display_id} for t in found), key=lambda x: x["t"])
        return json_response({"points": points, "capped": sampled})

    @r.get("/traces/compare", response_class=HTMLResponse)
    async def trace_compare(request: Request) -> Response:
        """Two traces side by side by call path (``a`` and ``b``, or the first two ``id`` of the list's boxes)."""
        tr, err = pages.range_or_error(request)
        if deps.traces is None:
            return pages.render(request, "traces.html", "traces", tr, error=err, available=False)
        p = request.query_params
        ids = [i.strip() for i in [p.get("a", ""), p.get("b", ""), *p.getlist("id")] if i.strip()][:2]
        if len(ids) < 2:
            return pages.render(request, "trace_compare.html", "traces", tr, error=err, ids=ids, qerr=query_error(
                BadData("pick two traces to compare (tick two in the list, or give a and b)")), status=400)
        try:
            wa, wb, rows = await call(deps.traces.compare, tenant_of(request), ids[0], ids[1])
        except PitwallError as e:
            return pages.render(request, "trace_compare.html", "traces", tr, error=err, ids=ids, qerr=query_error(e),
                                status=404 if e.kind == "not_found" else 400)
        return pages.render(request, "trace_compare.html", "traces", tr, error=err, ids=ids, qerr=None, a=wa, b=wb,
                            rows=rows)

    @r.get("/traces/{trace_id}", response_class=HTMLResponse)
    async def trace(trace_id: str, request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        if deps.traces is None:
            return pages.render(request, "traces.html", "traces", tr, error=err, available=False)
        try:
            wf = await call(deps.traces.trace, tenant_of(request), trace_id)
        except PitwallError as e:
            return pages.render(request, "trace.html", "traces", tr, error=err, wf=None, qerr=query_error(e),
                                trace_id=trace_id, status=404 if e.kind == "not_found" else 400)
        log_count = None
        if deps.logs is not None:
            try:
                log_count = len(await call(deps.logs.by_trace, wf.trace_id, tenant_of(request), 1000))
            except PitwallError:
                log_count = None
        return pages.render(request, "trace.html", "traces", tr, error=err, wf=wf, qerr=None, trace_id=trace_id,
                            log_count=log_count, logs_available=deps.logs is not None)

    # ---------------------------------------------------------------- service map

    async def graph_of(request: Request, tr: TimeRange) -> ServiceGraph:
        """The merged service map over the request's range (``sources``, ``limit``); every query at once."""
        mode = parse_mode(request.query_params.get("sources"))
        limit = int_param(request, "limit", MAP_NODES, 1, MAX_MAP_NODES)
        tenant = tenant_of(request)
        window = f"{max(tr.span_ms // 1000, 60)}s"
        traces = deps.traces if mode != "mesh" else None

        async def run(expr: str) -> list[tuple[Labels, float]]:
            return cast(list[tuple[Labels, float]], await call(deps.metrics.vector, expr, tr.end_ms, tenant))

        async def spans() -> tuple[list[DependencyLink], dict[str, ServiceStats]]:
            if traces is None:
                return [], {}
            links, services = await asyncio.gather(
                call(traces.dependencies, tenant, tr.start_ms * NS_PER_MS, tr.end_ms * NS_PER_MS + NS_PER_MS - 1),
                call(traces.services, tenant))
            names = sorted({*services, *(x for ln in links for x in (ln.parent, ln.child))})
            stats = await call(service_stats, deps.metrics, tr, names, tenant)
            return links, {s.service: s for s in stats}

        async def mesh() -> MeshData | None:
            return await fetch_mesh(run, window) if mode != "traces" else None

        (links, stats), data = await asyncio.gather(spans(), mesh())
        return build_graph(mode, data, links, list(stats), stats, tr.span_ms / 1000, limit)

    @r.get("/services", response_class=HTMLResponse)
    async def service_map(request: Request) -> Response:
        """The service map: mesh metrics and traces merged (``?sources=both|mesh|traces``)."""
        tr, err = pages.range_or_error(request)
        mode = request.query_params.get("sources", "both")
        try:
            g = await graph_of(request, tr)
        except PitwallError as e:
            return pages.render(request, "services.html", "services", tr, error=err, qerr=query_error(e),
                                mode=mode, modes=MODES, nodes=[], edges=[], hidden=(0, 0), width=MAP_WIDTH,
                                height=0, status=400 if e.kind == "bad_data" else 200)
        nodes, edges, height = draw(g)
        for nd in nodes:  # a traced service opens its own page; a mesh-only one, its requests in the explorer
            nd["href"] = (f"/services/{quote(nd['trace_names'][0], safe='')}?{tr.qs()}" if nd["trace_names"]
                          else "/graph?" + tr.qs(expr=mesh_expr(nd["id"], nd["name"], nd["namespace"])))
        return pages.render(request, "services.html", "services", tr, error=err, qerr=None, mode=g.mode,
                            modes=MODES, nodes=nodes, edges=edges, hidden=(g.hidden_nodes, g.hidden_edges),
                            width=MAP_WIDTH, height=height, traces_available=deps.traces is not None)

    @r.get(API + "/services/graph")
    async def service_graph(request: Request) -> Response:
        """The map's merged graph as JSON (the page's data): nodes, edges, what the bound left out."""
        try:
            tr = pages.time_range(request)
            g = await graph_of(request, tr)
        except PitwallError as e:
            return json_response({"error": {**query_error(e).to_json(), "status": status_of(e)}}, status_of(e))
        return json_response({**g.to_json(), "from": tr.start_ms, "to": tr.end_ms})
