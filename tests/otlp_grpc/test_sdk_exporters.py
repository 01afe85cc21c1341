"""OTLP/gRPC through the OpenTelemetry SDK's gRPC exporters: what they send is queryable afterwards.

Spans (trace by id), metrics (PromQL) and logs (LogQL) are exported over
gRPC with gzip; a raw gRPC channel checks the status codes the OTLP
specification names (auth, tenant, undecodable, oversize, overload) and
``partial_success``.
"""

from __future__ import annotations

import gzip
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind

from pitwall.config import load_settings
from tests.conftest import LiveServer
from tests.traces.helpers import otlp_request

pytestmark = pytest.mark.timeout(60)

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
WRITER, READER = "writer-secret-0123456789", "reader-secret-0123456789"


def _server(tmp_path: Path, **extra: Any) -> Iterator[LiveServer]:
    s = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                      kube={"enabled": False}, otlp_grpc={"listen": "127.0.0.1:0"}, **extra)
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


def grpc_port(srv: LiveServer) -> int:
    port = srv.app.state.components.otlp_grpc.port
    assert isinstance(port, int) and port > 0
    return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    yield from _server(tmp_path, limits={"max_request_bytes": 64 << 10},
                       traces={"max_spans_per_trace": 2})


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[LiveServer]:
    yield from _server(tmp_path, auth_tokens=[
        {"name": "writer", "token": WRITER, "scopes": ["read", "write"], "tenants": ["team-a", "team-b"]},
        {"name": "reader", "token": READER, "scopes": ["read"], "tenants": ["*"]},
    ])


def _export(port: int, body: bytes, metadata: tuple[tuple[str, str], ...] = (),
            compression: grpc.Compression | None = None) -> bytes:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(TRACE_EXPORT)  # raw bytes in, raw bytes out
        out = call(body, metadata=metadata, timeout=10, compression=compression)
    assert isinstance(out, bytes)
    return out


