"""Grafana Tempo's HTTP API, as Grafana's Tempo data source calls it (errors in plain text, as Tempo answers).

* ``GET /api/traces/{id}``: shared with Jaeger's API (``jaeger_api``):
  ``Accept: application/protobuf`` gets OTLP protobuf (``tempopb.Trace``),
  any other request Jaeger's JSON. ``GET /api/v2/traces/{id}``: Tempo's
  ``TraceByIDResponse``, protobuf on ``Accept: application/protobuf``, else
  JSON ``{"trace": {"resourceSpans": [...]}, "metrics": {}}`` (OTLP/JSON, ids in hex).
* ``GET /api/search``: ``q`` (TraceQL, ``traceql`` package), or ``tags``
  (logfmt, Tempo's older search), ``minDuration``/``maxDuration`` (trace
  duration), ``limit`` (20), ``spss`` (spans per spanset, 3), ``start``/``end``
  (unix seconds; default the last ``traces.default_lookback``).
* ``GET /api/search/tags`` (``scope`` span, resource, intrinsic),
  ``/api/v2/search/tags``, ``/api/search/tag/{tag}/values``,
  ``/api/v2/search/tag/{tag}/values`` (typed values; scoped names such as
  ``resource.service.name``, ``span.http.method``, intrinsics ``name``,
  ``status``, ``kind``).
* ``GET /api/echo``, ``GET /api/status/buildinfo``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from pitwall import __version__
from pitwall.core.http_errors import error_router
from pitwall.core.params import tenant_of
from pitwall.core.protowire import length_delimited
from pitwall.traces.api import TracesApiDeps
from pitwall.traces.errors import BadQuery
from pitwall.traces.jaeger import JAEGER_KINDS, parse_go_duration_ns
from pitwall.traces.jaeger_api import trace_by_id
from pitwall.traces.model import SpanRow, summarize
from pitwall.traces.query import SpanFilter, TraceQuery
from pitwall.traces.render import any_value, to_otlp_json, to_otlp_proto
from pitwall.traces.traceql import TraceQLError, candidate_filters, evaluate, parse, referenced_attributes
from pitwall.traces.traceql.ast import Attribute, Binary, FieldExpr, Intrinsic, Query, SpansetFilter, Static

__all__ = ["TEMPO_API_VERSION", "tempo_router", "tempo_trace_response"]

PROTOBUF = "application/protobuf"
TEMPO_API_VERSION = "2.6.0"  # the Tempo release whose HTTP API this follows (Grafana picks features by it)
DEFAULT_LIMIT = 20
DEFAULT_SPSS = 3
MAX_TAGS = 256  # the tags become one && chain, which evaluation walks recursively
_BATCH = 200
INTRINSIC_TAGS = ["duration", "kind", "name", "rootName", "rootServiceName", "status", "statusMessage",
                  "traceDuration"]
_JSON_TYPES = {"VARCHAR": "string", "BIGINT": "int", "UBIGINT": "int", "DOUBLE": "float", "BOOLEAN": "bool"}
_LOGFMT = re.compile(r'\s*([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)')


def _json(data: Any) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), media_type="application/json")


def _wants_proto(request: Request) -> bool:
    return PROTOBUF in request.headers.get("accept", "")


def tempo_trace_response(request: Request, spans: list[SpanRow]) -> Response:
    """``/api/traces/{id}`` for Tempo's protobuf clients: OTLP ``TracesData`` bytes."""
    return Response(to_otlp_proto(spans), media_type=PROTOBUF)


def _seconds(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "")
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise BadQuery(f'invalid {name}: strconv.ParseUint: parsing "{raw[:64]}": invalid syntax')
    return int(raw)


def _window(request: Request, deps: TracesApiDeps) -> tuple[int, int]:
    """[start, end] in ns from Tempo's ``start``/``end`` (unix seconds)."""
    start, end = _seconds(request, "start"), _seconds(request, "end")
    if start is None and end is None:
        now = time.time_ns()
        return now - deps.default_lookback_ms * 1_000_000, now
    if start is not None and end is not None and end <= start:
        raise BadQuery(f"http parameter start must be before end. received start={start} end={end}")
    now_s = int(time.time())
    lo = start if start is not None else (end or now_s) - deps.default_lookback_ms // 1000
    hi = end if end is not None else now_s
    cap = (2**63 - 1) // 1_000_000_000 - 1
    return min(lo, cap) * 1_000_000_000, min(hi, cap) * 1_000_000_000 + 999_999_999


