"""OTLP/HTTP logs ``POST /v1/logs`` (protobuf and JSON), mapped to streams as Loki 3 does.

Stream labels come from a fixed set of resource attributes (``service.name``
-> ``service_name``, ``k8s.pod.name`` -> ``k8s_pod_name``...); every other
resource, scope and log attribute, the severity and ``trace_id``/``span_id``
become structured metadata, so ``{service_name="api"} | trace_id="..."``
works. The line is the body (non-string bodies as JSON).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from pitwall.core import jsonchunks
from pitwall.core.body import Body, BodyLimits, read_body
from pitwall.core.errors import BadData, UnsupportedMediaType
from pitwall.core.http_errors import error_router
from pitwall.core.params import tenant_of
from pitwall.logs.labels import canonical, sanitize_name
from pitwall.logs.model import EntryColumns, Labels, Metadata

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# Loki's default ``otlp_config`` resource attributes indexed as stream labels.
INDEX_LABEL_ATTRIBUTES = (
    "service.name", "service.namespace", "service.instance.id", "deployment.environment",
    "deployment.environment.name", "cloud.region", "cloud.availability_zone", "k8s.cluster.name",
    "k8s.namespace.name", "k8s.pod.name", "k8s.container.name", "container.name", "k8s.replicaset.name",
    "k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name", "k8s.cronjob.name", "k8s.job.name",
)


class OtlpLogsDecodeError(BadData):
    """Not a valid OTLP ExportLogsServiceRequest."""


class UnsupportedContentType(UnsupportedMediaType):
    """Neither ``application/x-protobuf`` nor ``application/json`` (OTLP answers 415)."""


def _any_value(v: Any) -> Any:
    """An OTLP AnyValue as a Python value (maps and arrays nested)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, kind)


def _as_text(x: Any) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return "true" if x else "false"
    if x is None:
        return ""
    if isinstance(x, float) and x.is_integer():
        return repr(x)
    if isinstance(x, dict | list):
        return json.dumps(x, separators=(",", ":"), ensure_ascii=False)
    return str(x)


def _flatten(attrs: Any, out: dict[str, str], prefix: str = "") -> None:
    """Attributes as metadata pairs; nested maps joined with ``_`` as Loki does."""
    for kv in attrs:
        key = prefix + sanitize_name(kv.key)
        val = kv.value
        if val.WhichOneof("value") == "kvlist_value":
            _flatten(val.kvlist_value.values, out, key + "_")
        else:
            out[key] = _as_text(_any_value(val))


class OtlpLogsTranslator:
    """Turns an OTLP logs request into ``EntryColumns``."""

    def __init__(self, index_labels: tuple[str, ...] = INDEX_LABEL_ATTRIBUTES) -> None:
        self.index_labels = frozenset(index_labels)

    def decode(self, body: bytes, content_type: str) -> ExportLogsServiceRequest:
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in (PROTOBUF, JSON):
            raise UnsupportedContentType(
                f"unsupported content type: {content_type or '(none)'}, supported: [{JSON}, {PROTOBUF}]")
        req = ExportLogsServiceRequest()
        if media == JSON:
            try:
                doc = jsonchunks.loads(body)
                _hex_ids_to_base64(doc)
                json_format.ParseDict(doc, req, ignore_unknown_fields=True)
            except (ValueError, TypeError, RecursionError, json_format.ParseError) as e:
                raise OtlpLogsDecodeError(f"invalid OTLP/JSON logs body: {e}") from e
            return req
        try:
            req.ParseFromString(body)
        except (DecodeError, RecursionError, ValueError) as e:
            raise OtlpLogsDecodeError(f"invalid OTLP protobuf logs body: {e}") from e
        return req

    def translate(self, req: ExportLogsServiceRequest, now_ns: int | None = None) -> EntryColumns:
        now_ns = time.time_ns() if now_ns is None else now_ns
        streams: dict[Labels, int] = {}
        idx: list[int] = []
        ts: list[int] = []
        lines: list[str] = []
        metadata: list[Metadata] = []
        for rl in req.resource_logs:
            labels, res_md = self._resource(rl.resource.attributes)
            sidx = streams.setdefault(labels, len(streams))
            for sl in rl.scope_logs:
                scope_md = dict(res_md)
                if sl.scope.name:
                    scope_md["scope_name"] = sl.scope.name
                if sl.scope.version:
                    scope_md["scope_version"] = sl.scope.version
                _flatten(sl.scope.attributes, scope_md)
                for rec in sl.log_records:
                    md = dict(scope_md)
                    _flatten(rec.attributes, md)
                    if rec.severity_number:
                        md["severity_number"] = str(rec.severity_number)
                    if rec.severity_text:
                        md["severity_text"] = rec.severity_text
                    if rec.trace_id:
                        md["trace_id"] = rec.trace_id.hex()
                    if rec.span_id:
                        md["span_id"] = rec.span_id.hex()
                    if rec.flags:
                        md["flags"] = str(rec.flags)
                    if rec.observed_time_unix_nano:
                        md["observed_timestamp"] = str(rec.observed_time_unix_nano)
                    t = rec.time_unix_nano or rec.observed_time_unix_nano or now_ns
                    if t >= 1 << 63:  # fixed64 on the wire; pitwall's timestamps are int64 nanoseconds
                        raise OtlpLogsDecodeError(f"log record time {t} is past the year 2262")
                    idx.append(sidx)
                    ts.append(t)
                    lines.append(_as_text(_any_value(rec.body)) if rec.HasField("body") else "")
                    metadata.append(tuple(sorted(md.items())))
        return EntryColumns(
            streams=list(streams),
            stream_idx=np.array(idx, dtype=np.int64),
            ts=np.array(ts, dtype=np.int64),
            lines=lines,
            metadata=metadata if any(metadata) else None,
        )

    def _resource(self, attrs: Any) -> tuple[Labels, dict[str, str]]:
        labels: dict[str, str] = {}
        md: dict[str, str] = {}
        for kv in attrs:
            if kv.key in self.index_labels:
                labels[sanitize_name(kv.key)] = _as_text(_any_value(kv.value))
            else:
                _flatten([kv], md)
        if not labels.get("service_name"):
            labels["service_name"] = "unknown_service"
        return canonical(labels), md


