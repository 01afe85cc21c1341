"""Zipkin v2 spans (JSON and proto3) into the span model, and back.

The mapping follows OpenTelemetry's Zipkin exporter specification, read in
both directions: Zipkin ``kind`` <-> span kind (absent = INTERNAL); the
``error`` tag <-> status ERROR with its description, ``otel.status_code`` /
``otel.status_description`` tags <-> status; annotations <-> events (an
annotation ``{"name":{attrs}}`` carries an event's attributes); the remote
endpoint <-> ``peer.service`` and ``net.peer.ip``/``net.peer.port``;
``otel.scope.name``/``otel.scope.version`` (or ``otel.library.*``) <-> the
instrumentation scope; ``shared`` and ``debug`` <-> flags.

As Zipkin's own server does on ingest, span names and local and remote
service names are lower-cased (OTLP keeps names as sent; every name filter
of the query APIs is case-insensitive, see ``traces.query``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from typing import Any

from google.protobuf.message import DecodeError

from pitwall.core import jsonchunks
from pitwall.traces.errors import InvalidSpan, SpanLimitExceeded, UnsupportedMediaType
from pitwall.traces.ingest import zipkin_pb
from pitwall.traces.ingest.common import (
    IngestLimits,
    check_attribute_count,
    check_span_count,
    check_value_length,
)
from pitwall.traces.model import (
    FLAG_DEBUG,
    FLAG_SHARED,
    KIND_INTERNAL,
    KIND_OF_ZIPKIN,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_UNSET,
    UNKNOWN_SERVICE,
    SpanColumns,
    dumps,
    normalize_trace_id,
    tkey_of,
)

JSON = "application/json"
PROTOBUF = "application/x-protobuf"

__all__ = ["decode", "media_type"]

_HEX = frozenset("0123456789abcdef")
_MAX_US = (2**63 - 1) // 1000  # times are kept as int64 nanoseconds


def media_type(content_type: str) -> str:
    """JSON (also the default when no type is given, as Zipkin assumes) or proto3."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("", JSON, "text/plain"):
        return JSON
    if media in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    raise UnsupportedMediaType(f"unsupported content type {content_type!r}: send {JSON} or {PROTOBUF}")


def decode(body: bytes, media: str, limits: IngestLimits) -> SpanColumns:
    """Decode and validate a list of spans; raises on the first invalid one."""
    cols = SpanColumns()
    if media == JSON:
        i = 0
        for batch in _json_batches(body, limits):
            for sp in batch:
                if not isinstance(sp, dict):
                    raise InvalidSpan(f"Malformed reading List<Span> from json: span {i} is not an object")
                _span(cols, sp, i, limits)
                i += 1
        return cols
    spans = _from_proto(body)
    check_span_count(len(spans), limits)
    for i, sp in enumerate(spans):
        _span(cols, sp, i, limits)
    return cols


def _json_batches(body: bytes, limits: IngestLimits) -> Iterator[list[Any]]:
    """The spans of a JSON list in slices (``core.jsonchunks``): a large list never holds the GIL for long."""
    try:
        root = jsonchunks.parse(body)
        if root.kind != "array" and not isinstance(root.load(), list):
            raise InvalidSpan("Malformed reading List<Span> from json: expected an array of spans")
        check_span_count(root.length(), limits)
        for b in root.batches():
            yield [b.load()] if isinstance(b, jsonchunks.Value) else b
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InvalidSpan(f"Malformed reading List<Span> from json: {e}") from e


def _ip(raw: bytes) -> str:
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise InvalidSpan(f"invalid endpoint address of {len(raw)} bytes") from None


