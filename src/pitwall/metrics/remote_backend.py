"""Metrics on an existing Prometheus-API engine (``backends.metrics``).

Reads: ``RemoteEngine`` answers ``InstantQuery``/``RangeQuery`` (what rules,
SLOs, canaries, the HPA and the UI call) from the engine's ``/api/v1/query``
and ``/api/v1/query_range``; ``proxy_router`` passes the Prometheus HTTP API's
query, series and label endpoints through to it. A tenant other than
``default`` travels as ``X-Scope-OrgID`` (Mimir's, Cortex's and
VictoriaMetrics' vmauth convention).

Writes: pitwall acknowledges a write once it is in its own metrics WAL, as
without a backend. ``WalForwarder`` (a ``core.backends.ForwardQueue``) reads that WAL
from a position persisted in ``<wal dir>/forward.pos``, batches samples into
Prometheus remote-write requests (snappy protobuf), retries with back-off
while the engine is down and persists the position only after the engine
acknowledged; the store keeps the WAL segments the queue has not passed yet.
A kill -9 re-sends at most the batch in flight (engines keep one copy of an
identical sample). A 4xx other than 429 drops the batch, as Prometheus'
remote write does: a bad sample must not stall the queue forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import cramjam
import httpx
import numpy as np
from fastapi import APIRouter, Request, Response

from pitwall.core.backends import MAX_RESPONSE_BYTES, ForwardQueue, RemoteHTTP, tenant_headers
from pitwall.core.errors import BadData, ExecutionError, Unavailable
from pitwall.core.labels import Labels
from pitwall.core.tenancy import DEFAULT_TENANT
from pitwall.core.wal import Wal, WalRecord
from pitwall.metrics.ingest.prompb import WriteRequest
from pitwall.metrics.promql import QueryResult
from pitwall.storage.metrics.walrec import REC_SAMPLES, decode_samples

__all__ = ["RemoteEngine", "WalForwarder", "proxy_router"]

log = logging.getLogger(__name__)

PROXIED = ("/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/labels")


_headers = tenant_headers


def _points(raw: list[list[Any]]) -> tuple[np.ndarray, np.ndarray]:
    ts = np.array([round(float(t) * 1000) for t, _ in raw], dtype=np.int64)
    vals = np.array([float(v) for _, v in raw], dtype=np.float64)  # "NaN", "+Inf" parse as floats
    return ts, vals


def parse_query_data(data: Mapping[str, Any]) -> QueryResult:
    """A ``QueryResult`` from the ``data`` of Prometheus' /api/v1/query(_range) answer."""
    rt, res = data["resultType"], data["result"]
    if rt in ("scalar", "string"):
        t = np.array([round(float(res[0]) * 1000)], dtype=np.int64)
        if rt == "string":
            return QueryResult("string", timestamps=[t], string_value=str(res[1]))
        return QueryResult("scalar", [()], [t], [np.array([float(res[1])])])
    out = QueryResult(rt)
    for s in res:
        ts, vals = _points(s["values"] if rt == "matrix" else [s["value"]])
        out.series.append(tuple(sorted(s["metric"].items())))
        out.timestamps.append(ts)
        out.values.append(vals)
    return out


