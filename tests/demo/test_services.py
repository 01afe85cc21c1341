"""The five services as real processes: W3C trace context across calls, logs with trace ids, /metrics."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitwall.demo.runner import free_port
from pitwall.demo.scenario import Scenario
from pitwall.demo.services import SERVICES, TOPOLOGY
from pitwall.demo.supervisor import Supervisor
from tests.demo.conftest import OtlpSink

pytestmark = pytest.mark.slow

SEED = 3


@pytest.fixture
def shop(tmp_path: Path, otlp_sink: OtlpSink) -> Iterator[dict[str, str]]:
    """The five services, exporting to ``otlp_sink``, with the payment outage far away."""
    sup = Supervisor(tmp_path / "logs")
    ports = {name: free_port() for name in SERVICES}
    url = {name: f"http://127.0.0.1:{p}" for name, p in ports.items()}
    # 60 s after the first outage began: the next one is 90 s away.
    epoch = time.time() - Scenario(epoch=0).incident_at_s - 60
    try:
        for name in SERVICES:
            peers = [a for p in TOPOLOGY[name] for a in ("--peer", f"{p}={url[p]}")]
            sup.start(name, [sys.executable, "-m", f"pitwall.demo.services.{name}", "--port",
                             str(ports[name]), "--pitwall", otlp_sink.url, "--seed", str(SEED),
                             "--epoch", str(epoch), *peers], ready_url=url[name] + "/healthz")
        for child in sup.children:
            sup.wait_ready(child, 30)
        yield url
    finally:
        sup.stop_all()


def _post(url: str, body: dict[str, object], request_id: str) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "baggage": f"request.id={request_id}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _wait(cond: object, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)


def test_a_checkout_is_one_trace_across_four_services(shop: dict[str, str], otlp_sink: OtlpSink) -> None:
    statuses = {}
    for i in range(10):
        order = {"order_id": f"t-{i}", "user": "u1", "items": [{"sku": "66VCHSJNUP", "qty": 1}], "card": "visa"}
        statuses[f"t-{i}"] = _post(shop["frontend"] + "/checkout", order, f"req-{i}")
        if statuses[f"t-{i}"] == 201:
            break
    placed = [o for o, s in statuses.items() if s == 201]
    assert placed, statuses

    def server_spans_of_order() -> list[tuple[str, object]]:
        return [(svc, s) for svc, s in otlp_sink.spans()
                if any(a.key == "request.id" and a.value.string_value == f"req-{placed[0][2:]}"
                       for a in s.attributes) and s.kind == 2]  # SPAN_KIND_SERVER

    _wait(lambda: {svc for svc, _ in server_spans_of_order()} >= {"frontend", "checkout", "inventory", "payment"})
    server = server_spans_of_order()
    assert {svc for svc, _ in server} == {"frontend", "checkout", "inventory", "payment"}
    trace_ids = {s.trace_id for _, s in server}  # type: ignore[attr-defined]
    assert len(trace_ids) == 1
    trace_id = trace_ids.pop()
    spans = {s.span_id: (svc, s) for svc, s in otlp_sink.spans() if s.trace_id == trace_id}
    roots = [(svc, s) for svc, s in spans.values() if not s.parent_span_id]
    assert [(svc, s.name) for svc, s in roots] == [("frontend", "POST /checkout")]
    # Every server span below the root has a CLIENT parent in the calling service.
    callers = {"checkout": "frontend", "inventory": "checkout", "payment": "checkout"}
    for svc, s in server:
        if svc == "frontend":
            continue
        parent_svc, parent = spans[s.parent_span_id]  # type: ignore[attr-defined]
        assert parent.kind == 3 and parent_svc == callers[svc], (svc, s.name)  # SPAN_KIND_CLIENT

    _wait(lambda: any(r.trace_id == trace_id for svc, r in otlp_sink.logs() if svc == "payment"))
    payment_logs = [r for svc, r in otlp_sink.logs() if svc == "payment" and r.trace_id == trace_id]
    assert payment_logs and "charged" in payment_logs[0].body.string_value
    assert payment_logs[0].span_id in spans


def test_services_expose_their_own_metrics(shop: dict[str, str]) -> None:
    with urllib.request.urlopen(shop["frontend"] + "/product/L9ECAV7KIM", timeout=10) as r:
        assert json.loads(r.read())["sku"] == "L9ECAV7KIM"
    with urllib.request.urlopen(shop["catalog"] + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'http_server_requests_total{method="GET",route="/products/{sku}",status="200"} 1.0' in text
    assert 'catalog_product_views_total{sku="L9ECAV7KIM"} 1.0' in text
    with urllib.request.urlopen(shop["inventory"] + "/metrics", timeout=10) as r:
        assert 'inventory_stock_level{sku="L9ECAV7KIM"} 60.0' in r.read().decode()


def test_bad_requests_get_4xx(shop: dict[str, str]) -> None:
    assert _post(shop["checkout"] + "/checkout", {"order_id": "x", "items": [{"sku": "nope", "qty": 1}]}, "r") == 400
    assert _post(shop["payment"] + "/charge", {"order_id": "x", "amount": -1}, "r") == 400
    try:
        urllib.request.urlopen(shop["catalog"] + "/nowhere", timeout=10)
        status = 200
    except urllib.error.HTTPError as e:
        status = e.code
    assert status == 404
