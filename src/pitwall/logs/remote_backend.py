"""Logs on an existing Loki-API engine (``backends.logs``, type ``loki-api``).

Writes: pitwall acknowledges a push once it is in its own logs WAL, as
without a backend (the local copy stays, so live tail and trace-to-logs keep
working and the engine may be down). ``LokiForwarder`` is the forwarding
queue (``core.backends.ForwardQueue``): every WAL record, whatever path
ingested it (Loki push, OTLP, syslog, ``_bulk``, pod logs), goes to the
engine's push endpoint as a snappy ``logproto.PushRequest``, the tenant as
``X-Scope-OrgID``.

Reads: ``proxy_router`` passes Loki's read API through to the engine;
``RemoteLogSource`` is the ``LogSource`` the ruler (LogQL rules), the UI and
incidents read: its queriers ask the engine's HTTP API for streams, series
and labels, and pitwall's LogQL engine evaluates on what they return.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cramjam
import httpx
import numpy as np
import pyarrow as pa
from fastapi import APIRouter, Request, Response

from pitwall.core.backends import MAX_RESPONSE_BYTES, ForwardQueue, RemoteHTTP, tenant_headers
from pitwall.core.errors import BadData, ExecutionError
from pitwall.core.labels import Labels, format_labels
from pitwall.core.wal import Wal, WalRecord
from pitwall.logs.ingest import logproto
from pitwall.logs.model import Direction, LineFilter, LogBatch, LogStream, Matcher, Metadata, decode_metadata
from pitwall.storage.logs_store import REC_ENTRIES, decode_wal_record

__all__ = ["LokiForwarder", "RemoteLogQuerier", "RemoteLogSource", "proxy_router"]

log = logging.getLogger(__name__)

TYPE = "loki-api"
# Loki's read API, relayed as is (GET and form POST).
PROXIED = ("/loki/api/v1/query", "/loki/api/v1/query_range", "/loki/api/v1/labels", "/loki/api/v1/series",
           "/loki/api/v1/index/stats", "/loki/api/v1/index/volume", "/loki/api/v1/index/volume_range",
           "/loki/api/v1/detected_labels", "/loki/api/v1/detected_fields", "/loki/api/v1/patterns")
PROXIED_NAMED = ("/loki/api/v1/label/{name}/values", "/loki/api/v1/detected_field/{name}/values")
PAGE = 5000  # entries per query_range page: Loki's default max_entries_limit_per_query
MAX_SCAN_ENTRIES = 1_000_000  # a metric query evaluated here reads every matching line from the engine
CATEGORIZE = {"X-Loki-Response-Encoding-Flags": "categorize-labels"}  # structured metadata apart from labels


# -- writes ------------------------------------------------------------------------


def encode_push(labels_of: Callable[[int], Labels], batches: list[pa.RecordBatch]) -> tuple[bytes, int]:
    """A snappy ``logproto.PushRequest`` of WAL record batches (entries in WAL order per stream)."""
    req = logproto.PushRequest()
    streams: dict[int, Any] = {}
    n = 0
    for b in batches:
        sids = b.column(0).to_numpy()
        ts = b.column(1).to_numpy()
        lines = b.column(2).to_pylist()
        mds = b.column(3).to_pylist()
        for i, sid in enumerate(sids.tolist()):
            st = streams.get(sid)
            if st is None:
                st = streams[sid] = req.streams.add(labels=format_labels(labels_of(sid)))
            e = st.entries.add(line=lines[i])
            t = int(ts[i])
            e.timestamp.seconds, e.timestamp.nanos = divmod(t, 1_000_000_000)
            for k, v in decode_metadata(mds[i]):
                e.structuredMetadata.add(name=k, value=v)
            n += 1
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString())), n


class LokiForwarder(ForwardQueue):
    """The logs WAL, from a persisted position, to a Loki push endpoint."""

    def __init__(self, wal: Wal, labels_of: Callable[[int], Labels], push_url: str, headers: Mapping[str, str],
                 timeout_s: float, batch_entries: int, remote: RemoteLogSource | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(wal, "logs", TYPE, push_url, headers, timeout_s, batch_entries,
                         probe=remote.probe if remote else None, probe_health=remote.http.health if remote else None,
                         transport=transport)
        self.labels_of = labels_of
        self.remote = remote

    def decode(self, rec: WalRecord) -> tuple[str, Any, int] | None:
        if rec.type != REC_ENTRIES:
            return None
        tenant, _new, batch = decode_wal_record(rec.payload)
        return tenant, batch, batch.num_rows

    async def send(self, tenant: str, chunks: list[Any]) -> None:
        body, n = await asyncio.to_thread(encode_push, self.labels_of, chunks)
        headers = tenant_headers({}, tenant) | {"Content-Type": "application/x-protobuf",
                                                "User-Agent": "pitwall-forwarder"}
        await self.post(body, headers, n)

    async def stop(self) -> None:
        await super().stop()
        if self.remote is not None:
            await self.remote.aclose()


# -- reads -------------------------------------------------------------------------


def _quote(s: str) -> str:
    """A LogQL string literal: raw (backticks) when possible, as regexes are usually written."""
    return f"`{s}`" if "`" not in s else json.dumps(s)


def logql_of(matchers: Sequence[Matcher], filters: Sequence[LineFilter] = ()) -> str:
    """``{a="1"} |= `x``` for a selector and line filters."""
    sel = "{" + ", ".join(str(m) for m in matchers) + "}"
    return sel + "".join(f" {f.op.value} {_quote(f.pattern)}" for f in filters)


def _metadata(v: list[Any]) -> Metadata:
    if len(v) < 3 or not isinstance(v[2], dict):
        return ()
    md = v[2].get("structuredMetadata") or {}
    return tuple(sorted((str(k), str(x)) for k, x in md.items()))


class RemoteLogQuerier:
    """One tenant's logs read from a Loki-API engine (an ``IndexedLogQuerier``)."""

    def __init__(self, source: RemoteLogSource, tenant: str) -> None:
        self.src = source
        self.tenant = tenant

    def _get(self, path: str, params: dict[str, Any], extra: Mapping[str, str] | None = None) -> Any:
        return self.src.get(path, params, self.tenant, extra)

    def _page(self, expr: str, start: int, end: int, direction: Direction, limit: int) -> list[dict[str, Any]]:
        data = self._get("/loki/api/v1/query_range", {"query": expr, "start": str(start), "end": str(end),
                                                      "direction": direction.value, "limit": str(limit)},
                         CATEGORIZE)
        if data.get("resultType") != "streams":
            raise ExecutionError(f"{self.src.http.health.name}: expected streams, got {data.get('resultType')}")
        return list(data["result"])

    def _entries(self, expr: str, start: int, end: int, direction: Direction,
                 limit: int | None) -> list[tuple[Labels, int, str, Metadata]]:
        """Entries in [start, end) in ``direction`` order, paged by time (Loki's own client does the same)."""
        out: list[tuple[Labels, int, str, Metadata]] = []
        seen_at_edge: set[tuple[Labels, str]] = set()
        lo, hi = start, end
        while lo < hi and (limit is None or len(out) < limit):
            if len(out) > MAX_SCAN_ENTRIES:
                raise ExecutionError(f"{self.src.http.health.name}: more than {MAX_SCAN_ENTRIES} matching entries "
                                     "to read from the engine; narrow the selector or the range")
            want = PAGE if limit is None else min(PAGE, limit - len(out) + len(seen_at_edge))
            got: list[tuple[Labels, int, str, Metadata]] = []
            for st in self._page(expr, lo, hi, direction, want):
                lbl = tuple(sorted((str(k), str(v)) for k, v in st["stream"].items()))
                got += [(lbl, int(v[0]), str(v[1]), _metadata(v)) for v in st["values"]]
            got.sort(key=lambda e: e[1], reverse=direction == Direction.BACKWARD)
            edge = (lo if direction == Direction.FORWARD else hi - 1)
            fresh = [e for e in got if not (e[1] == edge and (e[0], e[2]) in seen_at_edge)]
            out += fresh
            if len(got) < want or not fresh:
                break
            edge = got[-1][1]  # the next page starts at the last timestamp seen (ties are skipped there)
            seen_at_edge = {(e[0], e[2]) for e in got if e[1] == edge}
            if direction == Direction.FORWARD:
                lo = edge
            else:
                hi = edge + 1
        return out if limit is None else out[:limit]

    def select(self, matchers: Sequence[Matcher], start_ns: int, end_ns: int, *, filters: Sequence[LineFilter] = (),
               direction: Direction = Direction.BACKWARD, limit: int | None = None) -> list[LogStream]:
        by: dict[Labels, list[tuple[int, str, Metadata]]] = {}
        for lbl, ts, line, md in self._entries(logql_of(matchers, filters), start_ns, end_ns, direction, limit):
            by.setdefault(lbl, []).append((ts, line, md))
        out = []
        for lbl, ents in by.items():
            ents.sort(key=lambda e: e[0], reverse=direction == Direction.BACKWARD)
            out.append(LogStream(lbl, np.array([e[0] for e in ents], dtype=np.int64), [e[1] for e in ents],
                                 [e[2] for e in ents]))
        return out

    def scan(self, matchers: Sequence[Matcher], start_ns: int, end_ns: int, *, filters: Sequence[LineFilter] = (),
             with_lines: bool = True, with_metadata: bool = False) -> LogBatch:
        ents = self._entries(logql_of(matchers, filters), start_ns, end_ns, Direction.FORWARD, None)
        streams = sorted({e[0] for e in ents})
        index = {s: i for i, s in enumerate(streams)}
        ents.sort(key=lambda e: (index[e[0]], e[1]))
        return LogBatch(
            streams=streams,
            stream_idx=np.array([index[e[0]] for e in ents], dtype=np.int64),
            ts_ns=np.array([e[1] for e in ents], dtype=np.int64),
            line_bytes=np.array([len(e[2].encode()) for e in ents], dtype=np.int64),
            lines=[e[2] for e in ents] if with_lines else None,
            metadata=[e[3] for e in ents] if with_metadata else None,
        )

    def series(self, matchers: Sequence[Matcher], start_ns: int, end_ns: int) -> list[Labels]:
        data = self._get("/loki/api/v1/series", {"match[]": logql_of(matchers), "start": str(start_ns),
                                                 "end": str(end_ns)})
        return [tuple(sorted((str(k), str(v)) for k, v in s.items())) for s in data]

    def label_names(self, start_ns: int, end_ns: int) -> list[str]:
        return list(self._get("/loki/api/v1/labels", {"start": str(start_ns), "end": str(end_ns)}) or [])

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ns: int, end_ns: int) -> list[str]:
        params = {"start": str(start_ns), "end": str(end_ns)}
        if matchers:
            params["query"] = logql_of(matchers)
        return list(self._get(f"/loki/api/v1/label/{name}/values", params) or [])

    def stats(self, matchers: Sequence[Matcher], start_ns: int, end_ns: int) -> dict[str, int]:
        data = self.src.get("/loki/api/v1/index/stats", {"query": logql_of(matchers), "start": str(start_ns),
                                                         "end": str(end_ns)}, self.tenant, raw=True)
        return {k: int(data.get(k, 0)) for k in ("streams", "chunks", "bytes", "entries")}

    def volume(self, matchers: Sequence[Matcher], start_ns: int, end_ns: int,
               target: Sequence[str] | None = None) -> list[tuple[Labels, int]]:
        params = {"query": logql_of(matchers), "start": str(start_ns), "end": str(end_ns)}
        if target:
            params["targetLabels"] = ",".join(target)
        data = self._get("/loki/api/v1/index/volume", params)
        return [(tuple(sorted((str(k), str(v)) for k, v in r["metric"].items())), int(r["value"][1]))
                for r in data.get("result", [])]

    def by_trace_id(self, trace_id: str, start_ns: int, end_ns: int, limit: int) -> list[LogStream]:
        expr = '{service_name=~".+"} | trace_id=' + json.dumps(trace_id)
        data = self._page(expr, start_ns, end_ns, Direction.FORWARD, limit)
        out = []
        for st in data:
            lbl = tuple(sorted((str(k), str(v)) for k, v in st["stream"].items()))
            vals = st["values"]
            out.append(LogStream(lbl, np.array([int(v[0]) for v in vals], dtype=np.int64),
                                 [str(v[1]) for v in vals], [_metadata(v) for v in vals]))
        return out


