"""Real clients end to end: the OpenTelemetry SDK's OTLP/HTTP exporter, and
pitwall scraping a prometheus_client endpoint from its own config."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import MetricsHandler

from pitwall.config import load_settings
from tests.conftest import LiveServer


def _query(url: str, expr: str, **params: Any) -> list[dict[str, Any]]:
    body = httpx.get(url + "/api/v1/query", params={"query": expr, **params}, timeout=10).json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _eventually(fn: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_opentelemetry_sdk_exports_metrics(live_server: LiveServer) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    exporter = OTLPMetricExporter(endpoint=live_server.url + "/v1/metrics")
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "checkout", "service.instance.id": "pod-1", "region": "eu"}),
    )
    meter = provider.get_meter("shop")
    orders = meter.create_counter("orders", unit="1", description="Orders placed.")
    latency = meter.create_histogram("http.server.duration", unit="ms")
    orders.add(3, {"payment": "card"})
    orders.add(2, {"payment": "cash"})
    for v in (3, 7, 40, 300):
        latency.record(v, {"route": "/pay"})
    assert provider.force_flush(10_000)
    provider.shutdown()

    got = {s["metric"]["payment"]: s["value"][1] for s in _query(live_server.url, "orders_total")}
    assert got == {"card": "3", "cash": "2"}
    sample = _query(live_server.url, 'orders_total{payment="card"}')[0]["metric"]
    assert sample["job"] == "checkout" and sample["instance"] == "pod-1"
    info = _query(live_server.url, "target_info")[0]["metric"]
    assert info["region"] == "eu" and info["job"] == "checkout"
    buckets = _query(live_server.url, 'http_server_duration_milliseconds_bucket{le="+Inf"}')
    assert buckets[0]["value"][1] == "4"
    assert _query(live_server.url, "http_server_duration_milliseconds_count")[0]["value"][1] == "4"
    md = httpx.get(live_server.url + "/api/v1/metadata", params={"metric": "orders_total"}).json()["data"]
    assert md["orders_total"][0]["type"] == "counter"


def test_otlp_bad_body_is_400(live_server: LiveServer) -> None:
    r = httpx.post(live_server.url + "/v1/metrics", content=b"\xff\xff garbage",
                   headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 400
    r = httpx.post(live_server.url + "/v1/metrics", content=b"x", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415


@pytest.fixture
def exporter_endpoint() -> Iterator[tuple[str, Gauge, Counter]]:
    registry = CollectorRegistry()
    g = Gauge("queue_depth", "Items waiting.", ["queue"], registry=registry)
    c = Counter("jobs_processed", "Jobs done.", registry=registry)
    g.labels("emails").set(7)
    c.inc(5)
    handler = MetricsHandler.factory(registry)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", g, c
    server.shutdown()
    server.server_close()


def test_scrapes_prometheus_client_endpoint_from_config(tmp_path: Path, exporter_endpoint: Any) -> None:
    target, gauge, _ = exporter_endpoint
    settings = load_settings(
        data_dir=tmp_path / "d", listen="127.0.0.1:0", storage={"fsync": False},
        scrape_configs=[{"job_name": "worker", "scrape_interval": "1s", "scrape_timeout": "1s",
                         "static_configs": [{"targets": [target], "labels": {"env": "test"}}],
                         "metric_relabel_configs": [{"source_labels": ["queue"], "target_label": "q"}]}],
    )
    srv = LiveServer(settings)
    srv.start()
    try:
        up = _eventually(lambda: _query(srv.url, 'up{job="worker"}'))
        assert up[0]["metric"] == {"__name__": "up", "env": "test", "instance": target, "job": "worker"}
        assert up[0]["value"][1] == "1"
        depth = _eventually(lambda: _query(srv.url, "queue_depth"))
        assert depth[0]["metric"]["q"] == "emails" and depth[0]["value"][1] == "7"
        assert _query(srv.url, "jobs_processed_total")[0]["value"][1] == "5"
        gauge.labels("emails").set(9)
        assert _eventually(lambda: _query(srv.url, "queue_depth == 9"))
        targets = httpx.get(srv.url + "/api/v1/targets").json()["data"]["activeTargets"]
        assert targets[0]["health"] == "up" and targets[0]["scrapePool"] == "worker"
        for name in ("scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                     "scrape_series_added"):
            assert _query(srv.url, f'{name}{{job="worker"}}'), name
    finally:
        srv.stop()
