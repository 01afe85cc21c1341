"""Prometheus HTTP API v1 and the metric ingest endpoints.

Responses are shaped exactly as Prometheus' (``status``/``data``/``warnings``
envelope, ``[ts, "value"]`` pairs); errors use Prometheus' error envelope via
``core.http_errors``. Remote write answers in plain text as Prometheus does.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import orjson
import promql_parser
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from pitwall import __version__
from pitwall.core.body import Body, BodyLimits, read_body
from pitwall.core.errors import BadData
from pitwall.core.http_errors import error_router
from pitwall.core.labels import Matcher
from pitwall.core.limits import InflightBudget
from pitwall.core.params import all_params, parse_duration_param_ms, parse_time_ms, tenant_of
from pitwall.core.tenancy import server_wide
from pitwall.metrics.ingest.otlp import OtlpMetricsResult, OtlpMetricsTranslator, encode_response
from pitwall.metrics.ingest.remote_write import RemoteWriteIngester
from pitwall.metrics.promql import Engine, PromQLParseError, QueryResult, parse_matchers
from pitwall.metrics.promql.ast import parse as parse_promql
from pitwall.metrics.promql.engine import INLINE_MAX_SAMPLES, INLINE_MAX_SERIES, encode_response_body
from pitwall.metrics.promql.format import format_float
from pitwall.metrics.store import MetricsBackend, Querier, WouldBlock

MIN_TIME_MS = -(2**62) // 1000
MAX_TIME_MS = 2**62 // 1000


class TargetsSource(Protocol):
    def to_prometheus_targets_json(self, state: str) -> dict[str, Any]: ...


@dataclass
class MetricsApiDeps:
    store: MetricsBackend
    engine: Engine
    remote_write: RemoteWriteIngester
    otlp: OtlpMetricsTranslator
    inflight: InflightBudget
    max_points_per_series: int
    started_at: float
    flags: dict[str, str]
    targets: TargetsSource | None = None


_H = TypeVar("_H", bound=Callable[..., Awaitable[Response]])


def _get_post(r: APIRouter, path: str) -> Callable[[_H], _H]:
    """Register a handler for GET and form POST, with distinct OpenAPI operation ids."""

    def deco(fn: _H) -> _H:
        for method in ("GET", "POST"):
            r.add_api_route(path, fn, methods=[method], operation_id=f"{fn.__name__}_{method.lower()}")
        return fn

    return deco


def _success(data: Any, warnings: list[str] | None = None, infos: list[str] | None = None) -> Response:
    body: dict[str, Any] = {"status": "success", "data": data}
    if warnings:
        body["warnings"] = warnings
    if infos:
        body["infos"] = infos
    return Response(orjson.dumps(body), media_type="application/json")


def _matcher_sets(values: list[str]) -> list[list[Matcher]]:
    return [parse_matchers(v) for v in values]


def _time_range(params: Any) -> tuple[int, int]:
    start = parse_time_ms(params["start"]) if params.get("start") else MIN_TIME_MS
    end = parse_time_ms(params["end"]) if params.get("end") else MAX_TIME_MS
    if end < start:
        raise BadData("end timestamp must not be before start time")
    return start, end


def _limit(params: Any) -> int:
    raw = params.get("limit")
    if not raw:
        return 0
    try:
        n = int(raw)
    except ValueError:
        raise BadData(f'cannot parse "{raw}": invalid syntax') from None
    if n < 0:
        raise BadData("limit must be non-negative")
    return n


def query_router(deps: MetricsApiDeps) -> APIRouter:
    """``/api/v1/...`` query endpoints with Prometheus' envelopes."""
    r = error_router("prometheus", tags=["prometheus"])
    engine, store = deps.engine, deps.store

    async def evaluate(
        tenant: str, expr: str, steps: int, run: Callable[[Querier], QueryResult], step_ms: int = 0
    ) -> QueryResult:
        """``run`` on the event loop when the query proves small, else on a worker thread.

        A thread hop costs more than a small query (~0.1 ms idle, far more on a
        loaded machine). The inline try reads through a non-blocking querier
        with a small budget; when it raises ``WouldBlock`` (samples on disk, a
        writer holding the store, more series or samples than the budget) the
        query runs again on a thread. Evaluation has no side effects, so the
        answer is the same either way.
        """
        if engine.may_run_inline(expr, steps, step_ms):
            try:
                return run(store.nonblocking_querier(tenant, INLINE_MAX_SERIES, INLINE_MAX_SAMPLES))
            except WouldBlock:
                pass
        return await run_in_threadpool(run, store.querier(tenant))

    @_get_post(r, "/api/v1/query")
    async def query(request: Request) -> Response:
        p = await all_params(request)
        expr = p.get("query")
        if not expr:
            raise BadData("invalid parameter \"query\": query must not be empty" if expr == "" else
                          "invalid parameter \"query\": no query provided")
        at = parse_time_ms(p["time"]) if p.get("time") else int(time.time() * 1000)
        with _query_param_errors():
            res = await evaluate(tenant_of(request), expr, 1, lambda q: engine.instant(q, expr, at))
        return Response(encode_response_body(res, stats=bool(p.get("stats"))), media_type="application/json")

    @_get_post(r, "/api/v1/query_range")
    async def query_range(request: Request) -> Response:
        p = await all_params(request)
        expr = p.get("query")
        if not expr:
            raise BadData("invalid parameter \"query\": no query provided")
        for k in ("start", "end", "step"):
            if not p.get(k):
                raise BadData(f"invalid parameter \"{k}\": missing")
        start = parse_time_ms(p["start"])
        end = parse_time_ms(p["end"])
        if end < start:
            raise BadData("invalid parameter \"end\": end timestamp must not be before start time")
        step = parse_duration_param_ms(p["step"])
        if step <= 0:
            raise BadData(
                "invalid parameter \"step\": zero or negative query resolution step widths are not "
                "accepted. Try a positive integer"
            )
        if (end - start) // step > deps.max_points_per_series:
            raise BadData(
                f"exceeded maximum resolution of {deps.max_points_per_series:,} points per timeseries. "
                "Try decreasing the query resolution (?step=XX)"
            )
        steps = (end - start) // step + 1
        with _query_param_errors():
            res = await evaluate(tenant_of(request), expr, steps, lambda q: engine.range(q, expr, start, end, step),
                                 step)
        return Response(encode_response_body(res, stats=bool(p.get("stats"))), media_type="application/json")

    @_get_post(r, "/api/v1/series")
    async def series(request: Request) -> Response:
        p = await all_params(request)
        matches = p.getlist("match[]")
        if not matches:
            raise BadData("no match[] parameter provided")
        start, end = _time_range(p)
        limit = _limit(p)
        q = store.querier(tenant_of(request))
        sets = _matcher_sets(matches)

        def collect() -> list[Any]:
            seen: dict[Any, None] = {}
            for ms in sets:
                for lbl in q.series(ms, start, end):
                    seen[lbl] = None
            return sorted(seen)

        out = await run_in_threadpool(collect)  # matching many series must not hold up the event loop
        warnings = []
        if limit and len(out) > limit:
            out = out[:limit]
            warnings.append("results truncated due to limit")
        return _success([dict(lbl) for lbl in out], warnings)

    @_get_post(r, "/api/v1/labels")
    async def labels(request: Request) -> Response:
        p = await all_params(request)
        start, end = _time_range(p)
        q = store.querier(tenant_of(request))
        sets = _matcher_sets(p.getlist("match[]")) or [[]]

        def collect() -> list[str]:
            names: set[str] = set()
            for ms in sets:
                names.update(q.label_names(ms, start, end))
            return sorted(names)

        return _limited(await run_in_threadpool(collect), _limit(p))

    @r.get("/api/v1/label/{name}/values")
    async def label_values(name: str, request: Request) -> Response:
        p = await all_params(request)
        if name.startswith("U__"):
            name = _unescape_label(name)
        start, end = _time_range(p)
        q = store.querier(tenant_of(request))
        sets = _matcher_sets(p.getlist("match[]")) or [[]]

        def collect() -> list[str]:
            values: set[str] = set()
            for ms in sets:
                values.update(q.label_values(name, ms, start, end))
            return sorted(values)

        return _limited(await run_in_threadpool(collect), _limit(p))

    @_get_post(r, "/api/v1/format_query")
    async def format_query(request: Request) -> Response:
        p = await all_params(request)
        expr = p.get("query") or ""
        parse_promql(expr)  # raises the engine's parse error, as Prometheus does
        return _success(promql_parser.parse(expr).prettify())

    @r.get("/api/v1/metadata")
    async def metadata(request: Request) -> Response:
        p = await all_params(request)
        limit = _limit(p)
        metric = p.get("metric")
        md = store.metadata(tenant_of(request))
        out: dict[str, list[dict[str, str]]] = {}
        for name in sorted(md):
            if metric and name != metric:
                continue
            if limit and len(out) >= limit:
                break
            m = md[name]
            out[name] = [{"type": m.type, "help": m.help, "unit": m.unit}]
        return _success(out)

    @_get_post(r, "/api/v1/query_exemplars")
    async def query_exemplars(request: Request) -> Response:
        p = await all_params(request)
        expr = p.get("query")
        if not expr:
            raise BadData("invalid parameter \"query\": no query provided")
        start, end = _time_range(p)
        wanted = set(
            await run_in_threadpool(store.querier(tenant_of(request)).series, _selectors_of(expr), start, end)
        )
        groups: dict[Any, list[dict[str, Any]]] = {}
        for e in store.exemplars(tenant_of(request)):
            if e.labels in wanted and start <= e.ts <= end:
                groups.setdefault(e.labels, []).append(
                    {"labels": dict(e.exemplar_labels), "value": format_float(e.value), "timestamp": e.ts / 1000}
                )
        data = [{"seriesLabels": dict(k), "exemplars": v} for k, v in sorted(groups.items())]
        return _success(data)

    @r.get("/api/v1/targets", dependencies=[Depends(server_wide)])  # scrape targets are server-wide
    async def targets(request: Request) -> Response:
        state = request.query_params.get("state", "any")
        if deps.targets is None:
            return _success({"activeTargets": [], "droppedTargets": [], "droppedTargetCounts": {}})
        return _success(deps.targets.to_prometheus_targets_json(state))

    @r.get("/api/v1/status/buildinfo")
    async def buildinfo() -> Response:
        return _success({
            "version": "3.0.0",  # the Prometheus API level pitwall implements; Grafana keys features on it
            "revision": f"pitwall-{__version__}",
            "branch": "main",
            "buildUser": "pitwall",
            "buildDate": "",
            "goVersion": f"python{platform.python_version()}",
        })

    @r.get("/api/v1/status/runtimeinfo")
    async def runtimeinfo() -> Response:
        return _success({
            "startTime": datetime.fromtimestamp(deps.started_at, UTC).isoformat().replace("+00:00", "Z"),
            "CWD": str(os.getcwd()),
            "reloadConfigSuccess": True,
            "lastConfigTime": datetime.fromtimestamp(deps.started_at, UTC).isoformat().replace("+00:00", "Z"),
            "corruptionCount": 0,
            "goroutineCount": 0,
            "GOMAXPROCS": os.cpu_count() or 1,
            "GOGC": "",
            "GODEBUG": "",
            "storageRetention": deps.flags.get("storage.tsdb.retention.time", ""),
            "pythonVersion": sys.version.split()[0],
        })

    @r.get("/api/v1/status/flags")
    async def flags() -> Response:
        return _success(deps.flags)

    @r.get("/api/v1/status/tsdb")
    async def tsdb(request: Request) -> Response:
        tenant = tenant_of(request)
        return _success({
            "headStats": {"numSeries": store.num_series(tenant), "chunkCount": 0,
                          "minTime": 0, "maxTime": 0},
            "seriesCountByMetricName": [], "labelValueCountByLabelName": [],
            "memoryInBytesByLabelName": [], "seriesCountByLabelValuePair": [],
        })

    return r