def _positive(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name, "")
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit() or (name == "limit" and int(raw) == 0):
        raise BadQuery(f"invalid {name}: must be a positive number, got {raw[:64]!r}")
    return int(raw)


def _tags_query(raw: str) -> Query:
    """Tempo's older ``tags`` search (logfmt ``key=value`` pairs, all on one span) as a TraceQL query."""
    conds: list[FieldExpr] = []
    seen: set[str] = set()
    pos = 0
    while pos < len(raw.strip()):
        m = _LOGFMT.match(raw, pos)
        if m is None:
            raise BadQuery(f"invalid tags: expected key=value at {raw[pos:pos + 20]!r}")
        key, value = m.group(1), m.group(2)
        if key in seen:
            raise BadQuery(f"invalid tags: tag {key} has been set twice")
        if len(seen) >= MAX_TAGS:
            raise BadQuery(f"invalid tags: more than {MAX_TAGS} tags")
        seen.add(key)
        if value.startswith('"'):
            value = json.loads(value)
        lhs: FieldExpr = Intrinsic("name") if key == "name" else Attribute("", key)
        conds.append(Binary("=", lhs, Static("string", value)))
        pos = m.end()
    expr: FieldExpr | None = None
    for c in conds:
        expr = c if expr is None else Binary("&&", expr, c)
    return Query(SpansetFilter(expr))


def _span_json(s: SpanRow, attrs: list[Attribute]) -> dict[str, Any]:
    shown: list[dict[str, Any]] = []
    for a in attrs:
        v = s.attributes.get(a.name) if a.scope in ("span", "") else None
        if v is None and a.scope in ("resource", ""):
            v = s.resource.get(a.name)
        if v is not None:
            shown.append({"key": a.name, "value": any_value(v)})
    if not any(x["key"] == "service.name" for x in shown):
        shown.append({"key": "service.name", "value": {"stringValue": s.service}})
    return {"spanID": s.span_id, "name": s.name, "startTimeUnixNano": str(s.start_ns),
            "durationNanos": str(s.duration_ns), "attributes": shown}


def _trace_json(spans: list[SpanRow], matched: list[SpanRow], attrs: list[Attribute], spss: int
                ) -> dict[str, Any]:
    summary = summarize(spans)
    has_root = any(not s.parent_id for s in spans)
    spanset = {"spans": [_span_json(s, attrs) for s in matched[:spss]], "matched": len(matched)}
    out: dict[str, Any] = {
        "traceID": summary.trace_id.lstrip("0") or "0",  # Tempo drops leading zeros
        "rootServiceName": summary.root_service if has_root else "<root span not yet received>",
        "startTimeUnixNano": str(summary.start_ns),
    }
    if has_root:
        out["rootTraceName"] = summary.root_name
    if summary.duration_ns // 1_000_000:
        out["durationMs"] = summary.duration_ns // 1_000_000
    out["spanSet"] = spanset
    out["spanSets"] = [spanset]
    return out


def _candidates(q: TraceQuery, tenant: str, query: Query, f: SpanFilter) -> list[str]:
    """Trace ids that may match, newest first: for each alternative, the traces every one of its
    filters finds (at most ``max_results`` each)."""
    ids: list[str] = []
    for alternative in candidate_filters(query.spansets, f):
        found = [q.find_trace_ids(tenant, cf, q.max_results) for cf in alternative]
        others = [set(x) for x in found[1:]]
        ids.extend(t for t in found[0] if all(t in o for o in others))
    return list(dict.fromkeys(ids))


