"""Pages over logs and traces: the logs explorer, trace search and trace view, the service map."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from pitwall.core.durations import NS_PER_MS, parse_duration_ms
from pitwall.core.errors import BadData, PitwallError, Unavailable
from pitwall.core.params import tenant_of
from pitwall.traces import STATUS_ERROR, STATUS_OK, STATUS_UNSET, SpanFilter, parse_attr_filter
from pitwall.ui.queries import query_error, service_stats
from pitwall.ui.web import Pages, call, int_param, json_error, json_response

__all__ = ["add_routes", "layout_graph"]

_STATUS = {"ok": STATUS_OK, "error": STATUS_ERROR, "unset": STATUS_UNSET}
SCATTER_TRACES = 1000  # traces drawn in the search page's scatter


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


MAP_WIDTH = 1200  # the service map's drawing width (the SVG scales to the page)
_LAYER_GAP_Y = 96  # vertical room per service in a column


def _layers(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Each node's column: the longest chain of callers before it (back edges of cycles ignored)."""
    out: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a != b and b not in out[a]:
            out[a].append(b)
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    back: set[tuple[str, str]] = set()

    def visit(n: str) -> None:  # iterative DFS: deep call chains must not hit the recursion limit
        stack = [(n, iter(out[n]))]
        state[n] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                order.append(node)
                stack.pop()
            elif state.get(nxt) == 1:
                back.add((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(out[nxt])))

    for n in nodes:
        if n not in state:
            visit(n)
    layer = dict.fromkeys(nodes, 0)
    for n in reversed(order):  # a topological order of the graph without its back edges
        for m in out[n]:
            if (n, m) not in back:
                layer[m] = max(layer[m], layer[n] + 1)
    return layer


def layout_graph(nodes: list[str], edges: list[tuple[str, str]] | None = None,
                 width: float = MAP_WIDTH) -> tuple[dict[str, tuple[float, float]], float]:
    """A layered drawing: callers left of callees, one column per call depth, each column ordered by its
    neighbours' average position (a few barycenter sweeps) so edges cross less; (positions, height)."""
    edges = edges or []
    layer = _layers(nodes, edges)
    cols: dict[int, list[str]] = {}
    for n in nodes:
        cols.setdefault(layer[n], []).append(n)
    ncols = max(cols) + 1 if cols else 1
    height = max(260.0, max((len(c) for c in cols.values()), default=1) * _LAYER_GAP_Y + 80)
    rank = {n: float(i) for c in cols.values() for i, n in enumerate(c)}
    near: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a in near and b in near and a != b:
            near[a].append(b)
            near[b].append(a)
    for _ in range(4):
        for c in cols.values():
            c.sort(key=lambda n: sum(rank[m] for m in near[n]) / len(near[n]) if near[n] else rank[n])
            for i, n in enumerate(c):
                rank[n] = float(i)
    margin = 90.0
    pos: dict[str, tuple[float, float]] = {}
    for li, c in cols.items():
        x = width / 2 if ncols == 1 else margin + li * (width - 2 * margin) / (ncols - 1)
        step = (height - 80) / len(c)
        for i, n in enumerate(c):
            pos[n] = (x, 40 + step * (i + 0.5))
    return pos, height


def _error_colour(ratio: float | None) -> str:
    if ratio is None:
        return "var(--muted)"
    if ratio >= 0.05:
        return "var(--err)"
    if ratio >= 0.01:
        return "var(--warn)"
    return "var(--ok)"


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

    @r.get("/services", response_class=HTMLResponse)
    async def service_map(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        if deps.traces is None:
            return pages.render(request, "services.html", "services", tr, error=err, available=False)
        tenant = tenant_of(request)
        links = await call(deps.traces.dependencies, tenant, tr.start_ms * NS_PER_MS, tr.end_ms * NS_PER_MS + NS_PER_MS - 1)
        services = await call(deps.traces.services, tenant)
        try:
            stats = {s.service: s for s in await call(service_stats, deps.metrics, tr, services, tenant)}
        except PitwallError as e:
            stats, err = {}, err or e.message
        callers = {ln.parent for ln in links}
        names = sorted({*services, *callers, *(ln.child for ln in links)},
                       key=lambda n: (n not in callers, n))
        pos, height = layout_graph(names, [(ln.parent, ln.child) for ln in links])
        max_rate = max([s.rate or 0.0 for s in stats.values()] + [1e-9])
        span_s = max(tr.span_ms / 1000, 1)
        nodes = []
        for n in names:
            st = stats.get(n)
            rate = st.rate if st else None
            radius = 14 + 22 * math.sqrt((rate or 0.0) / max_rate)
            nodes.append({"name": n, "x": pos[n][0], "y": pos[n][1], "r": radius, "rate": rate,
                          "error_ratio": st.error_ratio if st else None, "p99": st.p99 if st else None,
                          "p50": st.p50 if st else None,
                          "colour": _error_colour(st.error_ratio if st else None)})
        radius_of = {nd["name"]: nd["r"] for nd in nodes}
        edges = []
        for ln in links:
            (x1, y1), (x2, y2) = pos[ln.parent], pos[ln.child]
            dx, dy = x2 - x1, y2 - y1
            d = math.hypot(dx, dy) or 1.0
            r1, r2 = float(radius_of[ln.parent]), float(radius_of[ln.child]) + 6
            edges.append({"parent": ln.parent, "child": ln.child, "calls": ln.call_count,
                          "errors": ln.error_count, "rate": ln.call_count / span_s,
                          "x1": x1 + dx / d * r1, "y1": y1 + dy / d * r1,
                          "x2": x2 - dx / d * r2, "y2": y2 - dy / d * r2,
                          "mx": (x1 + x2) / 2, "my": (y1 + y2) / 2,
                          "colour": "var(--err)" if ln.error_count else "var(--edge)"})
        return pages.render(request, "services.html", "services", tr, error=err, available=True, nodes=nodes,
                            edges=edges, links=links, width=MAP_WIDTH, height=height)