@contextlib.contextmanager
def _query_param_errors() -> Iterator[None]:
    """Prometheus prefixes parse errors of the query parameter with its name."""
    try:
        yield
    except PromQLParseError as e:
        raise BadData(f'invalid parameter "query": {e.message}') from e


def _limited(items: list[str], limit: int) -> Response:
    if limit and len(items) > limit:
        return _success(items[:limit], ["results truncated due to limit"])
    return _success(items)


def _selectors_of(expr: str) -> list[Matcher]:
    # Exemplars are looked up for the series the expression selects; a full
    # expression is reduced to its first selector, as most callers pass one.
    try:
        return parse_matchers(expr)
    except BadData:
        m = re.search(r"[a-zA-Z_:][a-zA-Z0-9_:]*\s*(\{[^}]*\})?", expr)
        if not m:
            raise
        return parse_matchers(m.group(0))


def _unescape_label(name: str) -> str:
    # Prometheus' UTF-8 escaping for label names in URL paths: U__ then _xx_ hex runes.
    body = name[3:]
    return re.sub(r"_([0-9a-fA-F]+)_", lambda m: chr(int(m.group(1), 16)), body).replace("__", "_")


def ingest_router(deps: MetricsApiDeps) -> APIRouter:
    """Remote write (plain-text errors, as Prometheus answers)."""
    r = error_router("text", tags=["ingest"])

    @r.post("/api/v1/write", status_code=204)
    async def remote_write(request: Request) -> Response:
        rw = deps.remote_write
        async with read_body(request, BodyLimits.of(rw.limits), deps.inflight) as body:
            decoded = await body.in_thread(rw.decode, body.data, body.reservation)
            await rw.write(tenant_of(request), body.data, decoded)
        return Response(status_code=204)

    return r