def _rpc_error(port: int, body: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _export(port, body, metadata)
    return info.value


def _span_body(service: str, trace: str, n: int = 1) -> bytes:
    return otlp_request(service, [{"trace": trace, "span": f"{i + 1:016x}", "name": f"op{i}"} for i in range(n)])


def _get(srv: LiveServer, path: str, tenant: str = "", token: str = "", **params: str) -> httpx.Response:
    headers = {**({"X-Scope-OrgID": tenant} if tenant else {}),
               **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.get(srv.url + path, params=params, headers=headers, timeout=10)


def _poll(fn: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_spans_from_the_sdk_grpc_exporter_with_gzip(server: LiveServer) -> None:
    port = grpc_port(server)
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, compression=grpc.Compression.Gzip)
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop")
    with (tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER,
                                       attributes={"http.status_code": 200}) as root,
          tracer.start_as_current_span("SELECT carts")):
        pass
    provider.shutdown()
    trace_id = f"{root.get_span_context().trace_id:032x}"
    r = _get(server, f"/api/traces/v1/{trace_id}")
    assert r.status_code == 200, r.text
    spans = [sp for rs in r.json()["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]
    assert sorted(sp["name"] for sp in spans) == ["GET /cart", "SELECT carts"]
    res = r.json()["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "checkout"}} in res


def test_metrics_from_the_sdk_grpc_exporter_answer_promql(server: LiveServer) -> None:
    port = grpc_port(server)
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create({"service.name": "billing"}), metric_readers=[reader])
    counter = provider.get_meter("billing").create_counter("invoices", unit="1", description="invoices sent")
    counter.add(7, {"region": "eu"})
    data = reader.get_metrics_data()
    assert data is not None
    exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True, compression=grpc.Compression.Gzip)
    assert exporter.export(data).name == "SUCCESS"
    exporter.shutdown()
    provider.shutdown()

    def value() -> list[Any]:
        r = _get(server, "/api/v1/query", query='invoices_total{region="eu"}')
        assert r.status_code == 200, r.text
        return list(r.json()["data"]["result"])

    result = _poll(value)
    assert [x["value"][1] for x in result] == ["7"]
    assert result[0]["metric"]["job"] == "billing"


def test_logs_from_the_sdk_grpc_exporter_answer_logql(server: LiveServer) -> None:
    port = grpc_port(server)
    provider = LoggerProvider(resource=Resource.create({"service.name": "mailer"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(
        OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True, compression=grpc.Compression.Gzip)))
    # the Logs API as a logging bridge calls it
    provider.get_logger("mailer").emit(LogRecord(body="queue is 42 deep", severity_text="WARN",
                                                 severity_number=SeverityNumber.WARN))
    provider.shutdown()

    def lines() -> list[str]:
        r = _get(server, "/loki/api/v1/query_range", query='{service_name="mailer"}', limit="10")
        assert r.status_code == 200, r.text
        return [v[1] for s in r.json()["data"]["result"] for v in s["values"]]

    assert _poll(lines) == ["queue is 42 deep"]


def test_partial_success_as_over_http(server: LiveServer) -> None:
    # traces.max_spans_per_trace is 2: the third span of one trace is rejected, the rest kept
    out = _export(grpc_port(server), _span_body("api", "ab" * 16, n=3))
    resp = ExportTraceServiceResponse.FromString(out)
    assert resp.partial_success.rejected_spans == 1
    assert "limit" in resp.partial_success.error_message
    r = _get(server, "/api/traces/v1/" + "ab" * 16)
    assert r.status_code == 200


def test_undecodable_is_invalid_argument_and_stores_nothing(server: LiveServer) -> None:
    port = grpc_port(server)
    err = _rpc_error(port, b"\xff\xff\xff\xff not protobuf")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid OTLP protobuf body" in (err.details() or "")
    assert _get(server, "/api/traces/v1/services").json() == {"services": []}


def test_oversize_message_is_resource_exhausted_without_retry_info(server: LiveServer) -> None:
    port = grpc_port(server)
    big = otlp_request("api", [{"trace": "cd" * 16, "span": "0" * 15 + "1", "attrs": {"blob": "x" * 80_000}}])
    err = _rpc_error(port, big)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not any(k == "google.rpc.retryinfo-bin" for k, _ in err.trailing_metadata() or ())
    # gzip makes it small on the wire; the limit still holds once decompressed
    assert len(gzip.compress(big)) < 64 << 10
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as info:
        ch.unary_unary(TRACE_EXPORT)(big, timeout=10, compression=grpc.Compression.Gzip)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _get(server, "/api/traces/v1/services").json() == {"services": []}


def test_inflight_budget_taken_is_resource_exhausted_with_retry_info(server: LiveServer) -> None:
    budget = server.app.state.components.inflight
    held = budget.reservation()
    held.grow(budget.max_bytes)  # another request holds the whole budget
    try:
        err = _rpc_error(grpc_port(server), _span_body("api", "ef" * 16))
    finally:
        held.release()
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(err.trailing_metadata() or ())
    info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert info.retry_delay.seconds >= 1
    assert "grpc-status-details-bin" in trailers
    # once the budget is free the same request goes through
    assert ExportTraceServiceResponse.FromString(_export(grpc_port(server), _span_body("api", "ef" * 16))) == \
        ExportTraceServiceResponse()


def test_bearer_token_scope_and_tenant_from_metadata(auth_server: LiveServer) -> None:
    port = grpc_port(auth_server)
    body = _span_body("payments", "12" * 16)
    assert _rpc_error(port, body).code() == grpc.StatusCode.UNAUTHENTICATED
    assert _rpc_error(port, body, (("authorization", "Bearer nope"),)).code() == grpc.StatusCode.UNAUTHENTICATED
    denied = _rpc_error(port, body, (("authorization", f"Bearer {READER}"),))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'write' scope" in (denied.details() or "")
    other = _rpc_error(port, body, (("authorization", f"Bearer {WRITER}"), ("x-scope-orgid", "team-z")))
    assert other.code() == grpc.StatusCode.PERMISSION_DENIED
    _export(port, body, (("authorization", f"Bearer {WRITER}"), ("x-scope-orgid", "team-b")))
    path = "/api/traces/v1/" + "12" * 16
    assert _get(auth_server, path, tenant="team-b", token=READER).status_code == 200
    assert _get(auth_server, path, tenant="team-a", token=READER).status_code == 404
    # the SDK exporter with its headers argument
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True,
                                headers=(("authorization", f"Bearer {WRITER}"), ("x-scope-orgid", "team-a")))
    provider = TracerProvider(resource=Resource.create({"service.name": "ledger"}))
    with provider.get_tracer("t").start_as_current_span("post") as sp:
        pass
    provider.shutdown()
    assert exporter.export([sp]) == SpanExportResult.SUCCESS  # type: ignore[list-item]
    exporter.shutdown()
    got = _get(auth_server, "/api/traces/v1/services", tenant="team-a", token=READER).json()
    assert got == {"services": ["ledger"]}


def _make_cert(dir_: Path) -> tuple[Path, Path]:
    cert, key = dir_ / "grpc.crt", dir_ / "grpc.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True,
                   timeout=60)
    return cert, key


def test_tls_from_the_http_listener_settings(tmp_path: Path) -> None:
    cert, key = _make_cert(tmp_path)
    gen = _server(tmp_path, tls_cert_file=cert, tls_key_file=key)
    srv = next(gen)
    try:
        port = grpc_port(srv)
        exporter = OTLPSpanExporter(endpoint=f"https://localhost:{port}",
                                    credentials=grpc.ssl_channel_credentials(cert.read_bytes()))
        provider = TracerProvider(resource=Resource.create({"service.name": "secure"}))
        with provider.get_tracer("t").start_as_current_span("op") as sp:
            pass
        provider.shutdown()
        assert exporter.export([sp]) == SpanExportResult.SUCCESS  # type: ignore[list-item]
        exporter.shutdown()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError):
            ch.unary_unary(TRACE_EXPORT)(_span_body("plain", "34" * 16), timeout=5)
    finally:
        srv.stop()
