"""Loki's HTTP API (push, query, labels, series, index stats, build info) and pitwall's native log endpoints.

Responses are shaped as Loki's (``{"status": "success", "data": ...}``;
index stats bare); errors are Loki's plain text, rendered once by
``core.http_errors`` from the exception kinds. Handlers parse parameters,
call the store or the LogQL engine, and write the envelope.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from pitwall import __version__
from pitwall.core.body import BodyLimits, read_body
from pitwall.core.errors import BadData, NotFound
from pitwall.core.http_errors import error_router
from pitwall.core.limits import InflightBudget, LimitsSettings
from pitwall.core.params import all_params, tenant_of
from pitwall.logs.drain import patterns as drain_patterns
from pitwall.logs.ingest.distributor import LogIngester
from pitwall.logs.ingest.loki_push import LabelCache, decode_push
from pitwall.logs.logql.detected import detect_fields, detected_labels, field_values
from pitwall.logs.logql.parser import parse_log_selector
from pitwall.logs.model import Direction, LogStream, Matcher
from pitwall.logs.params import (
    NS,
    bounds,
    default_step_ns,
    parse_direction,
    parse_duration_ns,
    parse_limit,
    parse_timestamp_ns,
)
from pitwall.logs.settings import LogsSettings
from pitwall.logs.store import LogSource

MAX_POINTS = 11_000
DETECTED_LINE_LIMIT = 1000  # Loki's defaults for detected_fields' line_limit and field_limit
DETECTED_FIELD_LIMIT = 1000
MAX_DETECTED_FIELDS = 10_000  # pitwall's bound on field names (and values) held per request
PATTERN_LINE_LIMIT = 20_000  # newest lines a /patterns request trains Drain on (paged by max entries)
PATTERN_RESOLUTION_MS = 10_000  # Loki's pattern sample resolution; smaller steps are widened to it
MAX_PATTERNS = 1000
MAX_VOLUME_BUCKETS = 1000  # index/volume_range runs one index read per bucket
LOKI_API_VERSION = "3.4.0"  # the Loki API level served; Grafana turns features on by this


class LogQLRunner(Protocol):
    """The part of the LogQL engine the API calls (``pitwall.logs.logql.LogQLEngine``)."""

    def query_range(self, querier: Any, expr: str, start_ns: int, end_ns: int, step_ns: int, *, limit: int,
                    direction: Direction, interval_ns: int | None = None, align_step: bool = False) -> Any: ...

    def query_instant(self, querier: Any, expr: str, time_ns: int, *, limit: int, direction: Direction) -> Any: ...


@dataclass
class LogsApiDeps:
    store: LogSource
    ingester: LogIngester
    engine: LogQLRunner
    parse_selector: Callable[[str], list[Matcher]]
    settings: LogsSettings
    limits: LimitsSettings
    inflight: InflightBudget
    labels: LabelCache
    remote: LogSource | None = None  # backends.logs: reads go to the engine

    @property
    def reads(self) -> LogSource:
        """Where the UI, the ruler and incidents read logs: the engine's when there is one, else the store."""
        return self.remote if self.remote is not None else self.store


_H = TypeVar("_H", bound=Callable[..., Awaitable[Response]])


def _get_post(r: APIRouter, path: str) -> Callable[[_H], _H]:
    """Register a handler for GET and form POST, with distinct OpenAPI operation ids."""

    def deco(fn: _H) -> _H:
        for method in ("GET", "POST"):
            r.add_api_route(path, fn, methods=[method], operation_id=f"loki_{fn.__name__}_{method.lower()}")
        return fn

    return deco


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), ensure_ascii=False), status,
                    media_type="application/json; charset=UTF-8")


def _success(data: Any) -> Response:
    return _json({"status": "success", "data": data})


def push_router(deps: LogsApiDeps) -> APIRouter:
    """``POST /loki/api/v1/push`` (204 once in the WAL), plain-text errors as Loki's distributor."""
    r = error_router("text", tags=["loki"])

    @r.post("/loki/api/v1/push", status_code=204)
    async def push(request: Request) -> Response:
        tenant = tenant_of(request)
        async with read_body(request, BodyLimits.of(deps.limits), deps.inflight) as body:
            cols = await body.in_thread(decode_push, body, request.headers.get("content-type", ""), deps.labels)
            await deps.ingester.push(tenant, cols)
        return Response(status_code=204)

    return r


