"""Stored spans in Jaeger's UI JSON model (``internal/uimodel``), and the Go parsing its query API uses.

Mapping from the OTLP model, as Jaeger's own OTLP translator does: the
parent is a ``CHILD_OF`` reference and links ``FOLLOWS_FROM``; the kind is
the ``span.kind`` tag (``server``, ``client``...); an ERROR status is the
tags ``error=true``, ``otel.status_code=ERROR`` and
``otel.status_description``; the scope is ``otel.scope.name``/``version``;
events are logs whose ``event`` field is the event's name; each distinct
(service, resource) is a process (``p1``, ``p2``...) whose tags are the
resource attributes but ``service.name``.
"""

from __future__ import annotations

from typing import Any

from pitwall.core.durations import parse_duration_ns
from pitwall.traces.model import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_INTERNAL,
    KIND_PRODUCER,
    KIND_SERVER,
    STATUS_ERROR,
    STATUS_OK,
    SpanRow,
    display_trace_id,
    dumps,
)

__all__ = ["JAEGER_KINDS", "KIND_OF_JAEGER", "jaeger_trace", "key_value", "parse_go_duration_ns"]

JAEGER_KINDS = {KIND_SERVER: "server", KIND_CLIENT: "client", KIND_PRODUCER: "producer",
                KIND_CONSUMER: "consumer", KIND_INTERNAL: "internal"}
KIND_OF_JAEGER = {v: k for k, v in JAEGER_KINDS.items()}
_JS_SAFE = 2**53 - 1  # larger int64 values go as strings, which JavaScript reads without loss

def parse_go_duration_ns(text: str) -> int:
    """Go's ``time.ParseDuration`` (``100ms``, ``1.5s``, ``1h30m``), in nanoseconds; ValueError with Go's text."""
    return parse_duration_ns(text, go_only=True)


def key_value(key: str, v: Any) -> dict[str, Any]:
    """A stored attribute value as a Jaeger ``KeyValue`` with its type."""
    if isinstance(v, bool):
        return {"key": key, "type": "bool", "value": v}
    if isinstance(v, int):
        return {"key": key, "type": "int64", "value": v if abs(v) <= _JS_SAFE else str(v)}
    if isinstance(v, float):
        return {"key": key, "type": "float64", "value": v}
    if isinstance(v, dict) and set(v) == {"$bytes"}:
        return {"key": key, "type": "binary", "value": v["$bytes"]}
    return {"key": key, "type": "string", "value": v if isinstance(v, str) else dumps(v)}


def _tags(r: SpanRow) -> list[dict[str, Any]]:
    tags = [key_value(k, v) for k, v in r.attributes.items()]
    if r.kind in JAEGER_KINDS:
        tags.append(key_value("span.kind", JAEGER_KINDS[r.kind]))
    if r.scope.get("name"):
        tags.append(key_value("otel.scope.name", r.scope["name"]))
        if r.scope.get("version"):
            tags.append(key_value("otel.scope.version", r.scope["version"]))
    if r.status_code == STATUS_ERROR:
        tags.append(key_value("error", True))
        tags.append(key_value("otel.status_code", "ERROR"))
    elif r.status_code == STATUS_OK:
        tags.append(key_value("otel.status_code", "OK"))
    if r.status_message:
        tags.append(key_value("otel.status_description", r.status_message))
    return tags


def _references(r: SpanRow, trace_id: str) -> list[dict[str, str]]:
    refs = [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": r.parent_id}] if r.parent_id else []
    refs += [{"refType": "FOLLOWS_FROM", "traceID": display_trace_id(ln["traceId"]), "spanID": ln["spanId"]}
             for ln in r.links]
    return refs


def jaeger_trace(spans: list[SpanRow]) -> dict[str, Any]:
    """One trace as Jaeger's UI model: ``traceID``, ``spans``, ``processes``, ``warnings``."""
    trace_id = display_trace_id(spans[0].trace_id)
    processes: dict[str, dict[str, Any]] = {}
    by_key: dict[tuple[str, str], str] = {}
    out: list[dict[str, Any]] = []
    for r in spans:
        key = (r.service, dumps(r.resource))
        pid = by_key.get(key)
        if pid is None:
            pid = by_key[key] = f"p{len(by_key) + 1}"
            processes[pid] = {"serviceName": r.service,
                              "tags": [key_value(k, v) for k, v in r.resource.items() if k != "service.name"]}
        out.append({
            "traceID": trace_id, "spanID": r.span_id, "operationName": r.name,
            "references": _references(r, trace_id),
            "startTime": r.start_ns // 1000, "duration": r.duration_ns // 1000,
            "tags": _tags(r),
            "logs": [{"timestamp": int(e["t"]) // 1000,
                      "fields": [key_value("event", e["name"]),
                                 *(key_value(k, v) for k, v in (e.get("attributes") or {}).items())]}
                     for e in r.events],
            "processID": pid, "warnings": None,
        })
    return {"traceID": trace_id, "spans": out, "processes": processes, "warnings": None}
