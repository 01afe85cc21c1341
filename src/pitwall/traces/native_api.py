"""pitwall's native traces API (errors as ``{"error": {...}}``).

* ``GET /api/traces/v1/services``
* ``GET /api/traces/v1/search`` - by ``service``, ``operation``, ``attr`` (repeatable:
  ``k=v``, ``k!=v``, ``k>n``, ``k>=n``, ``k<n``, ``k<=n``), ``status`` (ok, error, unset),
  ``min_duration``/``max_duration`` (``250ms``, ``2s``; plain numbers are ms), ``start``/``end``
  (unix seconds or RFC 3339; default the last ``since``, 1h), ``limit`` (default 20); newest first.
* ``GET /api/traces/v1/dependencies`` - caller -> callee edges over ``start``/``end``.
* ``GET /api/traces/v1/{trace_id}`` - one trace as OTLP/JSON ``TracesData`` (the logs pillar's
  trace link uses this).
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from pitwall.core.durations import parse_duration_ms
from pitwall.core.http_errors import error_router
from pitwall.core.params import parse_time_ms, tenant_of
from pitwall.traces.api import TracesApiDeps
from pitwall.traces.errors import BadQuery
from pitwall.traces.model import STATUS_ERROR, STATUS_OK, STATUS_UNSET
from pitwall.traces.query import SpanFilter, parse_attr_filter
from pitwall.traces.render import summary_json, to_otlp_json

__all__ = ["native_router"]

_STATUS = {"ok": STATUS_OK, "error": STATUS_ERROR, "unset": STATUS_UNSET}


def _json(data: Any) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), media_type="application/json")


def _duration_ns(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(float(raw) * 1_000_000)
    except ValueError:
        pass
    try:
        return parse_duration_ms(raw) * 1_000_000
    except ValueError:
        raise BadQuery(f"{name}: not a duration: {raw[:64]!r} (use e.g. 250ms, 2s)") from None


def _range(request: Request) -> tuple[int, int]:
    p = request.query_params
    now_ms = int(time.time() * 1000)
    end_ms = parse_time_ms(p["end"]) if p.get("end") else now_ms
    if p.get("start"):
        start_ms = parse_time_ms(p["start"])
    else:
        since = _duration_ns(p.get("since") or "1h", "since")
        assert since is not None
        start_ms = end_ms - since // 1_000_000
    if end_ms < start_ms:
        raise BadQuery("end must not be before start")
    lim = (2**63 - 1) // 1_000_000 - 1  # span times are int64 nanoseconds
    return max(-lim, min(start_ms, lim)) * 1_000_000, max(-lim, min(end_ms, lim)) * 1_000_000 + 999_999


def _limit(request: Request, default: int) -> int:
    raw = request.query_params.get("limit")
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:  # isdigit alone passes "²"
        raise BadQuery(f"limit must be a positive integer, got {raw[:64]!r}")
    return int(raw)


def native_router(deps: TracesApiDeps) -> APIRouter:
    r = error_router("native", tags=["traces"])
    q = deps.query

    @r.get("/api/traces/v1/services")
    async def services(request: Request) -> Response:
        return _json({"services": q.store.services(tenant_of(request))})

    @r.get("/api/traces/v1/search")
    async def search(request: Request) -> Response:
        p = request.query_params
        start, end = _range(request)
        status = p.get("status")
        if status is not None and status.lower() not in _STATUS:
            raise BadQuery(f"status must be one of ok, error, unset; got {status[:32]!r}")
        f = SpanFilter(
            start_ns=start, end_ns=end, service=p.get("service", ""), name=p.get("operation", ""),
            attrs=tuple(parse_attr_filter(a) for a in p.getlist("attr")),
            status=_STATUS[status.lower()] if status else None,
            min_duration_ns=_duration_ns(p.get("min_duration"), "min_duration"),
            max_duration_ns=_duration_ns(p.get("max_duration"), "max_duration"),
        )
        found = await run_in_threadpool(q.search, tenant_of(request), f, _limit(request, 20))
        return _json({"traces": [summary_json(s) for s in found]})

    @r.get("/api/traces/v1/dependencies")
    async def dependencies(request: Request) -> Response:
        start, end = _range(request)
        links = await run_in_threadpool(q.dependencies, tenant_of(request), start, end)
        return _json({"dependencies": [
            {"parent": ln.parent, "child": ln.child, "callCount": ln.call_count, "errorCount": ln.error_count}
            for ln in links]})

    @r.get("/api/traces/v1/{trace_id}")
    async def trace(trace_id: str, request: Request) -> Response:
        spans = await run_in_threadpool(q.trace, tenant_of(request), trace_id)
        return _json(to_otlp_json(spans))

    return r