def _endpoint(ep: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ep.service_name:
        out["serviceName"] = ep.service_name
    if ep.ipv4:
        out["ipv4"] = _ip(ep.ipv4)
    if ep.ipv6:
        out["ipv6"] = _ip(ep.ipv6)
    if ep.port:
        out["port"] = ep.port
    return out


def _from_proto(body: bytes) -> list[dict[str, Any]]:
    msg = zipkin_pb.ListOfSpans()
    try:
        msg.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise InvalidSpan(f"Malformed reading List<Span> from proto3: {e}") from e
    out = []
    for sp in msg.spans:
        d: dict[str, Any] = {"traceId": sp.trace_id.hex(), "id": sp.id.hex(), "name": sp.name}
        if sp.parent_id:
            d["parentId"] = sp.parent_id.hex()
        if sp.kind:
            d["kind"] = zipkin_pb.KIND_NAMES.get(sp.kind, "")
        if sp.timestamp:
            d["timestamp"] = sp.timestamp
        if sp.duration:
            d["duration"] = sp.duration
        if sp.HasField("local_endpoint"):
            d["localEndpoint"] = _endpoint(sp.local_endpoint)
        if sp.HasField("remote_endpoint"):
            d["remoteEndpoint"] = _endpoint(sp.remote_endpoint)
        d["annotations"] = [{"timestamp": a.timestamp, "value": a.value} for a in sp.annotations]
        d["tags"] = dict(sp.tags)
        d["debug"], d["shared"] = sp.debug, sp.shared
        out.append(d)
    return out


def _hex_id(value: Any, what: str, i: int, lengths: tuple[int, ...]) -> str:
    if not isinstance(value, str) or len(value) not in lengths or not set(value.lower()) <= _HEX:
        raise InvalidSpan(f"span {i}: {what} must be {' or '.join(map(str, lengths))} lower-hex characters, "
                          f"got {str(value)[:64]!r}")
    v = value.lower()
    if not v.strip("0"):
        raise InvalidSpan(f"span {i}: {what} must not be all zeros")
    return v


def _int(value: Any, what: str, i: int) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < _MAX_US:
        raise InvalidSpan(f"span {i}: {what} must be a non-negative integer of microseconds below {_MAX_US}, "
                          f"got {value!r}")
    return int(value)


def _events(annotations: Any, i: int, limits: IngestLimits) -> str:
    if not annotations:
        return ""
    if not isinstance(annotations, list):
        raise InvalidSpan(f"span {i}: annotations must be an array")
    if len(annotations) > limits.max_events_per_span:
        raise SpanLimitExceeded(f"span {i} has {len(annotations)} annotations, more than the limit of "
                                f"{limits.max_events_per_span}")
    events = []
    for a in annotations:
        if not isinstance(a, dict) or not isinstance(a.get("value"), str):
            raise InvalidSpan(f"span {i}: an annotation needs a string value and a timestamp")
        value = a["value"]
        check_value_length("annotation", len(value), limits)
        name, attrs = _event_of(value)
        events.append({"t": _int(a.get("timestamp"), "annotation timestamp", i) * 1000, "name": name,
                       "attributes": attrs})
    return dumps(events)


def _event_of(value: str) -> tuple[str, dict[str, Any]]:
    # The OTel Zipkin exporter writes an event with attributes as {"name":{attrs}}.
    if value.startswith("{") and value.endswith("}"):
        try:
            doc = json.loads(value)
        except ValueError:
            return value, {}
        if isinstance(doc, dict) and len(doc) == 1:
            (name, attrs), = doc.items()
            if isinstance(attrs, dict):
                return str(name), attrs
    return value, {}


def _status(tags: dict[str, str]) -> tuple[int, str]:
    code = tags.pop("otel.status_code", "").upper()
    message = tags.pop("otel.status_description", "")
    if "error" in tags:
        err = tags.pop("error")
        return STATUS_ERROR, message or (err if err not in ("", "true") else "")
    if code == "ERROR":
        return STATUS_ERROR, message
    if code == "OK":
        return STATUS_OK, ""
    return STATUS_UNSET, ""


def _scope(tags: dict[str, str]) -> str:
    name = tags.pop("otel.scope.name", "") or tags.pop("otel.library.name", "")
    version = tags.pop("otel.scope.version", "") or tags.pop("otel.library.version", "")
    tags.pop("otel.library.name", None)
    tags.pop("otel.library.version", None)
    return dumps({"name": name, "version": version}) if name else ""


def _endpoint_attrs(ep: Any, prefix: str, i: int) -> tuple[str, dict[str, Any]]:
    if ep is None:
        return "", {}
    if not isinstance(ep, dict):
        raise InvalidSpan(f"span {i}: endpoints must be objects")
    attrs: dict[str, Any] = {}
    ip = ep.get("ipv4") or ep.get("ipv6")
    if ip:
        attrs[f"net.{prefix}.ip"] = str(ip)
    port = ep.get("port")
    if isinstance(port, int) and not isinstance(port, bool) and port:
        attrs[f"net.{prefix}.port"] = port
    name = ep.get("serviceName")
    # Zipkin's Endpoint.Builder lower-cases service names (Locale.ROOT).
    return (name.lower() if isinstance(name, str) else ""), attrs


def _span(cols: SpanColumns, sp: dict[str, Any], i: int, limits: IngestLimits) -> None:
    trace_id = normalize_trace_id(_hex_id(sp.get("traceId"), "traceId", i, (16, 32)))
    span_id = _hex_id(sp.get("id"), "id", i, (16,))
    parent = sp.get("parentId")
    parent_id = _hex_id(parent, "parentId", i, (16,)) if parent else ""
    kind_name = sp.get("kind")
    if kind_name in (None, ""):
        kind = KIND_INTERNAL
    elif kind_name in KIND_OF_ZIPKIN:
        kind = KIND_OF_ZIPKIN[kind_name]
    else:
        raise InvalidSpan(f"span {i}: unknown kind {str(kind_name)[:32]!r}, expected CLIENT, SERVER, "
                          "PRODUCER or CONSUMER")
    raw_tags = sp.get("tags") or {}
    if not isinstance(raw_tags, dict) or not all(isinstance(v, str) for v in raw_tags.values()):
        raise InvalidSpan(f"span {i}: tags must be an object of string values")
    check_attribute_count(len(raw_tags), str(sp.get("name", "")), limits)
    for k, v in raw_tags.items():
        check_value_length(k, len(v), limits)
    tags: dict[str, Any] = dict(raw_tags)
    status, message = _status(tags)
    scope = _scope(tags)
    service, local = _endpoint_attrs(sp.get("localEndpoint"), "host", i)
    remote_service, remote = _endpoint_attrs(sp.get("remoteEndpoint"), "peer", i)
    attrs = {**tags, **local, **remote}
    if remote_service:
        attrs["peer.service"] = remote_service
    name = sp.get("name") or ""
    if not isinstance(name, str):
        raise InvalidSpan(f"span {i}: name must be a string")
    name = name.lower()  # as Zipkin's Span.Builder does
    start_us = _int(sp.get("timestamp"), "timestamp", i)
    flags = (FLAG_SHARED if sp.get("shared") is True else 0) | (FLAG_DEBUG if sp.get("debug") is True else 0)
    cols.tkey.append(tkey_of(trace_id))
    cols.trace_id.append(trace_id)
    cols.span_id.append(span_id)
    cols.parent_id.append(parent_id)
    cols.service.append(service or UNKNOWN_SERVICE)
    cols.name.append(name)
    cols.kind.append(kind)
    cols.start_ns.append(start_us * 1000)
    cols.duration_ns.append(_int(sp.get("duration"), "duration", i) * 1000)
    cols.status_code.append(status)
    cols.status_message.append(message)
    cols.remote_service.append(remote_service)
    cols.flags.append(flags)
    cols.attributes.append(dumps(attrs))
    cols.resource.append(dumps({"service.name": service or UNKNOWN_SERVICE}))
    cols.scope.append(scope)
    cols.events.append(_events(sp.get("annotations"), i, limits))
    cols.links.append("")