class RemoteEngine:
    """PromQL evaluated by a Prometheus-API engine: ``instant``/``range`` are an ``InstantQuery``/``RangeQuery``."""

    def __init__(self, query_url: str, headers: Mapping[str, str], timeout_s: float, *,
                 transport: httpx.BaseTransport | None = None,
                 async_transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = query_url
        self.headers = dict(headers)
        self.timeout = timeout_s
        self.http = RemoteHTTP("metrics", "prometheus-api", query_url, headers, timeout_s, transport=async_transport)
        self.health = self.http.health
        self.aclient = self.http.aclient
        self._client = httpx.Client(timeout=timeout_s, transport=transport)

    def instant(self, expr: str, at_ms: int, tenant: str = DEFAULT_TENANT) -> QueryResult:
        return self._query("/api/v1/query", {"query": expr, "time": f"{at_ms / 1000:.3f}"}, tenant)

    def range(self, expr: str, start_ms: int, end_ms: int, step_ms: int,
              tenant: str = DEFAULT_TENANT) -> QueryResult:
        params = {"query": expr, "start": f"{start_ms / 1000:.3f}", "end": f"{end_ms / 1000:.3f}",
                  "step": f"{step_ms / 1000:.3f}"}
        return self._query("/api/v1/query_range", params, tenant)

    def _query(self, path: str, params: dict[str, str], tenant: str) -> QueryResult:
        try:
            r = self._client.post(self.url + path, data=params, headers=_headers(self.headers, tenant))
        except httpx.HTTPError as e:
            raise self.unreachable(e) from None
        body = self._json(r)
        if r.status_code >= 500 and body.get("errorType") not in ("execution", "timeout"):
            raise self.unreachable(f"HTTP {r.status_code}")
        self.health.ok()
        if body.get("status") != "success":
            msg = f"{self.health.name}: {body.get('error', r.text[:200])}"
            raise BadData(msg) if r.status_code == 400 else ExecutionError(msg)
        result = parse_query_data(body["data"])
        result.warnings.extend(body.get("warnings") or [])
        return result

    def _json(self, r: httpx.Response) -> dict[str, Any]:
        if len(r.content) > MAX_RESPONSE_BYTES:
            raise ExecutionError(f"{self.health.name}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            body = r.json()
        except ValueError:
            raise self.unreachable(f"HTTP {r.status_code}, not JSON: {r.text[:200]!r}") from None
        if not isinstance(body, dict):
            raise self.unreachable("answer is not a JSON object")
        return body

    def unreachable(self, why: object) -> Unavailable:
        return self.http.unreachable(why)

    async def relay(self, request: Request, path: str) -> Response:
        """Pass one Prometheus API request through to the engine and its answer back."""
        return await self.http.relay(request, path)

    async def probe(self) -> None:
        """Ask the engine a trivial query; updates ``health``."""
        await self.http.probe("/api/v1/query", {"query": "1"})

    async def aclose(self) -> None:
        self._client.close()
        await self.http.aclose()


def proxy_router(engine: RemoteEngine) -> APIRouter:
    """The Prometheus API's query, series and label endpoints, answered by the engine."""
    from pitwall.core.http_errors import error_router

    r = error_router("prometheus", tags=["prometheus"])

    def add(path: str) -> None:
        async def handler(request: Request) -> Response:
            return await engine.relay(request, path)

        r.add_api_route(path, handler, methods=["GET", "POST"], include_in_schema=False)

    for p in PROXIED:
        add(p)

    @r.get("/api/v1/label/{name}/values", include_in_schema=False)
    async def label_values(name: str, request: Request) -> Response:
        return await engine.relay(request, f"/api/v1/label/{name}/values")

    return r


def encode_write_request(labels_of: Callable[[int], Labels],
                         chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> bytes:
    """A snappy-compressed remote-write ``WriteRequest`` of (sids, timestamps, values) columns."""
    sid = np.concatenate([c[0] for c in chunks])
    ts = np.concatenate([c[1] for c in chunks])
    val = np.concatenate([c[2] for c in chunks])
    order = np.lexsort((ts, sid))
    sid, ts, val = sid[order], ts[order], val[order]
    req = WriteRequest()
    bounds = np.flatnonzero(np.diff(sid)) + 1
    for lo, hi in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(sid)].tolist(), strict=True):
        series = req.timeseries.add()
        for k, v in labels_of(int(sid[lo])):
            series.labels.add(name=k, value=v)
        for t, v in zip(ts[lo:hi].tolist(), val[lo:hi].tolist(), strict=True):
            series.samples.add(value=v, timestamp=t)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


class WalForwarder(ForwardQueue):
    """The metrics forwarding queue: samples records of the metrics WAL as remote-write requests."""

    def __init__(self, wal: Wal, labels_of: Callable[[int], Labels], write_url: str,
                 headers: Mapping[str, str], timeout_s: float, batch_samples: int,
                 engine: RemoteEngine | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(wal, "metrics", "prometheus-api", write_url, headers, timeout_s, batch_samples,
                         probe=engine.probe if engine else None, probe_health=engine.health if engine else None,
                         transport=transport)
        self.labels_of = labels_of
        self.engine = engine

    @property
    def sent_samples(self) -> int:
        return self.sent

    @property
    def dropped_samples(self) -> int:
        return self.dropped

    def decode(self, rec: WalRecord) -> tuple[str, Any, int] | None:
        if rec.type != REC_SAMPLES:
            return None
        tenant, _new, s, t, v = decode_samples(rec.payload)
        return tenant, (s, t, v), len(s)

    async def send(self, tenant: str, chunks: list[Any]) -> None:
        body = await asyncio.to_thread(encode_write_request, self.labels_of, chunks)
        headers = tenant_headers({}, tenant) | {
            "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0", "User-Agent": "pitwall-forwarder"}
        await self.post(body, headers, sum(len(c[0]) for c in chunks))

    async def stop(self) -> None:
        await super().stop()
        if self.engine is not None:
            await self.engine.aclose()
