"""Jaeger's query API (``/api/...``), as the Jaeger UI and Grafana's Jaeger data source call it.

Every answer is Jaeger's ``structuredResponse``: ``{"data": ..., "total": n,
"limit": 0, "offset": 0, "errors": null}``; errors keep that shape with
``errors: [{"code": status, "msg": text}]`` (error format ``jaeger``).

* ``GET /api/services``; ``GET /api/services/{service}/operations`` (names);
  ``GET /api/operations?service=&spanKind=`` (``[{"name", "spanKind"}]``).
* ``GET /api/traces`` search: ``service`` (required unless ``traceID`` is
  given), ``operation``, ``tags`` (JSON object; Grafana turns its logfmt
  field into one) and ``tag=key:value`` (repeatable), ``minDuration`` and
  ``maxDuration`` (Go durations), ``limit`` (default 100), ``start``/``end``
  (epoch microseconds; default the last ``lookback``, a Go duration, else
  ``traces.default_lookback``), ``traceID`` (repeatable: those traces).
  ``error=true`` means an ERROR status; ``span.kind`` the span's kind.
* ``GET /api/traces/{id}``: one trace (404 ``trace not found``). Shared with
  Tempo's API: ``Accept: application/protobuf`` gets Tempo's protobuf (what
  Grafana's Tempo data source asks for), any other request Jaeger's JSON
  (see ``tempo_api``).
* ``GET /api/dependencies?endTs=&lookback=`` (ms; default 24h):
  ``[{"parent", "child", "callCount"}]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from pitwall.core.http_errors import error_router
from pitwall.core.params import tenant_of
from pitwall.traces.api import TracesApiDeps
from pitwall.traces.errors import BadQuery, TraceNotFound
from pitwall.traces.jaeger import JAEGER_KINDS, KIND_OF_JAEGER, jaeger_trace, parse_go_duration_ns
from pitwall.traces.model import STATUS_ERROR, SpanRow, normalize_trace_id
from pitwall.traces.query import AttrFilter, SpanFilter, TraceQuery

__all__ = ["jaeger_router", "parse_tags", "trace_by_id"]

DEFAULT_LIMIT = 100
_DEPENDENCY_LOOKBACK_MS = 86_400_000
_MAX_US = (2**63 - 1) // 1000


def _respond(data: Any, total: int = 0, errors: list[dict[str, Any]] | None = None) -> Response:
    body = {"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors or None}
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


def _parse_error(name: str, err: str) -> BadQuery:
    return BadQuery(f"unable to parse param '{name}': {err}")


def _int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "")
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise _parse_error(name, f'strconv.ParseInt: parsing "{raw[:64]}": invalid syntax') from None


def _duration(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "")
    if not raw:
        return None
    try:
        return parse_go_duration_ns(raw)
    except ValueError as e:
        raise _parse_error(name, str(e)) from None


def parse_tags(simple: list[str], json_tags: list[str]) -> dict[str, str]:
    """``tag=k:v`` parameters and ``tags={"k":"v"}`` objects, merged (Jaeger's ``parseTags``)."""
    out: dict[str, str] = {}
    for t in simple:
        k, sep, v = t.partition(":")
        if not sep:
            raise BadQuery(f"malformed 'tag' parameter, expecting key:value, received: {t[:200]}")
        out[k] = v
    for raw in json_tags:
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise BadQuery(f"malformed 'tags' parameter, cannot unmarshal JSON: {e}") from None
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise BadQuery("malformed 'tags' parameter, cannot unmarshal JSON: expected an object of strings")
        out.update(doc)
    return out


def _span_filter(request: Request, default_lookback_ms: int) -> tuple[SpanFilter, int]:
    p = request.query_params
    now_us = int(time.time() * 1e6)
    end_us = _int(request, "end")
    end_us = now_us if end_us is None else end_us
    start_us = _int(request, "start")
    if start_us is None:
        lookback = p.get("lookback", "")
        try:
            back_ns = parse_go_duration_ns(lookback) if lookback and lookback != "custom" else None
        except ValueError as e:
            raise _parse_error("lookback", str(e)) from None
        start_us = end_us - (back_ns // 1000 if back_ns is not None else default_lookback_ms * 1000)
    min_d, max_d = _duration(request, "minDuration"), _duration(request, "maxDuration")
    if min_d and max_d and max_d < min_d:
        raise BadQuery("'maxDuration' should be greater than 'minDuration'")
    limit = _int(request, "limit")
    attrs: list[AttrFilter] = []
    status = None
    for k, v in parse_tags(p.getlist("tag"), p.getlist("tags")).items():
        if k == "error" and v == "true":
            status = STATUS_ERROR
        elif not (k == "span.kind" and v in KIND_OF_JAEGER):  # the kind is checked on the found traces
            attrs.append(AttrFilter(k, "=", v))

    def clamp(us: int) -> int:
        return max(0, min(us, _MAX_US)) * 1000  # span times are int64 nanoseconds

    f = SpanFilter(
        start_ns=clamp(start_us), end_ns=clamp(end_us) + 999, service=p.get("service", ""),
        name=p.get("operation", ""), attrs=tuple(attrs), status=status,
        min_duration_ns=min_d or None, max_duration_ns=max_d or None,
    )
    return f, limit if limit and limit > 0 else DEFAULT_LIMIT


def _kind_of(request: Request) -> int | None:
    tags = parse_tags(request.query_params.getlist("tag"), request.query_params.getlist("tags"))
    return KIND_OF_JAEGER.get(tags.get("span.kind", ""))


def _matches_kind(spans: list[SpanRow], kind: int | None, f: SpanFilter) -> bool:
    """The ``span.kind`` tag, which the column filter cannot hold: some span of that kind in the service."""
    if kind is None:
        return True
    return any(s.kind == kind and (not f.service or s.service.lower() == f.service.lower()) for s in spans)


async def trace_by_id(q: TraceQuery, tenant: str, raw: str) -> list[SpanRow]:
    """The spans of trace ``raw`` (1 to 32 hex digits, left-padded as Jaeger and Tempo read them)."""
    try:
        tid = normalize_trace_id(raw.rjust(32, "0")) if len(raw) <= 32 else normalize_trace_id(raw)
    except ValueError as e:
        raise BadQuery(str(e)) from None
    try:
        return await run_in_threadpool(q.trace, tenant, tid)
    except TraceNotFound:
        raise TraceNotFound("trace not found") from None


def jaeger_router(deps: TracesApiDeps, tempo_trace: Callable[[Request, list[SpanRow]], Response] | None = None,
                  tempo_relay: Callable[[Request, str], Awaitable[Response]] | None = None) -> APIRouter:
    """The Jaeger query API; ``tempo_trace`` answers ``/api/traces/{id}`` for Tempo's protobuf clients.

    With ``tempo_relay`` (``backends.traces``), Tempo's protobuf clients are answered by the engine.
    """
    r = error_router("jaeger", tags=["jaeger"])
    q = deps.query

    @r.get("/api/services")
    async def services(request: Request) -> Response:
        names = q.store.services(tenant_of(request))
        return _respond(names, len(names))

    @r.get("/api/services/{service}/operations")
    async def service_operations(service: str, request: Request) -> Response:
        names = q.store.span_names(tenant_of(request), service)
        return _respond(names, len(names))

    @r.get("/api/operations")
    async def operations(request: Request) -> Response:
        service = request.query_params.get("service", "")
        if not service:
            raise BadQuery("parameter 'service' is required")
        want = request.query_params.get("spanKind", "")
        end = time.time_ns()
        found = await run_in_threadpool(q.operations, tenant_of(request), service,
                                        end - deps.default_lookback_ms * 1_000_000, end)
        data = [{"name": n, "spanKind": JAEGER_KINDS.get(k, "")} for n, k in found
                if not want or JAEGER_KINDS.get(k, "") == want]
        return _respond(data, len(data))

    @r.get("/api/traces")
    async def search(request: Request) -> Response:
        tenant = tenant_of(request)
        ids = request.query_params.getlist("traceID")
        if ids:
            return await _by_ids(tenant, ids)
        f, limit = _span_filter(request, deps.default_lookback_ms)
        if not f.service:
            raise BadQuery("parameter 'service' is required")
        kind = _kind_of(request)
        found = await run_in_threadpool(q.find_traces, tenant, f, limit if kind is None else q.max_results)
        traces = [jaeger_trace(spans) for spans in found if _matches_kind(spans, kind, f)][:limit]
        return _respond(traces)

    async def _by_ids(tenant: str, ids: list[str]) -> Response:
        try:
            norm = [normalize_trace_id(t) for t in ids]
        except ValueError as e:
            raise BadQuery(f"cannot parse traceID param: {e}") from None
        found = await run_in_threadpool(q.traces, tenant, norm)
        got = {spans[0].trace_id for spans in found}
        errors = [{"code": 404, "msg": "trace not found", "traceID": t} for t, n in zip(ids, norm, strict=True)
                  if n not in got and not any(g[16:] == n[16:] for g in got)]
        return _respond([jaeger_trace(spans) for spans in found], errors=errors)

    @r.get("/api/traces/{trace_id}")
    async def trace(trace_id: str, request: Request) -> Response:
        tempo_client = "application/protobuf" in request.headers.get("accept", "")
        if tempo_relay is not None and tempo_client:
            return await tempo_relay(request, f"/api/traces/{trace_id}")
        spans = await trace_by_id(q, tenant_of(request), trace_id)
        if tempo_trace is not None and tempo_client:
            return tempo_trace(request, spans)
        return _respond([jaeger_trace(spans)])

    @r.get("/api/dependencies")
    async def dependencies(request: Request) -> Response:
        end_ms = _int(request, "endTs")
        end_ms = int(time.time() * 1000) if end_ms is None else end_ms
        lookback = _int(request, "lookback")
        start_ms = end_ms - (_DEPENDENCY_LOOKBACK_MS if lookback is None else lookback)
        lo, hi = (max(0, min(ms, _MAX_US // 1000)) * 1_000_000 for ms in (start_ms, end_ms))
        links = await run_in_threadpool(q.dependencies, tenant_of(request), lo, hi + 999_999)
        service = request.query_params.get("service", "")
        data = [{"parent": ln.parent, "child": ln.child, "callCount": ln.call_count} for ln in links
                if not service or service in (ln.parent, ln.child)]
        return _respond(data)

    return r

