"""Access logs on a live `pitwall server`: real pods, a Telemetry object through the Kubernetes API, traffic
through the mesh with httpx from the caller pod's address, and the lines read back through Loki's HTTP API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port, start_pitwall_process, stop_pitwall_process, wait_ready
from tests.traffic.test_mesh_e2e import APP, SLEEP, Live, _deployment, _until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Live]:
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"fsync": False}, "kube": {"mesh_access_log": "json"}}))
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=60, proc=proc)
        s = Live(f"http://127.0.0.1:{port}")
        with s.http:
            yield s
    finally:
        stop_pitwall_process(proc)


def _loki(s: Live, query: str) -> list[tuple[dict[str, str], str]]:
    now = time.time_ns()
    r = s.http.get("/loki/api/v1/query_range", params={"query": query, "start": str(now - 300 * 10**9),
                                                       "end": str(now + 10**9), "limit": "100"})
    assert r.status_code == 200, r.text
    return [(st["stream"], v[1]) for st in r.json()["data"]["result"] for v in st["values"]]


def test_access_log_on_a_live_server(server: Live) -> None:
    ns = "/api/v1/namespaces/default"
    assert server.get("/api/v1/namespaces/istio-system")["metadata"]["name"] == "istio-system"  # made at start
    server.create("/apis/apps/v1/namespaces/default/deployments", _deployment("web", {"app": "web"}, APP))
    server.create("/apis/apps/v1/namespaces/default/deployments", _deployment("sleep", {"app": "sleep"}, SLEEP))
    server.create(f"{ns}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                     "spec": {"selector": {"app": "web"},
                                              "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    # kube.mesh_access_log is json mesh-wide; this Telemetry keeps only errors, mesh-wide
    server.create("/apis/telemetry.istio.io/v1/namespaces/istio-system/telemetries", {
        "apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry", "metadata": {"name": "mesh-default"},
        "spec": {"accessLogging": [{"providers": [{"name": "envoy"}],
                                    "filter": {"expression": "response.code >= 400"}}]}})
    ip = server.get(f"{ns}/services/web")["spec"]["clusterIP"]

    def sleep_ip() -> str:
        return str(server.get(f"{ns}/pods?labelSelector=app%3Dsleep")["items"][0]["status"]["podIP"])

    caller = _until(sleep_ip)
    with httpx.Client(base_url=f"http://{ip}", timeout=10,
                      transport=httpx.HTTPTransport(local_address=caller)) as as_sleep:
        _until(lambda: as_sleep.get("/").status_code == 200)
        for _ in range(3):
            assert as_sleep.get("/ok").status_code == 200
        assert as_sleep.get("/status/503", headers={"x-request-id": "e2e-503"}).status_code == 503

    got = _until(lambda: _loki(server, '{container="istio-proxy", namespace="default"} | json | '
                                       'request_id = "e2e-503"'), timeout=30)
    assert len(got) == 1
    labels, line = got[0]
    obj: dict[str, Any] = json.loads(line)
    assert labels["pod"].startswith("sleep-") and labels["job"] == "default/sleep" and labels["app"] == "sleep"
    assert labels["node"]  # the kubelet's node, as on the pod's own container logs
    assert obj["path"] == "/status/503" and obj["response_code"] == 503
    # Istio's default retryOn names no status code: the upstream's 503 is not retried, so no URX
    assert obj["response_flags"] == "-" and obj["response_code_details"] == "via_upstream"
    assert obj["upstream_cluster"] == "outbound|80||web.default.svc.cluster.local"
    # The filter kept the 200s out
    assert _loki(server, '{container="istio-proxy"} |= "/ok"') == []
    metrics = server.http.get("/metrics").text
    assert "pitwall_mesh_access_log_dropped_total 0.0" in metrics
