"""Metrics on an existing Prometheus-API engine (``backends.metrics``).

Reads: ``RemoteEngine`` answers ``InstantQuery``/``RangeQuery`` (what rules,
SLOs, canaries, the HPA and the UI call) from the engine's ``/api/v1/query``
and ``/api/v1/query_range``; ``proxy_router`` passes the Prometheus HTTP API's
query, series and label endpoints through to it. A tenant other than
``default`` travels as ``X-Scope-OrgID`` (Mimir's, Cortex's and
VictoriaMetrics' vmauth convention).

Writes: pitwall acknowledges a write once it is in its own metrics WAL, as
without a backend. ``WalForwarder`` is the forwarding queue: it reads that WAL
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
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cramjam
import httpx
import numpy as np
from fastapi import APIRouter, Request, Response

from pitwall.core.errors import BadData, ExecutionError, Unavailable
from pitwall.core.labels import Labels
from pitwall.core.tasks import Supervisor
from pitwall.core.tenancy import DEFAULT_TENANT
from pitwall.core.wal import Wal
from pitwall.metrics.ingest.prompb import WriteRequest
from pitwall.metrics.promql import QueryResult
from pitwall.storage.metrics.walrec import REC_SAMPLES, decode_samples

__all__ = ["RemoteEngine", "WalForwarder", "proxy_router"]

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 256 << 20  # an engine's answer pitwall parses or relays
MAX_RELAY_BODY = 4 << 20  # a relayed query's form body (PromQL and match[] selectors)
PROXIED = ("/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/labels")


def _headers(base: Mapping[str, str], tenant: str) -> dict[str, str]:
    out = dict(base)
    if tenant != DEFAULT_TENANT:
        out["X-Scope-OrgID"] = tenant
    return out


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


@dataclass
class BackendHealth:
    """The engine's last known state, for ``/-/ready``: None when fine, else why not."""

    name: str
    problem: str | None = None

    def failed(self, why: str) -> None:
        self.problem = f"metrics backend {self.name} is down: {why}"

    def ok(self) -> None:
        self.problem = None


class RemoteEngine:
    """PromQL evaluated by a Prometheus-API engine: ``instant``/``range`` are an ``InstantQuery``/``RangeQuery``."""

    def __init__(self, query_url: str, headers: Mapping[str, str], timeout_s: float, *,
                 transport: httpx.BaseTransport | None = None,
                 async_transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = query_url
        self.headers = dict(headers)
        self.timeout = timeout_s
        self.health = BackendHealth(f"prometheus-api at {query_url}")
        self._client = httpx.Client(timeout=timeout_s, transport=transport)
        self.aclient = httpx.AsyncClient(timeout=timeout_s, transport=async_transport)

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
        self.health.failed(str(why) or type(why).__name__)
        return Unavailable(f"{self.health.problem}")

    async def relay(self, request: Request, path: str) -> Response:
        """Pass one Prometheus API request through to the engine and its answer back."""
        from pitwall.core.params import tenant_of

        headers = _headers(self.headers, tenant_of(request))
        ctype = request.headers.get("content-type")
        if ctype:
            headers["Content-Type"] = ctype
        body = await request.body()
        if len(body) > MAX_RELAY_BODY:
            raise BadData(f"request body larger than {MAX_RELAY_BODY} bytes")
        try:
            r = await self.aclient.request(request.method, self.url + path, params=request.query_params,
                                           content=body, headers=headers)
        except httpx.HTTPError as e:
            raise self.unreachable(e) from None
        if r.status_code in (502, 503, 504):
            raise self.unreachable(f"HTTP {r.status_code}")
        self.health.ok()
        if len(r.content) > MAX_RESPONSE_BYTES:
            raise ExecutionError(f"{self.health.name}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        return Response(r.content, status_code=r.status_code,
                        media_type=r.headers.get("content-type", "application/json"))

    async def probe(self) -> None:
        """Ask the engine a trivial query; updates ``health``."""
        try:
            r = await self.aclient.get(self.url + "/api/v1/query", params={"query": "1"}, headers=self.headers)
            if r.status_code >= 500:
                self.health.failed(f"HTTP {r.status_code}")
            else:
                self.health.ok()
        except httpx.HTTPError as e:
            self.health.failed(str(e) or type(e).__name__)

    async def aclose(self) -> None:
        self._client.close()
        await self.aclient.aclose()


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


@dataclass
class _Batch:
    """Samples read from the WAL and not yet acknowledged by the engine, per tenant."""

    by_tenant: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=dict)
    samples: int = 0
    end: tuple[int, int] | None = None  # WAL position after the last record read


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