def _search(q: TraceQuery, tenant: str, query: Query, f: SpanFilter, limit: int, spss: int,
            min_ns: int | None, max_ns: int | None) -> dict[str, Any]:
    """Traces matching ``query``: candidates from the store (newest first), each checked exactly.

    Candidates are read in growing batches (``limit``, then twice as many...): a query the
    store narrowed well is done after the first.
    """
    ids = _candidates(q, tenant, query, f)
    attrs = referenced_attributes(query.spansets)
    found: list[dict[str, Any]] = []
    inspected = spans_read = 0
    pos, batch = 0, max(limit, 10)
    while pos < len(ids) and len(found) < limit:
        for spans in q.traces(tenant, ids[pos:pos + batch]):
            inspected += 1
            spans_read += len(spans)
            duration = summarize(spans).duration_ns
            if (min_ns is not None and duration < min_ns) or (max_ns is not None and duration > max_ns):
                continue
            matched = evaluate(query, spans)
            if matched:
                found.append(_trace_json(spans, matched, attrs, spss))
        pos += batch
        batch = min(batch * 2, _BATCH)
    found.sort(key=lambda t: int(t["startTimeUnixNano"]), reverse=True)
    return {"traces": found[:limit], "metrics": {"inspectedTraces": inspected, "inspectedSpans": str(spans_read),
                                                 "completedJobs": 1, "totalJobs": 1}}


def _tag_scope(tag: str) -> tuple[str, str]:
    """``resource.service.name`` -> (resource, service.name); ``name`` -> (intrinsic, name); ``x`` -> ("", x)."""
    for scope in ("span", "resource"):
        if tag.startswith(scope + "."):
            return scope, tag[len(scope) + 1:]
    if tag.startswith("."):
        return "", tag[1:]
    if tag in INTRINSIC_TAGS or tag.startswith(("span:", "trace:")):
        return "intrinsic", tag
    return "", tag


def tempo_router(deps: TracesApiDeps) -> APIRouter:
    """Tempo's query API (trace by id v2, search with TraceQL, tags, tag values, echo, buildinfo)."""
    r = error_router("text", tags=["tempo"])
    q = deps.query

    @r.get("/api/echo")
    async def echo() -> Response:
        return Response("echo", media_type="text/plain")

    @r.get("/api/status/buildinfo")
    async def buildinfo() -> Response:
        return _json({"version": TEMPO_API_VERSION, "revision": f"pitwall-{__version__}", "branch": "",
                      "buildUser": "", "buildDate": "", "goVersion": ""})

    @r.get("/api/v2/traces/{trace_id}")
    async def trace_v2(trace_id: str, request: Request) -> Response:
        spans = await trace_by_id(q, tenant_of(request), trace_id)
        if _wants_proto(request):
            body = to_otlp_proto(spans)  # TraceByIDResponse: field 1 (trace), length-delimited
            return Response(length_delimited(1, body), media_type=PROTOBUF)
        return _json({"trace": to_otlp_json(spans), "metrics": {}})

    @r.get("/api/search")
    async def search(request: Request) -> Response:
        p = request.query_params
        if p.get("q") and p.get("tags"):
            raise BadQuery("invalid request: can't specify tags and q in the same query")
        query = parse(p["q"]) if p.get("q") else _tags_query(p.get("tags", ""))
        start, end = _window(request, deps)
        durations = []
        for name in ("minDuration", "maxDuration"):
            raw = p.get(name, "")
            try:
                durations.append(parse_go_duration_ns(raw) if raw else None)
            except ValueError as e:
                raise BadQuery(f"invalid {name}: {e}") from None
        if durations[0] and durations[1] and durations[0] > durations[1]:
            raise BadQuery("invalid maxDuration: must be greater than minDuration")
        result = await run_in_threadpool(
            _search, q, tenant_of(request), query, SpanFilter(start_ns=start, end_ns=end),
            _positive(request, "limit", DEFAULT_LIMIT), _positive(request, "spss", DEFAULT_SPSS), *durations)
        return _json(result)

    async def _keys(request: Request) -> dict[str, list[str]]:
        start, end = _window(request, deps)
        tenant = tenant_of(request)
        span = await run_in_threadpool(q.attribute_keys, tenant, "attributes", start, end)
        resource = await run_in_threadpool(q.attribute_keys, tenant, "resource", start, end)
        return {"span": span, "resource": resource, "intrinsic": INTRINSIC_TAGS}

    def _scope_param(request: Request) -> str:
        scope = request.query_params.get("scope", "")
        if scope not in ("", "all", "span", "resource", "intrinsic"):
            raise BadQuery(f"invalid scope: {scope[:64]!r} (span, resource, intrinsic or all)")
        return scope

    @r.get("/api/search/tags")
    async def tags(request: Request) -> Response:
        scope = _scope_param(request)
        keys = await _keys(request)
        names = [k for s, ks in keys.items() if scope in ("", "all", s) and (s != "intrinsic" or scope == s)
                 for k in ks]
        return _json({"tagNames": sorted(set(names))})

    @r.get("/api/v2/search/tags")
    async def tags_v2(request: Request) -> Response:
        scope = _scope_param(request)
        keys = await _keys(request)
        return _json({"scopes": [{"name": s, "tags": ks} for s, ks in keys.items() if scope in ("", "all", s)]})

    async def _values(request: Request, tag: str) -> list[tuple[str, str]]:
        start, end = _window(request, deps)
        tenant = tenant_of(request)
        base = SpanFilter(start_ns=start, end_ns=end)
        f = _narrowed_by(request.query_params.get("q", ""), base)
        scope, name = _tag_scope(tag)
        if scope == "intrinsic":
            return await run_in_threadpool(_intrinsic_values, q, tenant, name, f)
        if (scope, name) in (("resource", "service.name"), ("", "service.name")):
            if f == base:
                return [("string", s) for s in q.store.services(tenant)]
            return [("string", s) for s in await run_in_threadpool(q.column_values, tenant, "service", f)]
        got: list[tuple[str, str]] = []
        for column in (["attributes"] if scope == "span" else ["resource"] if scope == "resource"
                       else ["attributes", "resource"]):
            got += await run_in_threadpool(q.attribute_values, tenant, column, name, f)
        return sorted({(_JSON_TYPES.get(t, "string"), v) for t, v in got}, key=lambda x: x[1])

    @r.get("/api/search/tag/{tag}/values")
    async def tag_values(tag: str, request: Request) -> Response:
        values = await _values(request, tag)
        return _json({"tagValues": sorted({v for _, v in values})})

    @r.get("/api/v2/search/tag/{tag}/values")
    async def tag_values_v2(tag: str, request: Request) -> Response:
        values = await _values(request, tag)
        return _json({"tagValues": [{"type": t, "value": v} for t, v in values]})

    return r


