"""OTLP/HTTP traces: decode an ExportTraceServiceRequest (protobuf or JSON) into span columns.

Pure and synchronous. OTLP/JSON carries trace and span ids as hex (the
spec's exception to base64 bytes) and enums as integers; both are fixed up
before protobuf's JSON parser sees the document.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from pitwall.traces.errors import InvalidSpan, SpanLimitExceeded, UnsupportedMediaType
from pitwall.traces.ingest.common import (
    IngestLimits,
    bytes_value,
    check_attribute_count,
    check_span_count,
    check_value_length,
    remote_service_of,
)
from pitwall.traces.model import UNKNOWN_SERVICE, SpanArrays, SpanColumns, dumps

try:
    from pitwall.traces import _otlp_traces  # type: ignore[attr-defined]
except ImportError:  # built without a C compiler: the upb path below serves
    _otlp_traces = None

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

__all__ = ["JSON", "PROTOBUF", "decode", "decode_upb", "encode_response", "media_type"]


def media_type(content_type: str) -> str:
    """``application/x-protobuf`` or ``application/json``; anything else is a 415."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in (PROTOBUF, JSON):
        raise UnsupportedMediaType(
            f"unsupported content type: {content_type or '(none)'}, supported: [{JSON}, {PROTOBUF}]"
        )
    return media


def decode(body: bytes, media: str, limits: IngestLimits) -> SpanColumns | SpanArrays:
    """Decode and validate a request body into span columns (raises on any violation).

    Protobuf goes through the C decoder when it is built; it hands back
    anything not plainly valid, which the upb path below then decodes (and
    rejects with the proper message).
    """
    if media == PROTOBUF and _otlp_traces is not None:
        got = _otlp_traces.decode(body, limits.max_spans_per_request, limits.max_attributes_per_span,
                                  limits.max_attribute_value_length, limits.max_events_per_span)
        if got is not None:
            return _arrays(got)
    return decode_upb(body, media, limits)


def decode_upb(body: bytes, media: str, limits: IngestLimits) -> SpanColumns:
    """The pure-Python (upb) decoder: every request the C decoder hands back, and all OTLP/JSON."""
    req = _parse_json(body) if media == JSON else _parse_proto(body)
    n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    check_span_count(n, limits)
    return _columns(req, limits)


_STRING_COLUMNS = ("trace_id", "span_id", "parent_id", "service", "name", "status_message", "remote_service",
                   "attributes", "resource", "scope", "events", "links")


def _arrays(got: tuple[int, bytes, bytes, tuple[tuple[bytes, bytes], ...]]) -> SpanArrays:
    n, ints, i8s, strings = got
    i64 = np.frombuffer(ints, dtype=np.int64).reshape(3, n)
    i8 = np.frombuffer(i8s, dtype=np.int8).reshape(2, n)
    arrays: dict[str, pa.Array] = {
        "tkey": pa.array(i64[0]), "start_ns": pa.array(i64[1]), "duration_ns": pa.array(i64[2]),
        "kind": pa.array(i8[0]), "status_code": pa.array(i8[1]), "flags": pa.array(np.zeros(n, dtype=np.int8)),
    }
    for name, (offsets, data) in zip(_STRING_COLUMNS, strings, strict=True):
        arrays[name] = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    return SpanArrays(arrays, n)


def encode_response(media: str, rejected: int = 0, message: str = "") -> bytes:
    """ExportTraceServiceResponse, with partial_success when spans were rejected."""
    resp = ExportTraceServiceResponse()
    if rejected:
        resp.partial_success.rejected_spans = rejected
        resp.partial_success.error_message = message
    if media == JSON:
        return json_format.MessageToJson(resp, indent=None).encode()
    return bytes(resp.SerializeToString())


def _parse_proto(body: bytes) -> Any:
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise InvalidSpan(f"invalid OTLP protobuf body: {e}") from e
    return req


def _hex_to_b64(obj: dict[str, Any], key: str, size: int) -> None:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        return
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise InvalidSpan(f"invalid OTLP/JSON: {key} {value[:64]!r} is not hex") from None
    if len(raw) != size:
        raise InvalidSpan(f"invalid OTLP/JSON: {key} must be {size} bytes, got {len(raw)}")
    obj[key] = base64.b64encode(raw).decode("ascii")


def _list(obj: Any, *keys: str) -> list[Any]:
    if isinstance(obj, dict):
        for k in keys:
            v = obj.get(k)
            if isinstance(v, list):
                return v
    return []