def query_router(deps: LogsApiDeps) -> APIRouter:
    """Loki's read API under ``/loki/api/v1``."""
    r = error_router("text", tags=["loki"])
    store = deps.store

    def selector(p: Any, key: str = "query") -> list[Matcher]:
        q = p.get(key)
        return deps.parse_selector(q) if q else []

    @_get_post(r, "/loki/api/v1/query_range")
    async def query_range(request: Request) -> Response:
        p = await all_params(request)
        expr = _query_param(p)
        start, end = bounds(p.get("start"), p.get("end"), p.get("since"))
        limit = _limit(p, deps)
        direction = parse_direction(p.get("direction"))
        step = parse_duration_ns(p["step"]) if p.get("step") else default_step_ns(start, end)
        if step <= 0:
            raise BadData("zero or negative query resolution step widths are not accepted. "
                          "Try a positive integer")
        if (end - start) // step > MAX_POINTS:
            raise BadData(f"exceeded maximum resolution of {MAX_POINTS:,} points per timeseries. "
                          "Try increasing the value of the step parameter")
        interval = parse_duration_ns(p["interval"], "interval") if p.get("interval") else None
        q = store.querier(tenant_of(request))
        res = await run_in_threadpool(deps.engine.query_range, q, expr, start, end, step, limit=limit,
                                      direction=direction, interval_ns=interval, align_step=True)
        return _success(_encoded(res, request))

    @_get_post(r, "/loki/api/v1/query")
    async def query(request: Request) -> Response:
        p = await all_params(request)
        expr = _query_param(p)
        at = parse_timestamp_ns(p["time"]) if p.get("time") else time.time_ns()
        limit = _limit(p, deps)
        direction = parse_direction(p.get("direction"))
        q = store.querier(tenant_of(request))
        res = await run_in_threadpool(deps.engine.query_instant, q, expr, at, limit=limit, direction=direction)
        return _success(_encoded(res, request))

    @_get_post(r, "/loki/api/v1/labels")
    async def labels(request: Request) -> Response:
        p = await all_params(request)
        start, end = bounds(p.get("start"), p.get("end"), p.get("since"))
        q = store.querier(tenant_of(request))
        ms = selector(p)

        def collect() -> list[str]:
            if ms:
                return sorted({k for lbl in q.series(ms, start, end + 1) for k, _ in lbl})
            return q.label_names(start, end + 1)

        return _success(await run_in_threadpool(collect))

    @_get_post(r, "/loki/api/v1/label/{name}/values")
    async def label_values(name: str, request: Request) -> Response:
        p = await all_params(request)
        start, end = bounds(p.get("start"), p.get("end"), p.get("since"))
        q = store.querier(tenant_of(request))
        return _success(await run_in_threadpool(q.label_values, name, selector(p), start, end + 1))

    @_get_post(r, "/loki/api/v1/series")
    async def series(request: Request) -> Response:
        p = await all_params(request)
        start, end = bounds(p.get("start"), p.get("end"), p.get("since"))
        q = store.querier(tenant_of(request))
        sets = [deps.parse_selector(m) for m in p.getlist("match[]") or p.getlist("match")] or [[]]

        def collect() -> list[dict[str, str]]:
            seen: dict[Any, None] = {}
            for ms in sets:
                for lbl in q.series(ms, start, end + 1):
                    seen[lbl] = None
            return [dict(lbl) for lbl in sorted(seen)]

        return _success(await run_in_threadpool(collect))

    @_get_post(r, "/loki/api/v1/index/stats")
    async def index_stats(request: Request) -> Response:
        p = await all_params(request)
        start, end = bounds(p.get("start"), p.get("end"), p.get("since"))
        ms = selector(p)
        q = store.querier(tenant_of(request))
        return _json(await run_in_threadpool(q.stats, ms, start, end + 1))

    @_get_post(r, "/loki/api/v1/index/volume")
    async def index_volume(request: Request) -> Response:
        p = await all_params(request)
        start, end = bounds(p.get("start"), p.get("end"), p.get("since"))
        ms = selector(p)
        limit = parse_limit(p.get("limit"), 100)
        target = [x for x in (p.get("targetLabels") or "").split(",") if x]
        q = store.querier(tenant_of(request))
        vols = await run_in_threadpool(q.volume, ms, start, end + 1, target or None)
        ts = end / NS
        result = [{"metric": dict(lbl), "value": [ts, str(v)]} for lbl, v in vols[:limit]]
        return _success({"resultType": "vector", "result": result})

    async def detection_streams(request: Request, p: Any) -> list[dict[str, Any]]:
        """The newest ``line_limit`` entries of a log query, categorized (Loki's detected_fields read)."""
        expr = _query_param(p)
        parse_log_selector(expr)  # Loki: ParseLogSelector, metric queries refused
        start, end = bounds(p.get("start"), p.get("end"), p.get("since"))
        mx = deps.settings.limits.max_entries_limit_per_query
        limit = parse_limit(p.get("line_limit") or p.get("lineLimit"), min(DETECTED_LINE_LIMIT, mx))
        if limit > mx:
            raise BadData(f"max entries limit per query exceeded, limit > max_entries_limit_per_query "
                          f"({limit} > {mx})")
        q = store.querier(tenant_of(request))
        res = await run_in_threadpool(deps.engine.query_range, q, expr, start, end, default_step_ns(start, end),
                                      limit=limit, direction=Direction.BACKWARD)
        return list(res.to_loki_data(categorize_labels=True)["result"])

    @_get_post(r, "/loki/api/v1/detected_labels")
    async def detected_labels_(request: Request) -> Response:
        p = await all_params(request)
        start, end = bounds(p.get("start"), p.get("end"), p.get("since"))
        q = store.querier(tenant_of(request))
        ms = selector(p)

        def collect() -> list[dict[str, Any]]:
            values: dict[str, set[str]] = {}
            for lbl in q.series(ms, start, end + 1):
                for k, v in lbl:
                    values.setdefault(k, set()).add(v)
            return detected_labels(values)

        return _json({"detectedLabels": await run_in_threadpool(collect)})

    @_get_post(r, "/loki/api/v1/detected_fields")
    async def detected_fields_(request: Request) -> Response:
        p = await all_params(request)
        field_limit = min(parse_limit(p.get("field_limit") or p.get("limit"), DETECTED_FIELD_LIMIT),
                          MAX_DETECTED_FIELDS)
        streams = await detection_streams(request, p)
        fields = await run_in_threadpool(detect_fields, streams, field_limit)
        return _json({"fields": fields, "limit": field_limit})

    @_get_post(r, "/loki/api/v1/detected_field/{name}/values")
    async def detected_field_values(name: str, request: Request) -> Response:
        p = await all_params(request)
        limit = min(parse_limit(p.get("limit"), DETECTED_FIELD_LIMIT), MAX_DETECTED_FIELDS)
        streams = await detection_streams(request, p)
        return _json({"values": await run_in_threadpool(field_values, streams, name, limit)})

    @_get_post(r, "/loki/api/v1/patterns")
    async def patterns(request: Request) -> Response:
        p = await all_params(request)
        start, end = bounds(p.get("start"), p.get("end"), p.get("since"))
        step = parse_duration_ns(p["step"]) if p.get("step") else default_step_ns(start, end)
        if step <= 0:
            raise BadData("zero or negative query resolution step widths are not accepted. "
                          "Try a positive integer")
        step_ms = max(step // 1_000_000, PATTERN_RESOLUTION_MS)
        expr = _query_param(p)
        parse_log_selector(expr)
        q = store.querier(tenant_of(request))
        page = min(PATTERN_LINE_LIMIT, deps.settings.limits.max_entries_limit_per_query)

        def entries() -> list[tuple[Any, str, str, int]]:
            """The newest PATTERN_LINE_LIMIT entries, read in pages of at most max_entries_limit_per_query."""
            seen: set[tuple[Any, int, str]] = set()
            out: list[tuple[Any, str, str, int]] = []
            hi = end
            while len(out) < PATTERN_LINE_LIMIT and hi >= start:
                res = deps.engine.query_range(q, expr, start, hi, default_step_ns(start, end),
                                              limit=min(page, PATTERN_LINE_LIMIT - len(out)),
                                              direction=Direction.BACKWARD)
                oldest, n, before = hi, 0, len(out)
                for st in res.to_loki_data(categorize_labels=True)["result"]:
                    key = tuple(sorted(st["stream"].items()))
                    for v in st["values"]:
                        ts = int(v[0])
                        n += 1
                        oldest = min(oldest, ts)
                        if (key, ts, v[1]) in seen:  # an entry on a page boundary, read twice
                            continue
                        seen.add((key, ts, v[1]))
                        md = (v[2].get("structuredMetadata") or {}) if len(v) > 2 else {}
                        level = md.get("detected_level") or st["stream"].get("detected_level", "")
                        out.append((key, level, v[1], ts // 1_000_000))
                if n < page or oldest <= start or len(out) == before:
                    break
                # a page all at one nanosecond cannot move the bound: step past it (the rest there is lost)
                hi = oldest if oldest < hi else hi - 1
            out.sort(key=lambda e: e[3])  # Drain trains oldest first
            return out

        data = await run_in_threadpool(lambda: drain_patterns(entries(), step_ms, limit=MAX_PATTERNS))
        return _success(data)

    @_get_post(r, "/loki/api/v1/index/volume_range")
    async def index_volume_range(request: Request) -> Response:
        """Bytes per label set per step bucket (Loki splits at step-aligned bounds; points at bucket starts)."""
        p = await all_params(request)
        start, end = bounds(p.get("start"), p.get("end"), p.get("since"))
        step = parse_duration_ns(p["step"]) if p.get("step") else default_step_ns(start, end)
        if step <= 0:
            raise BadData("zero or negative query resolution step widths are not accepted. "
                          "Try a positive integer")
        if (end - start) // step >= MAX_VOLUME_BUCKETS:
            raise BadData(f"exceeded maximum resolution of {MAX_VOLUME_BUCKETS:,} buckets for index/volume_range. "
                          "Try increasing the value of the step parameter")
        ms = selector(p)
        limit = parse_limit(p.get("limit"), 100)
        target = [x for x in (p.get("targetLabels") or "").split(",") if x] or None
        q = store.querier(tenant_of(request))

        def collect() -> list[dict[str, Any]]:
            series: dict[Any, list[list[Any]]] = {}
            lo = start
            while lo <= end:
                hi = min((lo // step + 1) * step, end + 1)
                for lbl, v in q.volume(ms, lo, hi, target)[:limit]:
                    series.setdefault(lbl, []).append([lo // NS if lo % NS == 0 else lo / NS, str(v)])
                lo = hi
            return [{"metric": dict(lbl), "values": vals} for lbl, vals in sorted(series.items())]

        return _success({"resultType": "matrix", "result": await run_in_threadpool(collect)})

    @r.get("/loki/api/v1/status/buildinfo")
    async def buildinfo() -> Response:
        return _json({"version": LOKI_API_VERSION, "revision": f"pitwall-{__version__}", "branch": "main",
                      "buildUser": "pitwall", "buildDate": "", "goVersion": ""})

    return r


def ready_router(is_ready: Callable[[], bool]) -> APIRouter:
    """Loki's ``GET /ready``: ``ready`` once every component started."""
    from pitwall.core.errors import Unavailable

    r = error_router("text", tags=["loki"])

    @r.get("/ready")
    async def ready() -> Response:
        if not is_ready():
            raise Unavailable("Ingester not ready: waiting for components to start")
        return Response("ready\n", media_type="text/plain; charset=utf-8")

    return r


def native_router(deps: LogsApiDeps) -> APIRouter:
    """pitwall's own log endpoints (JSON errors): a trace's logs."""
    r = error_router("native", tags=["logs"])

    @r.get("/api/logs/v1/trace/{trace_id}")
    async def trace_logs(trace_id: str, request: Request) -> Response:
        """Every log entry whose structured metadata ``trace_id`` is ``trace_id``, oldest first."""
        tid = trace_id.strip().lower()
        if not tid or len(tid) > 64 or any(c not in "0123456789abcdef" for c in tid):
            raise BadData(f"invalid trace id {trace_id[:80]!r}: expected hex")
        p = await all_params(request)
        start = parse_timestamp_ns(p["start"]) if p.get("start") else 0
        end = parse_timestamp_ns(p["end"]) if p.get("end") else time.time_ns() + 3600 * NS
        limit = parse_limit(p.get("limit"), 1000)
        q = deps.store.querier(tenant_of(request))
        streams = await run_in_threadpool(q.by_trace_id, tid, start, end, min(limit, 10_000))
        if not streams and p.get("require") == "true":
            raise NotFound(f"no log entries for trace {tid}")
        return _json({"traceId": tid, "streams": streams_json(streams)})

    return r


def streams_json(streams: Sequence[LogStream]) -> list[dict[str, Any]]:
    """Loki's ``streams`` result shape; structured metadata as the third element when present."""
    out = []
    for s in streams:
        values: list[list[Any]] = []
        md = [s.entry_metadata(i) for i in range(len(s))]
        for ts, line, m in zip(s.ts_ns.tolist(), s.lines, md, strict=True):
            values.append([str(ts), line, dict(m)] if m else [str(ts), line])
        out.append({"stream": dict(s.labels), "values": values})
    return out


def _encoded(res: Any, request: Request) -> dict[str, Any]:
    """Loki's ``data``, shaped by the ``X-Loki-Response-Encoding-Flags`` header (echoed back as
    ``encodingFlags``; ``categorize-labels`` splits stream, structured metadata and parsed labels)."""
    raw = request.headers.get("x-loki-response-encoding-flags", "")
    flags = list(dict.fromkeys(raw.split(","))) if raw else []
    data: dict[str, Any] = res.to_loki_data(categorize_labels="categorize-labels" in flags)
    if not flags:
        return data
    return {"resultType": data["resultType"], "encodingFlags": flags,
            **{k: v for k, v in data.items() if k != "resultType"}}


def _query_param(p: Any) -> str:
    expr = p.get("query")
    if expr is None or not expr.strip():
        raise BadData("query must not be empty" if expr is not None else "missing query parameter")
    return str(expr)


def _limit(p: Any, deps: LogsApiDeps) -> int:
    limit = parse_limit(p.get("limit"))
    mx = deps.settings.limits.max_entries_limit_per_query
    if limit > mx:
        raise BadData(f"max entries limit per query exceeded, limit > max_entries_limit_per_query ({limit} > {mx})")
    return limit


__all__ = ["LogsApiDeps", "native_router", "push_router", "query_router", "ready_router", "streams_json"]
