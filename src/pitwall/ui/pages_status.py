"""The status page (``/status``): Prometheus' ``/status`` and ``/tsdb-status`` in one, and its JSON
(``/api/ui/v1/status``). Server-wide, like the targets page."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from pitwall.core.errors import PitwallError
from pitwall.core.params import tenant_of
from pitwall.core.tenancy import server_wide
from pitwall.ui.status_view import StatusView, all_series_matchers, cardinality
from pitwall.ui.timerange import TimeRange
from pitwall.ui.web import Pages, call, json_response

__all__ = ["add_routes"]

API = "/api/ui/v1"


def _collect(pages: Pages, view: StatusView, tr: TimeRange, tenant: str) -> dict[str, Any]:
    """Everything the page shows (blocking: runs in a worker thread)."""
    samples = view.samples()
    build = view.build(samples)
    out: dict[str, Any] = {"build": build, "config": view.config_yaml(), "storage": view.storage(samples),
                           "ingestion": view.rates(samples, build["uptime_s"]), "limits": view.limits(samples),
                           "cardinality": None, "cardinality_error": "", "rule_files": []}
    try:
        series = pages.deps.metrics.querier(tenant).series(all_series_matchers(), tr.start_ms, tr.end_ms)
        out["cardinality"] = asdict(cardinality(series))
    except PitwallError as e:
        out["cardinality_error"] = e.message
    if pages.deps.alerts is not None:
        files: dict[str, dict[str, Any]] = {}
        for r in pages.deps.alerts.rule_list():
            f = files.setdefault(r.file, {"file": r.file, "groups": set(), "rules": 0, "unhealthy": 0,
                                          "last_error": ""})
            f["groups"].add(r.group)
            f["rules"] += 1
            if r.health not in ("ok", "unknown"):
                f["unhealthy"] += 1
                f["last_error"] = r.last_error
        out["rule_files"] = [{**f, "groups": len(f["groups"])} for f in sorted(files.values(),
                                                                                key=lambda f: f["file"])]
    return out


def add_routes(r: APIRouter, pages: Pages) -> None:
    deps = pages.deps

    @r.get("/status", response_class=HTMLResponse, dependencies=[Depends(server_wide)])
    async def status(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        assert deps.status is not None
        data = await call(_collect, pages, deps.status, tr, tenant_of(request))
        return pages.render(request, "status.html", "status", tr, error=err, s=data)

    @r.get(f"{API}/status", dependencies=[Depends(server_wide)])
    async def status_api(request: Request) -> Response:
        """The status page's data as JSON (sizes in bytes, rates per second, times in unix seconds)."""
        try:
            tr = pages.time_range(request)
        except PitwallError as e:
            return json_response({"status": "error", "errorType": e.kind, "error": e.message}, 400)
        assert deps.status is not None
        data = await call(_collect, pages, deps.status, tr, tenant_of(request))
        return json_response({"status": "success", "data": data})