class WalForwarder:
    """The forwarding queue: the metrics WAL, from a persisted position, to a remote-write endpoint."""

    name = "metrics-forwarder"
    POLL_S = 0.2
    MAX_BACKOFF_S = 10.0

    def __init__(self, wal: Wal, labels_of: Callable[[int], Labels], write_url: str,
                 headers: Mapping[str, str], timeout_s: float, batch_samples: int,
                 engine: RemoteEngine | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.wal = wal
        self.transport = transport
        self.labels_of = labels_of
        self.write_url = write_url
        self.headers = dict(headers)
        self.timeout = timeout_s
        self.batch_samples = batch_samples
        self.engine = engine
        self.pos_file = wal.dir / "forward.pos"
        self.pos = self._load()
        self.health = BackendHealth(f"prometheus-api at {write_url}")
        self.tasks = Supervisor("metrics-forwarder")
        self.sent_samples = 0
        self.dropped_samples = 0
        self.failures = 0
        self._client: httpx.AsyncClient | None = None

    # -- position ----------------------------------------------------------------

    def _load(self) -> tuple[int, int]:
        try:
            seg, off = json.loads(self.pos_file.read_text())
            return int(seg), int(off)
        except FileNotFoundError:
            segs = self.wal.segments()
            return (segs[0] if segs else 1), 0

    def _save(self, pos: tuple[int, int]) -> None:
        tmp = self.pos_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(list(pos)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.pos_file)
        fd = os.open(self.pos_file.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def keep_from(self) -> int:
        """The oldest WAL segment the queue still needs (the store keeps it)."""
        return self.pos[0]

    # -- reading -----------------------------------------------------------------

    def _read(self) -> _Batch:
        """Whole WAL records from the position until ``batch_samples`` samples (runs in a thread)."""
        batch = _Batch()
        seg, off = self.pos
        while batch.samples < self.batch_samples:
            got = False
            for end, rec in self.wal.read_from(seg, off, max_bytes=8 << 20):
                got = True
                off = end
                batch.end = (seg, off)
                if rec.type != REC_SAMPLES:
                    continue
                tenant, _new, s, t, v = decode_samples(rec.payload)
                if len(s):
                    batch.by_tenant.setdefault(tenant, []).append((s, t, v))
                    batch.samples += len(s)
                if batch.samples >= self.batch_samples:
                    break
            if got:
                continue
            later = [s for s in self.wal.segments() if s > seg]
            if not later:
                break
            seg, off = later[0], 0  # the writer moved on: the rest of this segment is never written
            batch.end = (seg, off)
        return batch

    # -- sending -----------------------------------------------------------------

    async def _send(self, tenant: str, chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        body = await asyncio.to_thread(encode_write_request, self.labels_of, chunks)
        n = sum(len(c[0]) for c in chunks)
        headers = _headers(self.headers, tenant) | {
            "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0", "User-Agent": "pitwall-forwarder"}
        assert self._client is not None
        r = await self._client.post(self.write_url, content=body, headers=headers)
        if r.status_code >= 500 or r.status_code == 429:
            raise httpx.HTTPStatusError(f"HTTP {r.status_code}: {r.text[:200]}", request=r.request, response=r)
        if r.status_code >= 400:
            self.dropped_samples += n
            log.error("metrics backend refused a batch; dropped",
                      extra={"status": r.status_code, "samples": n, "error": r.text[:500]})
            return
        self.sent_samples += n

    async def step(self) -> bool:
        """Forward one batch; True when there was something to forward."""
        batch = await asyncio.to_thread(self._read)
        if batch.end is None:
            return False
        for tenant, chunks in batch.by_tenant.items():
            for i in range(0, len(chunks), 64):  # bounded request size: records hold <= batch_samples
                await self._send(tenant, chunks[i : i + 64])
        await asyncio.to_thread(self._save, batch.end)
        self.pos = batch.end
        return True

    async def run(self) -> None:
        backoff = 0.25
        last_probe = 0.0
        while True:
            try:
                busy = await self.step()
                self.health.ok()
                backoff = 0.25
            except (httpx.HTTPError, OSError) as e:
                self.failures += 1
                self.health.failed(str(e) or type(e).__name__)
                log.warning("metrics forwarding failed; retrying", extra={"error": str(e), "in_s": backoff})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.MAX_BACKOFF_S)
                continue
            if not busy:
                if self.engine is not None and time.monotonic() - last_probe > 5:
                    last_probe = time.monotonic()
                    await self.engine.probe()
                await asyncio.sleep(self.POLL_S)

    def pending_segments(self) -> int:
        return sum(1 for s in self.wal.segments() if s >= self.pos[0])

    # -- Component ---------------------------------------------------------------

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout, transport=self.transport)
        self.tasks.spawn(self.run(), name="forward")

    async def stop(self) -> None:
        await self.tasks.stop()
        if self._client is not None:
            await self._client.aclose()
        if self.engine is not None:
            await self.engine.aclose()

    def problems(self) -> list[str]:
        out = [h.problem for h in (self.health, self.engine.health if self.engine else None)
               if h is not None and h.problem]
        return list(dict.fromkeys(out))

