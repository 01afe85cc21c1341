"""Browser tests of the releases and chaos pages: Debian's chromium driven by Playwright against a live
server whose own controllers handle a Canary and an HTTPChaos, with the mesh's Istio metrics written in.

Each page loads without console errors or failed requests, its charts draw, it is screenshotted in both
themes into ``test-artifacts/ui/``, and the halt-all button pauses the experiment after its confirm step.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.conftest import LiveServer, pod_subnets
from tests.ui.browser import NEEDS_CHROMIUM, Browser
from tests.ui.seed import _post, _remote_write

from pitwall.config import load_settings

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(180),
    NEEDS_CHROMIUM,
]

pytest.importorskip("playwright.sync_api")

CANARY = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "web", "namespace": "shop"},
          "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                   "service": {"port": 8080},
                   "analysis": {"interval": "5s", "threshold": 3, "maxWeight": 50, "stepWeight": 10,
                                "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                                             "interval": "1m"},
                                            {"name": "request-duration", "thresholdRange": {"max": 500},
                                             "interval": "1m"}]}}}
# The target: a plain HTTP server as the pod's process (pitwall's node runs the command; the image is a name).
APP = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                       "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                           "terminationGracePeriodSeconds": 1,
                           "containers": [{"name": "app", "image": "web:1", "command": [sys.executable, "-u", "-c", APP],
                                           "ports": [{"name": "http", "containerPort": 8080}]}]}}}}
CHAOS = {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "HTTPChaos",
         "metadata": {"name": "abort-web", "namespace": "shop"},
         "spec": {"mode": "all", "selector": {"labelSelectors": {"app": "web-primary"}}, "target": "Request", "port": 8080,
                  "abort": True, "duration": "10m"}}


def _istio_series(now_ms: int) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    """Thirty minutes of the mesh's inbound request metrics of shop/web (primary and canary; Flagger labels the
    primary's pods ``app: web-primary``), with a burst of 503s on the canary in the last ten minutes."""
    out = []
    base = {"reporter": "destination", "destination_workload_namespace": "shop", "job": "mesh"}
    for workload, rps in (("web-primary", 9.0), ("web", 1.0)):
        ok_pts, err_pts, b100, b500, binf = [], [], [], [], []
        ok = err = 0.0
        for j in range(121):
            t = now_ms - 1_800_000 + j * 15_000
            ok += rps * 15
            err += 0.5 * 15 if workload == "web" and j > 80 else 0.0
            ok_pts.append((t, ok))
            err_pts.append((t, err))
            b100.append((t, ok * 0.9))
            b500.append((t, ok + err * 0.5))
            binf.append((t, ok + err))
        lb = {**base, "destination_workload": workload, "destination_app": workload}
        out.append(({"__name__": "istio_requests_total", **lb, "response_code": "200"}, ok_pts))
        out.append(({"__name__": "istio_requests_total", **lb, "response_code": "503"}, err_pts))
        for le, pts in (("100", b100), ("500", b500), ("+Inf", binf)):
            out.append(({"__name__": "istio_request_duration_milliseconds_bucket", **lb, "le": le}, pts))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("uidel")
    # a /24 of pod addresses of our own: other servers on this machine start pods from 127.42.0.2 up
    srv = LiveServer(load_settings(data_dir=base / "data", listen="127.0.0.1:0", storage={"fsync": False},
                                   kube={"pod_cidr": pod_subnets()[0]}))
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            _post(c, "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
            _post(c, "/apis/apps/v1/namespaces/shop/deployments", json=DEPLOYMENT)
            _post(c, "/apis/flagger.app/v1beta1/namespaces/shop/canaries", json=CANARY)
            _post(c, "/apis/chaos-mesh.org/v1alpha1/namespaces/shop/httpchaos", json=CHAOS)
            _post(c, "/api/v1/write", content=_remote_write(_istio_series(int(time.time() * 1000))),
                  headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                           "X-Prometheus-Remote-Write-Version": "0.1.0"})
            # the controllers' work: the Canary initialised (primary rolled out, routing made), the fault injected
            deadline = time.monotonic() + 120
            cd: dict[str, Any] = {}
            ch: dict[str, Any] = {}
            while time.monotonic() < deadline:
                cd = c.get("/apis/flagger.app/v1beta1/namespaces/shop/canaries/web").json()
                ch = c.get("/apis/chaos-mesh.org/v1alpha1/namespaces/shop/httpchaos/abort-web").json()
                records = ((ch.get("status") or {}).get("experiment") or {}).get("containerRecords") or []
                if (cd.get("status") or {}).get("phase") == "Initialized" and records \
                        and all(r.get("phase") == "Injected" for r in records):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"not initialised and injected: {cd.get('status')} {ch.get('status')}")
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_releases_pages(chromium: Any, server: LiveServer, theme: str) -> None:
    web = Browser(chromium, server.url, theme)
    try:
        page = web.goto("/releases", theme, charts=True)
        assert page.evaluate("document.documentElement.dataset.theme") == theme
        row = page.locator("table.canaries tbody tr").first
        assert "web" in row.inner_text() and "Deployment/web" in row.inner_text()
        web.shot(f"releases-{theme}")
        page.locator("table.canaries a", has_text="web").first.click()
        page.wait_for_load_state("networkidle")
        page.wait_for_function("document.querySelectorAll('.pw-chart[data-rendered]').length === 4")
        assert page.locator("h1").inner_text() == "Canary web"
        # the controller's work: initialised, and the VirtualService it made sends everything to the primary
        assert "Initialized" in page.locator("table.kv").first.inner_text()
        split = page.locator("[data-testid=split]").inner_text()
        assert "web-primary 100%" in split and "web-canary 0%" in split
        # the controller's phase changes on the change stream, under this rollout
        assert "Canary web.shop: Initializing -> Initialized" in page.locator("table.changes").inner_text()
        # the charts drew the canary's 503 burst from the Istio metrics
        assert int(page.locator(".pw-chart").nth(2).get_attribute("data-series-count") or 0) == 2
        web.shot(f"release-{theme}")
        assert web.errors == [], web.errors
    finally:
        web.ctx.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_chaos_pages(chromium: Any, server: LiveServer, theme: str) -> None:
    web = Browser(chromium, server.url, theme)
    try:
        page = web.goto("/chaos", theme, charts=True)
        running = page.locator("table.experiments").first
        assert "abort-web" in running.inner_text() and "app=web-primary" in running.inner_text()
        assert running.locator("[data-testid=chaos-phase]").first.inner_text() == "Running"
        web.shot(f"chaos-{theme}")
        page = web.goto("/chaos/shop/HTTPChaos/abort-web", charts=True)
        assert page.locator(".pw-chart[data-rendered]").count() == 3
        assert int(page.locator(".pw-chart").first.get_attribute("data-series-count") or 0) == 1
        web.shot(f"chaos-experiment-{theme}")
        page.keyboard.press("g")  # the nav shortcuts: g then r jumps to the releases page
        page.keyboard.press("r")
        page.wait_for_url("**/releases?**")
        assert web.errors == [], web.errors
    finally:
        web.ctx.close()


def test_halt_all_button(chromium: Any, server: LiveServer) -> None:
    """Last in the module: it pauses the experiment for good."""
    web = Browser(chromium, server.url, "light")
    try:
        page = web.goto("/chaos", charts=True)
        page.keyboard.press("Tab")  # keyboard: the halt link is reachable and activates with Enter
        page.locator("[data-testid=halt-all]").focus()
        page.keyboard.press("Enter")
        page.wait_for_url("**/chaos/halt**")
        assert "HTTPChaos shop/abort-web" in page.locator("main").inner_text()
        web.shot("chaos-halt-confirm")
        page.locator("[data-testid=halt-confirm]").click()
        page.wait_for_selector("[data-testid=halted]")
        assert "HTTPChaos shop/abort-web" in page.locator("ul.halted").inner_text()
        web.shot("chaos-halted")
        assert web.errors == [], web.errors
        obj = httpx.get(server.url + "/apis/chaos-mesh.org/v1alpha1/namespaces/shop/httpchaos/abort-web").json()
        assert obj["metadata"]["annotations"]["experiment.chaos-mesh.org/pause"] == "true"
    finally:
        web.ctx.close()
