"""Browser test of the service map drawn from the mesh: Debian's chromium driven by Playwright against a live
pitwall that received ``tests.ui.mesh_seed``'s Istio series by remote write and spans of ``frontend`` and
``checkout`` by OTLP. The mesh-only ``ledger`` is drawn, lights its calls on hover, and the page logs no
console error in either source mode.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.conftest import LiveServer
from tests.ui.browser import NEEDS_CHROMIUM, Browser
from tests.ui.mesh_seed import mesh_series
from tests.ui.seed import _otlp_traces, _post, _remote_write, _span, _wait

from pitwall.config import load_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180), NEEDS_CHROMIUM]

pytest.importorskip("playwright.sync_api")


def _spans(now_ns: int) -> dict[str, list[dict[str, Any]]]:
    """Five traces of frontend -> checkout, as the apps' own SDKs would send them."""
    out: dict[str, list[dict[str, Any]]] = {"frontend": [], "checkout": []}
    for i in range(5):
        tid, start = f"{0xfeed0000 + i:032x}", now_ns - 120 * 10**9 + i * 10**9
        out["frontend"].append(_span(tid, f"{i:08x}00000001", "", "GET /", 2, start, 4_000_000, False, {}))
        out["checkout"].append(_span(tid, f"{i:08x}00000002", f"{i:08x}00000001", "PlaceOrder", 2,
                                     start + 500_000, 2_000_000, False, {}))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("uimesh")
    srv = LiveServer(load_settings(data_dir=base / "data", listen="127.0.0.1:0", storage={"fsync": False},
                                   kube={"enabled": False}))
    srv.start()
    try:
        now_ms = int(time.time() * 1000)
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            _post(c, "/api/v1/write", content=_remote_write(mesh_series(now_ms)),
                  headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                           "X-Prometheus-Remote-Write-Version": "0.1.0"})
            _post(c, "/v1/traces", json=_otlp_traces(_spans(now_ms * 1_000_000)))
            _wait(c, 'istio_requests_total{destination_service_name="ledger"}', lambda r: len(r) == 6)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the spans are searchable once the graph has the merged nodes
                g = c.get("/api/ui/v1/services/graph", params={"from": "now-10m", "to": "now"}).json()
                if any(n["sources"] == ["mesh", "traces"] for n in g.get("nodes", [])):
                    break
                time.sleep(0.2)
            else:
                raise TimeoutError(f"no merged node in {g}")
        yield srv
    finally:
        srv.stop()


def test_mesh_only_service_is_drawn(chromium: Any, server: LiveServer) -> None:
    web = Browser(chromium, server.url)
    try:
        page = web.goto("/services?from=now-10m&to=now")
        ledger = page.locator('[data-node="shop/ledger"]')
        assert ledger.get_attribute("data-sources") == "mesh"
        circle = ledger.locator("circle")
        assert circle.is_visible() and float(circle.get_attribute("r") or 0) > 0
        assert page.locator('[data-node="shop/checkout"]').get_attribute("data-sources") == "mesh traces"
        assert page.locator('[data-node="unknown"]').count() == 1  # callers from outside the mesh
        x = {n: float(page.locator(f'[data-node="{n}"] circle').get_attribute("cx") or 0)
             for n in ("unknown", "shop/frontend", "shop/checkout", "shop/ledger")}
        assert x["unknown"] < x["shop/frontend"] < x["shop/checkout"] < x["shop/ledger"]
        circle.hover()
        hot = page.locator(".edge.hot").evaluate_all("es => es.map(e => e.dataset.from + '>' + e.dataset.to)")
        assert sorted(hot) == ["shop/checkout>shop/ledger", "shop/ledger>shop/postgres"]
        assert page.locator('.edge[data-flags="URX"] text.flag-badge').text_content() == "URX"
        web.shot("service-map-mesh")
        page.locator('[data-mode="mesh"]').click()
        page.wait_for_url("**sources=mesh**")
        assert page.locator('[data-node="shop/ledger"] circle').is_visible()
        assert page.locator('[data-sources="mesh traces"]').count() == 0
        web.assert_clean()
    finally:
        web.ctx.close()
