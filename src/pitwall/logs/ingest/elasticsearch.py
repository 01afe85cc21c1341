"""The Elasticsearch ``_bulk`` subset log shippers use (rsyslog omelasticsearch, Fluent Bit, Vector...).

``index`` and ``create`` actions with NDJSON sources become log entries: the
line is the document as sent, the stream labels are ``index`` (the target
index) plus configured document fields, the timestamp is the first parsable
timestamp field. The response is Elasticsearch's per-item format, with
``errors: true`` and a per-item ``error`` for documents that were refused.
Served at ``/_bulk`` and under ``/elasticsearch`` (``/elasticsearch/_bulk``,
``/elasticsearch/<index>/_bulk``, ``GET /elasticsearch/`` for version probes).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from pitwall.core.body import Body, BodyLimits, read_body
from pitwall.core.errors import BadData
from pitwall.core.http_errors import error_router
from pitwall.core.params import tenant_of
from pitwall.logs.labels import canonical, sanitize_name
from pitwall.logs.model import EntryColumns, Labels
from pitwall.logs.settings import ElasticsearchSettings

ES_VERSION = "8.11.0"
_ACTIONS = ("index", "create", "update", "delete")


@dataclass
class BulkItem:
    action: str
    index: str
    doc_id: str
    error: dict[str, Any] | None = None
    status: int = 201


@dataclass
class BulkRequest:
    items: list[BulkItem] = field(default_factory=list)
    cols: EntryColumns | None = None
    entry_item: list[int] = field(default_factory=list)  # entry i belongs to items[entry_item[i]]


def _lookup(doc: dict[str, Any], path: str) -> Any:
    if path in doc:
        return doc[path]
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def parse_timestamp(v: Any) -> int | None:
    """RFC 3339 / ISO 8601 text or epoch milliseconds -> ns; None when unparsable or past int64 nanoseconds."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        if not math.isfinite(v):
            return None
        ns = int(v * 1_000_000)
    elif not isinstance(v, str) or not v:
        return None
    else:
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None
        ns = int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
    return ns if -(1 << 63) <= ns < 1 << 63 else None


class BulkDecoder:
    """Turns a ``_bulk`` NDJSON body into entries plus the per-item bookkeeping for the answer."""

    def __init__(self, settings: ElasticsearchSettings) -> None:
        self.settings = settings

    def decode(self, body: bytes, default_index: str | None, now_ns: int | None = None) -> BulkRequest:
        now_ns = time.time_ns() if now_ns is None else now_ns
        req = BulkRequest()
        streams: dict[Labels, int] = {}
        idx: list[int] = []
        ts: list[int] = []
        lines: list[str] = []
        raw_lines = body.split(b"\n")
        i = 0
        seq = 0
        while i < len(raw_lines):
            raw = raw_lines[i].strip()
            i += 1
            if not raw:
                continue
            action, meta = self._action(raw, i)
            index = str(meta.get("_index") or default_index or "")
            seq += 1
            doc_id = str(meta.get("_id") or f"pitwall-{now_ns}-{seq}")
            item = BulkItem(action, index, doc_id)
            req.items.append(item)
            if action == "delete":
                item.status, item.error = 400, _err("illegal_argument_exception",
                                                    "pitwall stores logs append-only: delete is not supported")
                continue
            if i >= len(raw_lines) or not raw_lines[i].strip():
                raise BadData(f"The bulk request must be terminated by a newline [\\n]; action on line {i} has "
                              "no source")
            src = raw_lines[i].strip()
            i += 1
            if action == "update":
                item.status, item.error = 400, _err("illegal_argument_exception",
                                                    "pitwall stores logs append-only: update is not supported")
                continue
            if not index:
                item.status, item.error = 400, _err("action_request_validation_exception",
                                                    "Validation Failed: 1: index is missing;")
                continue
            try:
                doc = json.loads(src)
            except (ValueError, RecursionError) as e:
                item.status, item.error = 400, _err("document_parsing_exception", f"failed to parse: {e}")
                continue
            if not isinstance(doc, dict):
                item.status, item.error = 400, _err("document_parsing_exception",
                                                    "failed to parse: the document must be an object")
                continue
            labels = self._labels(doc, index)
            idx.append(streams.setdefault(labels, len(streams)))
            ts.append(self._timestamp(doc, now_ns))
            lines.append(src.decode("utf-8", "replace"))
            req.entry_item.append(len(req.items) - 1)
        req.cols = EntryColumns(list(streams), np.array(idx, dtype=np.int64), np.array(ts, dtype=np.int64), lines)
        return req

    def _action(self, raw: bytes, lineno: int) -> tuple[str, dict[str, Any]]:
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            raise BadData(f"Malformed action/metadata line [{lineno}], expected START_OBJECT but found "
                          f"[VALUE_STRING]") from None
        if not isinstance(obj, dict) or len(obj) != 1:
            raise BadData(f"Malformed action/metadata line [{lineno}], expected a single action object")
        action, meta = next(iter(obj.items()))
        if action not in _ACTIONS:
            raise BadData(f"Malformed action/metadata line [{lineno}], expected one of [create, delete, index, "
                          f"update] but found [{action}]")
        if not isinstance(meta, dict):
            raise BadData(f"Malformed action/metadata line [{lineno}], expected an object for [{action}]")
        return action, meta

    def _labels(self, doc: dict[str, Any], index: str) -> Labels:
        labels = dict(self.settings.labels)
        labels["index"] = index
        for f in self.settings.label_fields:
            v = _lookup(doc, f)
            if isinstance(v, str | int | float) and not isinstance(v, bool) and str(v):
                labels[sanitize_name(f)] = str(v)[:1024]
        return canonical(labels)

    def _timestamp(self, doc: dict[str, Any], now_ns: int) -> int:
        for f in self.settings.timestamp_fields:
            ns = parse_timestamp(_lookup(doc, f))
            if ns is not None:
                return ns
        return now_ns