def encode_response(content_type: str) -> tuple[bytes, str]:
    resp = ExportLogsServiceResponse()
    if content_type.split(";", 1)[0].strip().lower() == JSON:
        return json.dumps(json_format.MessageToDict(resp)).encode(), JSON
    return bytes(resp.SerializeToString()), PROTOBUF


def _children(obj: Any, *keys: str) -> list[Any]:
    """The list under the first of ``keys`` present in a JSON object; anything else (a mistyped body) is none."""
    if not isinstance(obj, dict):
        return []
    for key in keys:
        value = obj.get(key)
        if value:
            return value if isinstance(value, list) else []
    return []


def _hex_ids_to_base64(doc: Any) -> None:
    """OTLP/JSON carries trace/span ids as hex; protobuf's JSON parser expects base64."""
    for rl in _children(doc, "resourceLogs", "resource_logs"):
        for sl in _children(rl, "scopeLogs", "scope_logs"):
            for rec in _children(sl, "logRecords", "log_records"):
                if not isinstance(rec, dict):
                    continue
                for key in ("traceId", "trace_id", "spanId", "span_id"):
                    v = rec.get(key)
                    if isinstance(v, str) and v:
                        try:
                            rec[key] = base64.b64encode(bytes.fromhex(v)).decode()
                        except ValueError:
                            raise OtlpLogsDecodeError(f"invalid OTLP/JSON: {key} {v!r} is not hex") from None


def otlp_export(deps: Any, translator: OtlpLogsTranslator) -> Callable[[str, Body, str], Awaitable[bytes]]:
    """Tenant + an ExportLogsServiceRequest body -> the encoded response (OTLP/HTTP and OTLP/gRPC alike).

    The body's bytes are already held in the in-flight budget; translation,
    the ingester's limits and its WAL are the same for both.
    """

    def decode(body: Body, ctype: str) -> EntryColumns:
        return translator.translate(translator.decode(body.decoded(), ctype))

    async def export(tenant: str, body: Body, ctype: str) -> bytes:
        cols = await body.in_thread(decode, body, ctype)
        await deps.ingester.push(tenant, cols)
        return encode_response(ctype)[0]

    return export


def otlp_logs_router(deps: Any, translator: OtlpLogsTranslator) -> APIRouter:
    """``POST /v1/logs``: OTLP errors (google.rpc.Status), success answered in the request's encoding."""
    r = error_router("otlp", tags=["otlp"])
    export = otlp_export(deps, translator)

    @r.post("/v1/logs")
    async def otlp_logs(request: Request) -> Response:
        tenant = tenant_of(request)
        ctype = request.headers.get("content-type", "")
        async with read_body(request, BodyLimits.of(deps.limits), deps.inflight) as body:
            out = await export(tenant, body, ctype)
        return Response(out, media_type=encode_response(ctype)[1])

    return r
