"""Traces on an existing OTLP + Tempo-API engine (``backends.traces``, type ``otlp+tempo``).

Writes: pitwall acknowledges spans once they are in its own traces WAL, as
without a backend; ``OtlpForwarder`` (a ``core.backends.ForwardQueue``)
sends every WAL record, whatever protocol brought it (OTLP/HTTP, OTLP/gRPC,
Zipkin, Jaeger), to the engine's OTLP/HTTP endpoint as protobuf
``ExportTraceServiceRequest``s, the tenant as ``X-Scope-OrgID``.

Reads: ``proxy_router`` passes Tempo's query API (trace by id v1 for
protobuf clients and v2, search, tags, tag values) through to the engine.
Jaeger's, Zipkin's and pitwall's native trace reads, the UI, incidents,
trace-to-logs and span metrics keep reading the local copy: those APIs have
no counterpart on a Tempo engine, and the local copy holds every span
pitwall ingested.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx
import pyarrow as pa
from fastapi import APIRouter, Request, Response

from pitwall.core.backends import ForwardQueue, RemoteHTTP, tenant_headers
from pitwall.core.wal import Wal, WalRecord
from pitwall.storage.traces_store import REC_SPANS, decode_wal_record
from pitwall.traces.model import rows_of
from pitwall.traces.render import to_otlp_proto

__all__ = ["OtlpForwarder", "RemoteTempo", "proxy_router"]

TYPE = "otlp+tempo"
PROXIED = ("/api/search", "/api/search/tags", "/api/v2/search/tags")
PROXIED_NAMED = ("/api/v2/traces/{trace_id}", "/api/search/tag/{tag}/values", "/api/v2/search/tag/{tag}/values")


def encode_export(tables: list[pa.Table]) -> tuple[bytes, int]:
    """An OTLP ``ExportTraceServiceRequest`` (the same wire form as ``TracesData``) of WAL span tables."""
    rows = rows_of(pa.concat_tables(tables))
    return to_otlp_proto(rows), len(rows)


class RemoteTempo:
    """The engine's Tempo API: relay and probe."""

    def __init__(self, query_url: str, headers: Mapping[str, str], timeout_s: float, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.http = RemoteHTTP("traces", TYPE, query_url, headers, timeout_s, transport=transport)

    async def relay(self, request: Request, path: str) -> Response:
        return await self.http.relay(request, path)

    async def probe(self) -> None:
        await self.http.probe("/api/echo")

    async def aclose(self) -> None:
        await self.http.aclose()


class OtlpForwarder(ForwardQueue):
    """The traces WAL, from a persisted position, to an OTLP/HTTP traces endpoint."""

    def __init__(self, wal: Wal, otlp_url: str, headers: Mapping[str, str], timeout_s: float, batch_spans: int,
                 remote: RemoteTempo | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(wal, "traces", TYPE, otlp_url, headers, timeout_s, batch_spans,
                         probe=remote.probe if remote else None, probe_health=remote.http.health if remote else None,
                         transport=transport)
        self.remote = remote

    def decode(self, rec: WalRecord) -> tuple[str, Any, int] | None:
        if rec.type != REC_SPANS:
            return None
        table = decode_wal_record(rec.payload)
        if not table.num_rows:
            return None
        return str(table.column("tenant")[0].as_py()), table, table.num_rows  # one record: one tenant's batch

    async def send(self, tenant: str, chunks: list[Any]) -> None:
        body, n = await asyncio.to_thread(encode_export, chunks)
        headers = tenant_headers({}, tenant) | {"Content-Type": "application/x-protobuf",
                                                "User-Agent": "pitwall-forwarder"}
        await self.post(body, headers, n)

    async def stop(self) -> None:
        await super().stop()
        if self.remote is not None:
            await self.remote.aclose()


def proxy_router(remote: RemoteTempo) -> APIRouter:
    """Tempo's query API answered by the engine (plain-text errors, as Tempo's)."""
    from pitwall.core.http_errors import error_router

    r = error_router("text", tags=["tempo"])

    def add(path: str) -> None:
        async def handler(request: Request) -> Response:
            return await remote.relay(request, request.url.path)

        r.add_api_route(path, handler, methods=["GET"], include_in_schema=False)

    for p in (*PROXIED, *PROXIED_NAMED):
        add(p)
    return r
