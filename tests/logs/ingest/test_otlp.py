"""OTLP logs from the real OpenTelemetry SDK (Python ``logging`` -> OTLP/HTTP protobuf exporter)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from pitwall.logs.ingest.otlp import OtlpLogsTranslator
from tests.conftest import LiveServer


def _query(url: str, expr: str) -> list[tuple[dict[str, str], list[list[object]]]]:
    r = httpx.get(url + "/loki/api/v1/query_range", params={"query": expr, "limit": "100"},
                  headers={"X-Loki-Response-Encoding-Flags": "categorize-labels"}, timeout=30)
    assert r.status_code == 200, r.text
    return [(s["stream"], s["values"]) for s in r.json()["data"]["result"]]


# The SDK's own LoggingHandler is deprecated in favour of a separate package, but is what the SDK ships.
@pytest.mark.filterwarnings("ignore:.*LoggingHandler.*:DeprecationWarning")
def test_sdk_logging_handler_to_pitwall(live_server: LiveServer) -> None:
    resource = Resource.create({"service.name": "checkout", "deployment.environment": "prod", "host.name": "h1"})
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(SimpleLogRecordProcessor(
        OTLPLogExporter(endpoint=live_server.url + "/v1/logs", timeout=10)))
    tracer = TracerProvider(resource=resource).get_tracer("test")
    logger = logging.getLogger("pitwall.test.otlp")
    logger.propagate = False
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with tracer.start_as_current_span("pay") as span:
            logger.error("payment declined", extra={"order_id": "o-17"})
            trace_id = format(span.get_span_context().trace_id, "032x")
            span_id = format(span.get_span_context().span_id, "016x")
        logger.info("no span here")
        provider.force_flush()
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    r = httpx.get(live_server.url + "/loki/api/v1/series", params={"match[]": '{service_name="checkout"}'})
    (labels,) = r.json()["data"]
    # service.instance.id (which newer SDKs set) is a stream label in Loki's default OTLP config too
    assert {k: v for k, v in labels.items() if k != "service_instance_id"} == {
        "deployment_environment": "prod", "service_name": "checkout"}
    r = httpx.get(live_server.url + f"/api/logs/v1/trace/{trace_id}")
    (stream,) = r.json()["streams"]
    _ts, line, md = stream["values"][0]
    assert line == "payment declined"
    assert md["trace_id"] == trace_id and md["span_id"] == span_id
    assert md["severity_text"] == "ERROR" and md["order_id"] == "o-17" and md["host_name"] == "h1"
    # LogQL on the trace_id field finds the same line.
    got = _query(live_server.url, f'{{service_name="checkout"}} | trace_id="{trace_id}"')
    assert [v[1] for _, vals in got for v in vals] == ["payment declined"]


def test_otlp_json_with_hex_ids_and_errors(live_server: LiveServer) -> None:
    body = {"resourceLogs": [{"resource": {"attributes": [{"key": "k8s.pod.name", "value": {"stringValue": "p1"}}]},
                              "scopeLogs": [{"scope": {"name": "lib"}, "logRecords": [{
                                  "timeUnixNano": "1", "observedTimeUnixNano": str(10**18),
                                  "body": {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "1"}}]}},
                                  "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                                  "severityNumber": 9}]}]}]}
    tr = OtlpLogsTranslator()
    cols = tr.translate(tr.decode(json.dumps(body).encode(), "application/json"))
    assert cols.streams == [(("k8s_pod_name", "p1"), ("service_name", "unknown_service"))]
    assert cols.lines == ['{"a":1}']
    assert cols.metadata is not None
    md = dict(cols.metadata[0])
    assert md["trace_id"] == "5b8efff798038103d269b633813fc60c" and md["scope_name"] == "lib"
    r = httpx.post(live_server.url + "/v1/logs", content=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["message"].startswith("invalid OTLP/JSON logs body")
    r = httpx.post(live_server.url + "/v1/logs", content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
