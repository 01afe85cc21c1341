"""The API gateway pages: ``/gateway`` (every consumer and every route with requests/s, 5xx and 4xx %,
p50/p99 latency, rate-limited/s and bandwidth over the page's range, each column sortable) and
``/gateway/consumers/{name}`` (one consumer's charts, its routes and its configuration, credentials redacted).

Numbers come from Kong's series (``kong_*``, ``job="kong"``) through ``UIDeps.metrics``; the consumers' and
routes' configuration from ``UIDeps.gateway`` when the server runs a gateway. The gateway belongs to the whole
server, so the pages are server-wide.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from pitwall.core.errors import PitwallError
from pitwall.core.params import tenant_of
from pitwall.core.tenancy import server_wide as whole_server
from pitwall.ui.gateway_view import (
    COLUMNS,
    Stats,
    consumer_charts,
    consumer_config,
    consumer_stats,
    route_stats,
    sort_rows,
)
from pitwall.ui.web import Pages, call

__all__ = ["add_routes"]

MAX_NAME = 256  # a consumer's name in the path


def _sort(request: Request, param: str, default: str) -> tuple[str, bool]:
    """The column (``?sort=rps``) and direction (``-rps`` descending) of a table."""
    raw = request.query_params.get(param, default)
    desc = raw.startswith("-")
    key = raw.lstrip("-")
    return (key if key in COLUMNS else default.lstrip("-")), desc


def add_routes(r: APIRouter, pages: Pages) -> None:
    deps = pages.deps
    server_wide = [Depends(whole_server)]

    @r.get("/gateway", response_class=HTMLResponse, dependencies=server_wide)
    async def gateway(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        tenant = tenant_of(request)
        csort, cdesc = _sort(request, "sort", "-rps")
        rsort, rdesc = _sort(request, "rsort", "-rps")
        consumers: list[Stats] = []
        routes: list[Stats] = []
        try:
            consumers = await call(consumer_stats, deps.metrics, tr, deps.gateway, tenant)
            routes = await call(route_stats, deps.metrics, tr, deps.gateway, tenant)
        except PitwallError as e:
            err = err or e.message
        return pages.render(request, "gateway.html", "gateway", tr, error=err, columns=COLUMNS,
                            consumers=sort_rows(consumers, csort, cdesc), routes=sort_rows(routes, rsort, rdesc),
                            csort=csort, cdesc=cdesc, rsort=rsort, rdesc=rdesc, configured=deps.gateway is not None)

    @r.get("/gateway/consumers/{name}", response_class=HTMLResponse, dependencies=server_wide)
    async def consumer(name: str, request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        if len(name) > MAX_NAME:
            return pages.render(request, "gateway_consumer.html", "gateway", tr, status=400, name=name[:64],
                                error=f"consumer name longer than {MAX_NAME} characters", found=False)
        tenant = tenant_of(request)
        rsort, rdesc = _sort(request, "rsort", "-rps")
        rows: list[Stats] = []
        mine: list[Stats] = []
        try:
            rows = await call(consumer_stats, deps.metrics, tr, deps.gateway, tenant, name)
            mine = await call(route_stats, deps.metrics, tr, deps.gateway, tenant, name)
        except PitwallError as e:
            err = err or e.message
        config = consumer_config(deps.gateway, name)
        found = bool(rows) or config is not None
        if not found:
            err = err or f"consumer {name} is neither configured nor seen in the kong_* series of this range"
        return pages.render(request, "gateway_consumer.html", "gateway", tr, status=200 if found else 404, error=err,
                            name=name, found=found, row=rows[0] if rows else None, config=config,
                            configured=deps.gateway is not None, routes=sort_rows(mine, rsort, rdesc),
                            rsort=rsort, rdesc=rdesc, columns=COLUMNS, charts=consumer_charts(name, tr))