class RemoteLogSource:
    """The ``LogSource`` of a Loki-API engine: per-tenant ``RemoteLogQuerier``s, the relay and the probe."""

    def __init__(self, query_url: str, headers: Mapping[str, str], timeout_s: float, *,
                 transport: httpx.BaseTransport | None = None,
                 async_transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.http = RemoteHTTP("logs", TYPE, query_url, headers, timeout_s, transport=async_transport)
        self._client = httpx.Client(timeout=timeout_s, transport=transport)

    def querier(self, tenant: str) -> RemoteLogQuerier:
        return RemoteLogQuerier(self, tenant)

    def get(self, path: str, params: dict[str, Any], tenant: str, extra: Mapping[str, str] | None = None, *,
            raw: bool = False) -> Any:
        """``data`` of a Loki JSON answer (the whole body with ``raw``); 503 naming the engine when down."""
        h = self.http
        try:
            r = self._client.get(h.url + path, params=params, headers=tenant_headers(h.headers, tenant) | dict(
                extra or {}))
        except httpx.HTTPError as e:
            raise h.unreachable(e) from None
        if r.status_code in (502, 503, 504):
            raise h.unreachable(f"HTTP {r.status_code}")
        h.health.ok()
        if len(r.content) > MAX_RESPONSE_BYTES:
            raise ExecutionError(f"{h.health.name}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        if r.status_code >= 400:
            msg = f"{h.health.name}: {r.text[:500].strip()}"
            raise BadData(msg) if r.status_code == 400 else ExecutionError(msg)
        try:
            body = r.json()
        except ValueError:
            raise h.unreachable(f"HTTP {r.status_code}, not JSON: {r.text[:200]!r}") from None
        if raw:
            return body
        if not isinstance(body, dict) or "data" not in body:
            raise ExecutionError(f"{h.health.name}: answer without data")
        return body["data"]

    async def probe(self) -> None:
        await self.http.probe("/loki/api/v1/labels")

    async def aclose(self) -> None:
        self._client.close()
        await self.http.aclose()


def proxy_router(source: RemoteLogSource) -> APIRouter:
    """Loki's read API answered by the engine (plain-text errors, as Loki's)."""
    from pitwall.core.http_errors import error_router

    r = error_router("text", tags=["loki"])

    def add(path: str) -> None:
        async def handler(request: Request) -> Response:
            return await source.http.relay(request, request.url.path)

        r.add_api_route(path, handler, methods=["GET", "POST"], include_in_schema=False)

    for p in (*PROXIED, *PROXIED_NAMED):
        add(p)
    return r
