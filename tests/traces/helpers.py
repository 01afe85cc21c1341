"""Small builders for span requests used across the traces tests."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def otlp_request(service: str, spans: list[dict[str, Any]], resource: dict[str, str] | None = None) -> bytes:
    """An OTLP protobuf body: ``spans`` as dicts of trace/span/parent ids (hex), name, kind, times, attrs."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in {"service.name": service, **(resource or {})}.items():
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = k, v
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    now = time.time_ns()
    for d in spans:
        sp = ss.spans.add()
        sp.trace_id = bytes.fromhex(d["trace"])
        sp.span_id = bytes.fromhex(d["span"])
        if d.get("parent"):
            sp.parent_span_id = bytes.fromhex(d["parent"])
        sp.name = d.get("name", "op")
        sp.kind = d.get("kind", 1)
        start = d.get("start", now - 10_000_000)
        sp.start_time_unix_nano = start
        sp.end_time_unix_nano = start + d.get("duration", 5_000_000)
        sp.status.code = d.get("status", 0)
        for k, v in d.get("attrs", {}).items():
            kv = sp.attributes.add()
            kv.key = k
            if isinstance(v, bool):
                kv.value.bool_value = v
            elif isinstance(v, int):
                kv.value.int_value = v
            elif isinstance(v, float):
                kv.value.double_value = v
            else:
                kv.value.string_value = v
    return bytes(req.SerializeToString())


PROTO = {"content-type": "application/x-protobuf"}