def _parse_json(body: bytes) -> Any:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InvalidSpan(f"invalid OTLP/JSON body: {e}") from e
    if not isinstance(doc, dict):
        raise InvalidSpan("invalid OTLP/JSON body: expected an object")
    for rs in _list(doc, "resourceSpans", "resource_spans"):
        for ss in _list(rs, "scopeSpans", "scope_spans"):
            for sp in _list(ss, "spans"):
                if not isinstance(sp, dict):
                    continue
                for k, size in (("traceId", 16), ("trace_id", 16), ("spanId", 8), ("span_id", 8),
                                ("parentSpanId", 8), ("parent_span_id", 8)):
                    _hex_to_b64(sp, k, size)
                for link in _list(sp, "links"):
                    if isinstance(link, dict):
                        for k, size in (("traceId", 16), ("trace_id", 16), ("spanId", 8), ("span_id", 8)):
                            _hex_to_b64(link, k, size)
    req = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as e:
        raise InvalidSpan(f"invalid OTLP/JSON body: {e}") from e
    return req


def any_value(v: Any, key: str, limits: IngestLimits) -> Any:
    """An OTLP AnyValue as a plain JSON value (every kind: string, bool, int, double, array, kvlist, bytes)."""
    which = v.WhichOneof("value")
    if which == "string_value":
        s = v.string_value
        check_value_length(key, len(s), limits)
        return s
    if which == "int_value":
        return v.int_value
    if which == "bool_value":
        return v.bool_value
    if which == "double_value":
        return v.double_value
    if which == "array_value":
        return [any_value(x, key, limits) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value, key, limits) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        check_value_length(key, len(v.bytes_value), limits)
        return bytes_value(v.bytes_value)
    return None


def attributes(kvs: Any, owner: str, limits: IngestLimits) -> dict[str, Any]:
    check_attribute_count(len(kvs), owner, limits)
    return {kv.key: any_value(kv.value, kv.key, limits) for kv in kvs}


def _id(raw: bytes, what: str, size: int, optional: bool = False) -> str:
    if optional and not raw:
        return ""
    if len(raw) != size or not any(raw):
        raise InvalidSpan(f"invalid {what}: expected {size} non-zero bytes, got {raw.hex() or 'empty'}")
    return raw.hex()


def _events(sp: Any, limits: IngestLimits) -> str:
    if not sp.events:
        return ""
    if len(sp.events) > limits.max_events_per_span:
        raise SpanLimitExceeded(
            f"span {sp.name[:100]!r} has {len(sp.events)} events, more than the limit of "
            f"{limits.max_events_per_span}"
        )
    return dumps([
        {"t": e.time_unix_nano, "name": e.name, "attributes": attributes(e.attributes, e.name, limits)}
        for e in sp.events
    ])


def _links(sp: Any, limits: IngestLimits) -> str:
    if not sp.links:
        return ""
    return dumps([
        {"traceId": _id(ln.trace_id, "link trace id", 16), "spanId": _id(ln.span_id, "link span id", 8),
         "traceState": ln.trace_state, "attributes": attributes(ln.attributes, "link", limits)}
        for ln in sp.links
    ])


def _columns(req: Any, limits: IngestLimits) -> SpanColumns:
    cols = SpanColumns()
    for rs in req.resource_spans:
        res_attrs = attributes(rs.resource.attributes, "resource", limits)
        svc = res_attrs.get("service.name")
        service = svc if isinstance(svc, str) and svc else UNKNOWN_SERVICE
        res_json = dumps(res_attrs)
        for ss in rs.scope_spans:
            scope_json = dumps({"name": ss.scope.name, "version": ss.scope.version}) if ss.scope.name else ""
            for sp in ss.spans:
                _span(cols, sp, service, res_json, scope_json, limits)
    return cols


def _span(cols: SpanColumns, sp: Any, service: str, res_json: str, scope_json: str, limits: IngestLimits) -> None:
    trace_id = _id(sp.trace_id, "trace id", 16)
    attrs = attributes(sp.attributes, sp.name, limits)
    kind = int(sp.kind)
    if not 0 <= kind <= 5:
        raise InvalidSpan(f"span {sp.name[:100]!r} has unknown kind {kind}")
    start = int(sp.start_time_unix_nano)
    if start >= 1 << 63 or sp.end_time_unix_nano >= 1 << 63:  # fixed64 on the wire, int64 nanoseconds here
        raise InvalidSpan(f"span {sp.name[:100]!r} has a start or end time past the year 2262")
    tk = int(trace_id[16:], 16)
    cols.tkey.append(tk - (1 << 64) if tk >= 1 << 63 else tk)
    cols.trace_id.append(trace_id)
    cols.span_id.append(_id(sp.span_id, "span id", 8))
    cols.parent_id.append(_id(sp.parent_span_id, "parent span id", 8, optional=True))
    cols.service.append(service)
    cols.name.append(sp.name)
    cols.kind.append(kind)
    cols.start_ns.append(start)
    cols.duration_ns.append(max(0, int(sp.end_time_unix_nano) - start))
    cols.status_code.append(int(sp.status.code) if 0 <= sp.status.code <= 2 else 0)
    cols.status_message.append(sp.status.message)
    cols.remote_service.append(remote_service_of(kind, attrs))
    cols.flags.append(0)
    cols.attributes.append(dumps(attrs))
    cols.resource.append(res_json)
    cols.scope.append(scope_json)
    cols.events.append(_events(sp, limits))
    cols.links.append(_links(sp, limits))