def _narrowed_by(raw: str, base: SpanFilter) -> SpanFilter:
    """The store filter a tag-values ``q`` implies (``{ resource.service.name = "x" }``: that service's
    values). Grafana sends the query being typed, so one that does not parse, or that needs more than
    one span filter, narrows nothing."""
    if not raw.strip():
        return base
    try:
        alternatives = candidate_filters(parse(raw).spansets, base)
    except TraceQLError:
        return base
    return alternatives[0][0] if len(alternatives) == 1 and len(alternatives[0]) == 1 else base


def _intrinsic_values(q: TraceQuery, tenant: str, name: str, f: SpanFilter) -> list[tuple[str, str]]:
    if name in ("status", "span:status"):
        return [("keyword", s) for s in ("error", "ok", "unset")]
    if name in ("kind", "span:kind"):
        return [("keyword", k) for k in ("unspecified", *JAEGER_KINDS.values())]
    if name in ("rootName", "trace:rootName", "rootServiceName", "trace:rootService"):
        column = "name" if name.endswith("Name") and "Service" not in name else "service"
        with q.store.relation(f.start_ns, f.end_ns) as (cur, rel):
            rows = cur.execute(
                f"SELECT DISTINCT {column} FROM {rel} WHERE tenant = ? AND start_ns BETWEEN ? AND ? "
                f"AND {column} <> '' AND coalesce(parent_id, '') = '' ORDER BY 1 LIMIT 1000",
                [tenant, f.start_ns, f.end_ns]).fetchall()
        return [("string", r[0]) for r in rows]
    plain = {"name": "name", "span:name": "name", "statusMessage": "status_message",
             "span:statusMessage": "status_message"}.get(name)
    return [("string", v) for v in q.column_values(tenant, plain, f)] if plain else []

