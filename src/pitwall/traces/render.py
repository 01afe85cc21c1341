"""Stored spans rendered for the wire: Zipkin v2 JSON and OTLP-shaped JSON."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from pitwall.traces.model import (
    FLAG_DEBUG,
    FLAG_SHARED,
    STATUS_ERROR,
    STATUS_OK,
    ZIPKIN_KINDS,
    SpanRow,
    TraceSummary,
    display_trace_id,
    dumps,
)

__all__ = ["summary_json", "to_otlp_json", "to_otlp_proto", "to_zipkin"]


def _tag(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, dict) and set(v) == {"$bytes"}:
        return str(v["$bytes"])
    return dumps(v)


def _ip_fields(ip: Any) -> dict[str, str] | None:
    try:
        addr = ipaddress.ip_address(str(ip))
    except ValueError:
        return None
    return {"ipv4" if addr.version == 4 else "ipv6": str(addr)}


def _endpoint(service: str, attrs: dict[str, Any], side: str) -> dict[str, Any]:
    ep: dict[str, Any] = {}
    if service:
        ep["serviceName"] = service
    ip = attrs.get(f"net.{side}.ip")
    if ip is not None and (fields := _ip_fields(ip)) is not None:
        ep.update(fields)
        del attrs[f"net.{side}.ip"]
    port = attrs.get(f"net.{side}.port")
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        ep["port"] = port
        del attrs[f"net.{side}.port"]
    return ep


def to_zipkin(r: SpanRow) -> dict[str, Any]:
    """One span as Zipkin v2 JSON (the inverse of the Zipkin decoder's mapping)."""
    d: dict[str, Any] = {"traceId": display_trace_id(r.trace_id), "id": r.span_id}
    if r.parent_id:
        d["parentId"] = r.parent_id
    if r.name:
        d["name"] = r.name
    kind = ZIPKIN_KINDS.get(r.kind)
    if kind:
        d["kind"] = kind
    if r.start_ns > 0:
        d["timestamp"] = r.start_ns // 1000
    d["duration"] = max(1, (r.duration_ns + 500) // 1000)
    attrs = dict(r.attributes)
    d["localEndpoint"] = _endpoint(r.service, attrs, "host")
    if r.remote_service and attrs.get("peer.service") == r.remote_service:
        del attrs["peer.service"]
    remote = _endpoint(r.remote_service, attrs, "peer")
    if remote:
        d["remoteEndpoint"] = remote
    annotations: dict[tuple[int, str], None] = {}
    for e in r.events:
        value = dumps({e["name"]: e["attributes"]}) if e.get("attributes") else e["name"]
        annotations[(int(e["t"]) // 1000, value)] = None
    if annotations:
        d["annotations"] = [{"timestamp": t, "value": v} for t, v in annotations]
    tags = {k: _tag(v) for k, v in r.resource.items() if k != "service.name"}
    tags.update((k, _tag(v)) for k, v in attrs.items())
    if r.scope.get("name"):
        tags["otel.scope.name"] = r.scope["name"]
        if r.scope.get("version"):
            tags["otel.scope.version"] = r.scope["version"]
    if r.status_code == STATUS_ERROR:
        tags["otel.status_code"] = "ERROR"
        tags["error"] = r.status_message or "true"
    elif r.status_code == STATUS_OK:
        tags["otel.status_code"] = "OK"
    if tags:
        d["tags"] = tags
    if r.flags & FLAG_SHARED:
        d["shared"] = True
    if r.flags & FLAG_DEBUG:
        d["debug"] = True
    return d


def any_value(v: Any) -> dict[str, Any]:
    """A plain JSON value as an OTLP/JSON AnyValue."""
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list):
        return {"arrayValue": {"values": [any_value(x) for x in v]}}
    if isinstance(v, dict):
        if set(v) == {"$bytes"}:
            return {"bytesValue": v["$bytes"]}
        return {"kvlistValue": {"values": key_values(v)}}
    return {}


def key_values(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": any_value(v)} for k, v in attrs.items()]


def _otlp_span(r: SpanRow) -> dict[str, Any]:
    sp: dict[str, Any] = {
        "traceId": r.trace_id, "spanId": r.span_id, "parentSpanId": r.parent_id, "name": r.name,
        "kind": r.kind, "startTimeUnixNano": str(r.start_ns), "endTimeUnixNano": str(r.end_ns),
        "attributes": key_values(r.attributes),
        "events": [{"timeUnixNano": str(e["t"]), "name": e["name"], "attributes": key_values(e["attributes"])}
                   for e in r.events],
        "links": [{"traceId": ln["traceId"], "spanId": ln["spanId"], "traceState": ln.get("traceState", ""),
                   "attributes": key_values(ln.get("attributes", {}))} for ln in r.links],
        "status": {"code": r.status_code, "message": r.status_message},
    }
    return sp


def to_otlp_json(spans: list[SpanRow]) -> dict[str, Any]:
    """A trace as an OTLP/JSON ``TracesData``: spans grouped by resource, then scope."""
    groups: dict[str, dict[str, list[SpanRow]]] = {}
    resources: dict[str, dict[str, Any]] = {}
    scopes: dict[str, dict[str, Any]] = {}
    for r in spans:
        rk, sk = dumps(r.resource), dumps(r.scope)
        resources[rk], scopes[sk] = r.resource, r.scope
        groups.setdefault(rk, {}).setdefault(sk, []).append(r)
    return {"resourceSpans": [
        {"resource": {"attributes": key_values(resources[rk])},
         "scopeSpans": [{"scope": {"name": scopes[sk].get("name", ""), "version": scopes[sk].get("version", "")},
                         "spans": [_otlp_span(r) for r in rows]} for sk, rows in by_scope.items()]}
        for rk, by_scope in groups.items()
    ]}


def summary_json(s: TraceSummary) -> dict[str, Any]:
    return {
        "traceId": s.trace_id, "rootServiceName": s.root_service, "rootSpanName": s.root_name,
        "startTimeUnixNano": str(s.start_ns), "durationMs": s.duration_ns / 1e6,
        "spanCount": s.span_count, "errorCount": s.error_count, "services": s.services,
    }


def _set_any(target: Any, v: Any) -> None:
    """Fill an OTLP ``AnyValue`` message from a stored plain value."""
    if isinstance(v, str):
        target.string_value = v
    elif isinstance(v, bool):
        target.bool_value = v
    elif isinstance(v, int):
        target.int_value = v
    elif isinstance(v, float):
        target.double_value = v
    elif isinstance(v, list):
        arr = target.array_value
        for x in v:
            _set_any(arr.values.add(), x)
    elif isinstance(v, dict) and set(v) == {"$bytes"}:
        target.bytes_value = base64.b64decode(v["$bytes"])
    elif isinstance(v, dict):
        for k, x in v.items():
            kv = target.kvlist_value.values.add()
            kv.key = k
            _set_any(kv.value, x)


def _set_attrs(target: Any, attrs: dict[str, Any]) -> None:
    for k, v in attrs.items():
        kv = target.add()
        kv.key = k
        _set_any(kv.value, v)


def to_otlp_proto(spans: list[SpanRow]) -> bytes:
    """A trace as OTLP protobuf ``TracesData`` (Tempo's ``tempopb.Trace`` has the same wire form)."""
    doc = TracesData()
    groups: dict[str, Any] = {}
    scopes: dict[tuple[str, str], Any] = {}
    for r in spans:
        rk, sk = dumps(r.resource), dumps(r.scope)
        rs = groups.get(rk)
        if rs is None:
            rs = groups[rk] = doc.resource_spans.add()
            _set_attrs(rs.resource.attributes, r.resource)
        ss = scopes.get((rk, sk))
        if ss is None:
            ss = scopes[(rk, sk)] = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = r.scope.get("name", ""), r.scope.get("version", "")
        sp = ss.spans.add()
        sp.trace_id, sp.span_id = bytes.fromhex(r.trace_id), bytes.fromhex(r.span_id)
        if r.parent_id:
            sp.parent_span_id = bytes.fromhex(r.parent_id)
        sp.name, sp.kind = r.name, r.kind
        sp.start_time_unix_nano, sp.end_time_unix_nano = max(r.start_ns, 0), max(r.end_ns, 0)
        _set_attrs(sp.attributes, r.attributes)
        for e in r.events:
            ev = sp.events.add()
            ev.time_unix_nano, ev.name = max(int(e["t"]), 0), e["name"]
            _set_attrs(ev.attributes, e.get("attributes") or {})
        for ln in r.links:
            lk = sp.links.add()
            lk.trace_id, lk.span_id = bytes.fromhex(ln["traceId"]), bytes.fromhex(ln["spanId"])
            lk.trace_state = ln.get("traceState", "")
            _set_attrs(lk.attributes, ln.get("attributes", {}))
        sp.status.code, sp.status.message = r.status_code, r.status_message
    return bytes(doc.SerializeToString())

