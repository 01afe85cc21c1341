"""Real tracing clients send one multi-service trace; both query APIs show it whole.

frontend (OpenTelemetry SDK, OTLP/HTTP protobuf) -> backend (OpenTelemetry
SDK, Zipkin JSON exporter) -> inventory (py_zipkin, Zipkin v2 JSON over its
own HTTP transport). Context crosses services as W3C traceparent / B3 would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from py_zipkin import Encoding, Kind
from py_zipkin.storage import get_default_tracer
from py_zipkin.transport import SimpleHTTPTransport
from py_zipkin.zipkin import ZipkinAttrs, zipkin_span

from tests.conftest import LiveServer


def _provider(service: str, exporter: Any) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p


@pytest.fixture
def chain(live_server: LiveServer) -> Iterator[tuple[str, str]]:
    """Send the three-service trace; yield (server url, trace id hex)."""
    url = live_server.url
    front = _provider("frontend", OTLPSpanExporter(endpoint=f"{url}/v1/traces"))
    back = _provider("backend", ZipkinExporter(endpoint=f"{url}/api/v2/spans"))
    prop = TraceContextTextMapPropagator()
    ft, bt = front.get_tracer("shop.frontend", "1.0"), back.get_tracer("shop.backend")
    with ft.start_as_current_span("GET /checkout", kind=SpanKind.SERVER,
                                  attributes={"http.method": "GET", "http.status_code": 200}) as root:
        with ft.start_as_current_span("call backend", kind=SpanKind.CLIENT,
                                      attributes={"peer.service": "backend", "retries": 2}):
            carrier: dict[str, str] = {}
            prop.inject(carrier)
            ctx = prop.extract(carrier)
            with bt.start_as_current_span("POST /reserve", context=ctx, kind=SpanKind.SERVER) as srv:
                srv.add_event("reserved", {"items": 3})
                srv.set_status(Status(StatusCode.ERROR, "out of stock"))
                sc = srv.get_span_context()
                trace_hex = f"{sc.trace_id:032x}"
                _inventory_call(url, trace_hex, f"{sc.span_id:016x}")
        trace_id = f"{root.get_span_context().trace_id:032x}"
    front.shutdown()
    back.shutdown()
    yield url, trace_id


def _inventory_call(url: str, trace_hex: str, parent_hex: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    transport = SimpleHTTPTransport("127.0.0.1", port)
    attrs = ZipkinAttrs(trace_id=trace_hex, span_id="00000000000000ab", parent_span_id=parent_hex,
                        flags="0", is_sampled=True)
    get_default_tracer()  # py_zipkin keeps its context on a default tracer
    with zipkin_span(service_name="inventory", span_name="lookup", zipkin_attrs=attrs,
                     transport_handler=transport, kind=Kind.SERVER, encoding=Encoding.V2_JSON) as span:
        span.update_binary_annotations({"sku": "A-1"})


def _wait_for_spans(url: str, trace_id: str, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/api/v2/trace/{trace_id}", timeout=5)
        if r.status_code == 200:
            spans = r.json()
            if len(spans) >= n:
                return spans
        time.sleep(0.05)
    raise AssertionError(f"trace {trace_id} has {len(spans)} spans, expected {n}")


def test_chain_is_one_trace_with_correct_parents_in_zipkin_api(chain: tuple[str, str]) -> None:
    url, trace_id = chain
    spans = _wait_for_spans(url, trace_id, 4)
    assert len(spans) == 4
    by_name = {s["name"]: s for s in spans}
    root, client = by_name["GET /checkout"], by_name["call backend"]
    # Zipkin lower-cases span names on ingest (the OTLP-sent names keep their case).
    server, inv = by_name["post /reserve"], by_name["lookup"]
    assert "parentId" not in root
    assert client["parentId"] == root["id"]
    assert server["parentId"] == client["id"]
    assert inv["parentId"] == server["id"]
    assert {s["traceId"] for s in spans} == {trace_id}
    assert root["localEndpoint"]["serviceName"] == "frontend" and root["kind"] == "SERVER"
    assert client["kind"] == "CLIENT" and client["remoteEndpoint"]["serviceName"] == "backend"
    assert server["localEndpoint"]["serviceName"] == "backend"
    assert server["tags"]["error"] == "out of stock"
    assert any(a["value"].startswith('{"reserved"') for a in server["annotations"])
    assert inv["localEndpoint"]["serviceName"] == "inventory" and inv["tags"]["sku"] == "A-1"
    assert root["tags"]["http.status_code"] == "200"


def test_chain_in_native_api_and_search(chain: tuple[str, str]) -> None:
    url, trace_id = chain
    _wait_for_spans(url, trace_id, 4)
    doc = httpx.get(f"{url}/api/traces/v1/{trace_id}", timeout=5).json()
    services = {a["value"]["stringValue"] for rs in doc["resourceSpans"] for a in rs["resource"]["attributes"]
                if a["key"] == "service.name"}
    assert services == {"frontend", "backend", "inventory"}
    spans = [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    client = next(s for s in spans if s["name"] == "call backend")
    assert {"key": "retries", "value": {"intValue": "2"}} in client["attributes"]
    found = httpx.get(f"{url}/api/traces/v1/search", params={"service": "frontend", "attr": "retries>=2"},
                      timeout=5).json()["traces"]
    assert [t["traceId"] for t in found] == [trace_id]
    t = found[0]
    assert (t["rootServiceName"], t["rootSpanName"], t["spanCount"], t["errorCount"]) == (
        "frontend", "GET /checkout", 4, 1)
    assert t["services"] == ["backend", "frontend", "inventory"]
    none = httpx.get(f"{url}/api/traces/v1/search", params={"attr": "retries>2"}, timeout=5).json()
    assert none == {"traces": []}


def test_chain_dependencies_and_grafana_requests(chain: tuple[str, str]) -> None:
    url, trace_id = chain
    _wait_for_spans(url, trace_id, 4)
    now = int(time.time() * 1000) + 1000
    deps = httpx.get(f"{url}/api/v2/dependencies", params={"endTs": now, "lookback": 3_600_000}).json()
    edges = {(d["parent"], d["child"]): d for d in deps}
    assert set(edges) == {("frontend", "backend"), ("backend", "inventory")}
    assert edges[("frontend", "backend")]["callCount"] == 1
    assert edges[("frontend", "backend")]["errorCount"] == 1
    # The requests Grafana's Zipkin data source sends (health check, pickers, search, trace view).
    assert httpx.get(f"{url}/api/v2/services").json() == ["backend", "frontend", "inventory"]
    assert httpx.get(f"{url}/api/v2/spans", params={"serviceName": "frontend"}).json() == [
        "GET /checkout", "call backend"]
    # Names match case-insensitively, as Zipkin's query API does.
    traces = httpx.get(f"{url}/api/v2/traces", params={"serviceName": "BackEnd", "spanName": "POST /reserve"}).json()
    assert len(traces) == 1 and len(traces[0]) == 4
    assert httpx.get(f"{url}/api/v2/spans", params={"serviceName": "FRONTEND"}).json() == [
        "GET /checkout", "call backend"]
    assert httpx.get(f"{url}/api/v2/traces", params={"serviceName": "frontend", "spanName": "get /checkout"}
                     ).json()[0][0]["traceId"] == trace_id
    assert httpx.get(f"{url}/api/v2/traces", params={"serviceName": "nobody"}).json() == []
    assert httpx.get(f"{url}/api/v2/remoteServices", params={"serviceName": "frontend"}).json() == ["backend"]