def otlp_export(deps: MetricsApiDeps) -> Callable[[str, Body, str], Awaitable[bytes]]:
    """Tenant + an ExportMetricsServiceRequest body -> the encoded response (OTLP/HTTP and OTLP/gRPC alike).

    The body's bytes are already held in the in-flight budget; translation,
    the store's limits and ``partial_success`` are the same for both.
    """

    def translate(body: Body, ctype: str) -> OtlpMetricsResult:
        # The translator is thread-safe (its DELTA state has a lock).
        return deps.otlp.translate(deps.otlp.decode(body.decoded(), ctype), int(time.time() * 1000))

    async def export(tenant: str, body: Body, ctype: str) -> bytes:
        result = await body.in_thread(translate, body, ctype)
        if len(result.batch):
            await deps.store.append(tenant, result.batch)
        if result.metadata:
            await deps.store.append_metadata(tenant, result.metadata)
        if result.exemplars:
            await deps.store.append_exemplars(tenant, result.exemplars)
        return encode_response(result, _otlp_out_type(ctype))

    return export


def _otlp_out_type(ctype: str) -> str:
    return "application/json" if ctype.split(";")[0].strip() == "application/json" else "application/x-protobuf"


def otlp_router(deps: MetricsApiDeps) -> APIRouter:
    """OTLP/HTTP metrics: protobuf or JSON, answered in the request's encoding."""
    r = error_router("otlp", tags=["otlp"])
    export = otlp_export(deps)

    @r.post("/v1/metrics")
    async def otlp_metrics(request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        tenant = tenant_of(request)
        async with read_body(request, BodyLimits.of(deps.remote_write.limits), deps.inflight) as body:
            out = await export(tenant, body, ctype)
        return Response(out, media_type=_otlp_out_type(ctype))

    return r


__all__ = ["MetricsApiDeps", "ingest_router", "otlp_export", "otlp_router", "query_router"]
