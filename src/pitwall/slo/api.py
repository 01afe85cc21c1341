"""The error budget API: ``GET /api/slo/v1/slos``, ``GET /api/slo/v1/slos/{name}`` and
``GET /api/slo/v1/slos/{name}/consumed?start=&end=`` (the budget a window spent; pitwall's own JSON).

``name`` is the SLO's ``sloth_id`` (``<service>-<slo name>``); ``?calendar=month|week`` judges the
budget over the calendar period so far instead of the rolling period. Errors are
pitwall's native shape, ``{"error": {"type": ..., "message": ...}}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pitwall.core.http_errors import error_router
from pitwall.core.params import parse_time_ms
from pitwall.slo.budget import SLOService

__all__ = ["slo_router"]


def slo_router(service: SLOService) -> APIRouter:
    r = error_router("native", prefix="/api/slo/v1", tags=["slo"])

    @r.get("/slos", summary="Every loaded SLO with its error budget (rolling, or calendar=month|week)")
    async def list_slos(calendar: str = "") -> dict[str, Any]:
        return {"slos": [s.to_json() for s in await service.list(calendar)]}

    @r.get("/slos/{name}", summary="One SLO's objective, remaining budget and burn rates, with the arithmetic")
    async def get_slo(name: str, calendar: str = "") -> dict[str, Any]:
        return (await service.slo_status(name, calendar)).to_json()

    @r.get("/slos/{name}/consumed", summary="The share of the budget a window (an incident's) spent, with the "
           "arithmetic; start and end as RFC 3339 or Unix seconds")
    async def consumed(name: str, start: str, end: str) -> dict[str, Any]:
        return (await service.consumed(name, parse_time_ms(start), parse_time_ms(end))).to_json()

    return r
