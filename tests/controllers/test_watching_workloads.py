"""Watching workloads on a whole pitwall server: an annotated pod scraped, kube-state-metrics, the workloads page.

Skipped until ``server.py`` wires ``KubeStateMetrics``, ``KubePodSource`` and ``KubeWorkloads`` (see
docs/orchestration.md, "Watching workloads").
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.config import load_settings

pytestmark = pytest.mark.slow

EXPORTER = r"""
import os, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = b"# TYPE app_hits_total counter\napp_hits_total 7\n"
        self.send_response(200); self.send_header("Content-Type", "text/plain"); self.send_header("Content-Length", str(len(b)))
        self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
http.server.HTTPServer((os.environ["POD_IP"], int(os.environ["PORT"])), H).serve_forever()
"""


async def _query(c: httpx.AsyncClient, q: str) -> list[dict[str, Any]]:
    r = await c.get("/api/v1/query", params={"query": q})
    return list(r.json().get("data", {}).get("result", []))


@pytest.mark.timeout(120)
async def test_a_deployment_is_watched_without_configuration(tmp_path: Path) -> None:
    from pitwall.server import create_app

    s = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False})
    app = create_app(s)
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "exp", "namespace": "default"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "exp"}},
                    "template": {"metadata": {"labels": {"app": "exp"},
                                              "annotations": {"prometheus.io/scrape": "true",
                                                              "prometheus.io/port": "9102"}},
                                 "spec": {"terminationGracePeriodSeconds": 1,
                                          "containers": [{"name": "exp", "image": "exp:1",
                                                          "command": [sys.executable, "-c", EXPORTER],
                                                          "env": [{"name": "PORT", "value": "9102"}]}]}}}}
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://localhost",
                                                                   timeout=30) as c:
        r = await c.post("/apis/apps/v1/namespaces/default/deployments", json=dep)
        assert r.status_code == 201, r.text
        scraped: list[dict[str, Any]] = []
        available: list[dict[str, Any]] = []
        for _ in range(90):
            await asyncio.sleep(1)
            scraped = await _query(c, 'app_hits_total{job="kubernetes-pods"}')
            available = await _query(c, 'kube_deployment_status_replicas_available{deployment="exp"} == 1')
            if scraped and available:
                break
        assert scraped and available, (scraped, available)
        m = scraped[0]["metric"]
        assert m["namespace"] == "default" and m["pod"].startswith("exp-") and m["app"] == "exp"
        page = await c.get("/workloads")
        assert page.status_code == 200 and "/workloads/default/deployment/exp" in page.text
        await c.delete("/apis/apps/v1/namespaces/default/deployments/exp")
