"""Fixtures of the demo tests: a recording OTLP/HTTP receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_DECODERS: dict[str, Any] = {
    "/v1/traces": ExportTraceServiceRequest,
    "/v1/logs": ExportLogsServiceRequest,
    "/v1/metrics": ExportMetricsServiceRequest,
}


class OtlpSink:
    """What an OTLP/HTTP receiver got, decoded, by signal path."""

    def __init__(self) -> None:
        self.received: dict[str, list[Any]] = {p: [] for p in _DECODERS}
        self.lock = threading.Lock()
        self.url = ""

    def spans(self) -> list[tuple[str, Any]]:
        """(service.name, span) of every span received."""
        out = []
        with self.lock:
            for req in self.received["/v1/traces"]:
                for rs in req.resource_spans:
                    svc = _service(rs.resource)
                    out += [(svc, s) for ss in rs.scope_spans for s in ss.spans]
        return out

    def logs(self) -> list[tuple[str, Any]]:
        out = []
        with self.lock:
            for req in self.received["/v1/logs"]:
                for rl in req.resource_logs:
                    svc = _service(rl.resource)
                    out += [(svc, r) for sl in rl.scope_logs for r in sl.log_records]
        return out

    def metric_names(self) -> set[str]:
        with self.lock:
            return {m.name for req in self.received["/v1/metrics"] for rm in req.resource_metrics
                    for sm in rm.scope_metrics for m in sm.metrics}


def _service(resource: Any) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return str(kv.value.string_value)
    return ""


@pytest.fixture
def otlp_sink() -> Iterator[OtlpSink]:
    sink = OtlpSink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            decoder = _DECODERS.get(self.path)
            if decoder is None:
                self.send_response(404)
                self.end_headers()
                return
            msg = decoder()
            msg.ParseFromString(raw)
            with sink.lock:
                sink.received[self.path].append(msg)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sink.url = f"http://127.0.0.1:{server.server_address[1]}"
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=5)