def _err(kind: str, reason: str) -> dict[str, Any]:
    return {"type": kind, "reason": reason}


def bulk_response(req: BulkRequest, took_ms: int, step: int = 10_000) -> bytes:
    """Elasticsearch's per-item answer as JSON, its items encoded a slice at a time (no long hold of the GIL)."""
    sep = (",", ":")
    items = ",".join(json.dumps([_item(seq, it) for seq, it in enumerate(req.items[a : a + step], a)],
                                separators=sep)[1:-1] for a in range(0, len(req.items), step))
    errors = "true" if any(it.error is not None for it in req.items) else "false"
    return f'{{"took":{json.dumps(took_ms)},"errors":{errors},"items":[{items}]}}'.encode()


def _item(seq: int, it: BulkItem) -> dict[str, Any]:
    body: dict[str, Any] = {"_index": it.index, "_id": it.doc_id, "status": it.status}
    if it.error is not None:
        body["error"] = it.error
    else:
        body.update({"_version": 1, "result": "created", "_seq_no": seq, "_primary_term": 1,
                     "_shards": {"total": 1, "successful": 1, "failed": 0}})
    return {it.action: body}


def es_router(deps: Any, settings: ElasticsearchSettings) -> APIRouter:
    """``_bulk`` and the few probes shippers make (``GET /``, ``_cat/health``), errors as JSON."""
    r = error_router("native", tags=["elasticsearch"])
    decoder = BulkDecoder(settings)

    def decode(body: Body, index: str | None) -> BulkRequest:
        return decoder.decode(body.decoded(), index)

    async def bulk(request: Request, index: str | None = None) -> Response:
        t0 = time.monotonic()
        tenant = tenant_of(request)
        async with read_body(request, BodyLimits.of(deps.limits), deps.inflight) as body:
            req = await body.in_thread(decode, body, index)
            assert req.cols is not None
            out = await deps.ingester.push(tenant, req.cols, raise_on_reject=False)
            for entry, reason in out.reasons.items():
                it = req.items[req.entry_item[entry]]
                it.status, it.error = 400, _err("illegal_argument_exception", reason)
            took = int((time.monotonic() - t0) * 1000)
            answer = await body.in_thread(bulk_response, req, took)
        return Response(answer, media_type="application/json; charset=UTF-8")

    async def bulk_index(index: str, request: Request) -> Response:
        return await bulk(request, index)

    async def info() -> Response:
        return Response(json.dumps({
            "name": "pitwall", "cluster_name": "pitwall", "cluster_uuid": "pitwall",
            "version": {"number": ES_VERSION, "build_flavor": "default", "lucene_version": "9.8.0",
                        "minimum_wire_compatibility_version": "7.17.0",
                        "minimum_index_compatibility_version": "7.0.0"},
            "tagline": "You Know, for Search",
        }), media_type="application/json", headers={"X-elastic-product": "Elasticsearch"})

    async def health() -> Response:
        # _cat/health's columns: epoch, time, cluster, status, nodes... (shippers only check it answers).
        now = time.time()
        line = f"{int(now)} {time.strftime('%H:%M:%S', time.gmtime(now))} pitwall green 1 1 0 0 0 0 0 0 - 100.0%\n"
        return Response(line, media_type="text/plain")

    def route(path: str, fn: Any, methods: list[str], op: str) -> None:
        for method in methods:  # one route per method keeps OpenAPI operation ids unique
            r.add_api_route(path, fn, methods=[method], operation_id=f"{op}_{method.lower()}")

    # No root ``/<index>/_bulk``: a path pattern that auth's write-path prefixes could not cover.
    route("/_bulk", bulk, ["POST", "PUT"], "es_bulk")
    route("/elasticsearch/_bulk", bulk, ["POST", "PUT"], "es_bulk_prefixed")
    route("/elasticsearch/{index}/_bulk", bulk_index, ["POST", "PUT"], "es_bulk_index")
    for prefix in ("", "/elasticsearch"):
        route(f"{prefix}/_cat/health", health, ["GET"], f"es_health{prefix.strip('/')}")
    route("/elasticsearch", info, ["GET", "HEAD"], "es_info")
    route("/elasticsearch/", info, ["GET", "HEAD"], "es_info_slash")
    return r
