"""Zipkin v2 HTTP API: span ingest and the query endpoints Zipkin's UI and Grafana use.

Errors are plain text, as Zipkin answers. Time parameters are epoch
milliseconds (``endTs``, ``lookback``), durations microseconds, as
``zipkin2-api.yaml`` declares.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from pitwall.core.body import Body, read_body
from pitwall.core.http_errors import error_router
from pitwall.core.params import tenant_of
from pitwall.traces.errors import BadQuery
from pitwall.traces.ingest import otlp, zipkin
from pitwall.traces.ingest.receiver import SpanReceiver
from pitwall.traces.model import normalize_trace_id
from pitwall.traces.query import SpanFilter, TraceQuery, parse_annotation_query
from pitwall.traces.render import to_zipkin

__all__ = ["OtlpExport", "TracesApiDeps", "otlp_export", "otlp_router", "zipkin_router"]

_MAX_MS = (2**63 - 1) // 1_000_000 - 1
_TRACE_ID = re.compile(r"^[0-9a-fA-F]{16}([0-9a-fA-F]{16})?$")


@dataclass
class TracesApiDeps:
    receiver: SpanReceiver
    query: TraceQuery
    default_lookback_ms: int
    autocomplete_keys: list[str]


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), status, media_type="application/json")


def _int_param(request: Request, name: str, default: int | None = None, *, minimum: int = 0) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be an integer, got {raw[:64]!r}") from None
    if v < minimum:
        raise BadQuery(f"{name} must be at least {minimum}, got {v}")
    return v


def _window(request: Request, deps: TracesApiDeps, *, end_required: bool = False) -> tuple[int, int]:
    """[start, end] in ns from ``endTs`` and ``lookback`` (ms)."""
    if end_required and not request.query_params.get("endTs"):
        raise BadQuery("endTs is required")
    now_ms = int(time.time() * 1000)
    end_ms = _int_param(request, "endTs", now_ms, minimum=1)
    lookback = _int_param(request, "lookback", None)
    assert end_ms is not None
    if lookback is None:
        lookback = end_ms if end_required else deps.default_lookback_ms
    end_ms = min(end_ms, _MAX_MS)  # span times are int64 nanoseconds
    start_ms = max(0, end_ms - lookback)
    return start_ms * 1_000_000, end_ms * 1_000_000 + 999_999


def _trace_id(raw: str) -> str:
    if not _TRACE_ID.match(raw):
        raise BadQuery(f"invalid trace id {raw[:64]!r}: expected 16 or 32 lower-hex characters")
    return normalize_trace_id(raw)


def zipkin_router(deps: TracesApiDeps) -> APIRouter:
    """``/api/v2/...``: POST spans, services, spans, remoteServices, traces, trace, traceMany, dependencies."""
    r = error_router("text", tags=["zipkin"])
    q = deps.query

    @r.post("/api/v2/spans", status_code=202)
    async def post_spans(request: Request) -> Response:
        media = zipkin.media_type(request.headers.get("content-type", ""))
        rc = deps.receiver
        async with read_body(request, rc.body_limits, rc.inflight) as body:
            await rc.receive(tenant_of(request), body, media, zipkin.decode)
        return Response(status_code=202)

    @r.get("/api/v2/services")
    async def services(request: Request) -> Response:
        return _json(q.store.services(tenant_of(request)))

    @r.get("/api/v2/spans")
    async def span_names(request: Request) -> Response:
        service = request.query_params.get("serviceName", "")
        if not service:
            raise BadQuery("serviceName is required")
        return _json(q.store.span_names(tenant_of(request), service))

    @r.get("/api/v2/remoteServices")
    async def remote_services(request: Request) -> Response:
        service = request.query_params.get("serviceName", "")
        if not service:
            raise BadQuery("serviceName is required")
        return _json(q.store.remote_services(tenant_of(request), service))

    @r.get("/api/v2/traces")
    async def traces(request: Request) -> Response:
        p = request.query_params
        start, end = _window(request, deps)
        attrs, words = parse_annotation_query(p.get("annotationQuery", ""))
        min_d = _int_param(request, "minDuration")
        max_d = _int_param(request, "maxDuration")
        limit = _int_param(request, "limit", 10, minimum=1)
        assert limit is not None
        f = SpanFilter(
            start_ns=start, end_ns=end, service=p.get("serviceName", ""), name=p.get("spanName", ""),
            remote_service=p.get("remoteServiceName", ""), attrs=attrs, words=words,
            min_duration_ns=min_d * 1000 if min_d is not None else None,
            max_duration_ns=max_d * 1000 if max_d is not None else None,
        )
        found = await run_in_threadpool(q.find_traces, tenant_of(request), f, limit)
        return _json([[to_zipkin(s) for s in spans] for spans in found])

    @r.get("/api/v2/trace/{trace_id}")
    async def trace(trace_id: str, request: Request) -> Response:
        tid = _trace_id(trace_id)
        spans = await run_in_threadpool(q.trace, tenant_of(request), tid)
        return _json([to_zipkin(s) for s in spans])

    @r.get("/api/v2/traceMany")
    async def trace_many(request: Request) -> Response:
        raw = request.query_params.get("traceIds", "")
        ids = [t.strip() for t in raw.split(",") if t.strip()]
        if len(ids) < 2:
            raise BadQuery("traceIds should be a comma-separated list of at least two trace IDs")
        norm = [_trace_id(t) for t in ids]
        if len(set(norm)) != len(norm):
            raise BadQuery("traceIds should not contain duplicates")
        found = await run_in_threadpool(q.traces, tenant_of(request), norm)
        return _json([[to_zipkin(s) for s in spans] for spans in found])

    @r.get("/api/v2/dependencies")
    async def dependencies(request: Request) -> Response:
        start, end = _window(request, deps, end_required=True)
        links = await run_in_threadpool(q.dependencies, tenant_of(request), start, end)
        return _json([
            {"parent": ln.parent, "child": ln.child, "callCount": ln.call_count,
             **({"errorCount": ln.error_count} if ln.error_count else {})}
            for ln in links
        ])

    @r.get("/api/v2/autocompleteKeys")
    async def autocomplete_keys() -> Response:
        return _json(deps.autocomplete_keys)

    @r.get("/api/v2/autocompleteValues")
    async def autocomplete_values(request: Request) -> Response:
        key = request.query_params.get("key", "")
        if not key:
            raise BadQuery("key is required")
        if key not in deps.autocomplete_keys:
            return _json([])
        end = time.time_ns()
        values = await run_in_threadpool(
            q.tag_values, tenant_of(request), key, end - deps.default_lookback_ms * 1_000_000, end)
        return _json(values)

    return r


OtlpExport = Callable[[str, Body, str], Awaitable[bytes]]


def otlp_export(deps: TracesApiDeps) -> OtlpExport:
    """Tenant + an ExportTraceServiceRequest body -> the encoded response, for OTLP/HTTP and OTLP/gRPC alike.

    The body's bytes are already held in the in-flight budget; decoding, the
    limits, the WAL commit and ``partial_success`` are the same for both.
    """

    async def export(tenant: str, body: Body, content_type: str) -> bytes:
        media = otlp.media_type(content_type)
        result = await deps.receiver.receive(tenant, body, media, otlp.decode)
        return otlp.encode_response(media, result.rejected, result.message)

    return export


def otlp_router(deps: TracesApiDeps) -> APIRouter:
    """OTLP/HTTP ``POST /v1/traces``: protobuf or JSON, answered in the request's encoding."""
    r = error_router("otlp", tags=["otlp"])
    export = otlp_export(deps)

    @r.post("/v1/traces")
    async def otlp_traces(request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        media = otlp.media_type(ctype)  # 415 before a byte is read
        rc = deps.receiver
        async with read_body(request, rc.body_limits, rc.inflight) as body:
            out = await export(tenant_of(request), body, ctype)
        return Response(out, media_type=media)

    return r
