"""A Deployment's real pods (pitwall's kubelet runs them as processes) in Consul's health view, flipping
to critical when their readiness probe fails."""

from __future__ import annotations

import time
from pathlib import Path

import consul
import pytest

from tests.conftest import LiveServer, free_port
from tests.node.conftest import HTTP_SERVER, PY
from tests.registry.test_catalog import eventually, kube

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_deployment_pods_readiness_in_health(server: LiveServer, c: consul.Consul, tmp_path: Path) -> None:
    fail = tmp_path / "unready"
    port = free_port()
    kube(server, "POST", "/apis/apps/v1/namespaces/default/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shopd"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "shopd"}},
                 "template": {"metadata": {"labels": {"app": "shopd"}}, "spec": {
                     "terminationGracePeriodSeconds": 2,
                     "containers": [{"name": "c", "image": "shopd:1", "command": [PY, "-u", "-c", HTTP_SERVER],
                                     "env": [{"name": "PORT", "value": str(port)},
                                             {"name": "FAILFILE", "value": str(fail)}],
                                     "ports": [{"name": "http", "containerPort": port}],
                                     "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                                        "periodSeconds": 1, "failureThreshold": 1}}]}}}})
    kube(server, "POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "shopd"},
        "spec": {"selector": {"app": "shopd"}, "ports": [{"port": 80, "targetPort": "http"}]}})
    try:
        eventually(lambda: len(c.health.service("shopd", passing=True)[1]) == 2, timeout=90)
        idx, up = c.health.service("shopd", passing=True)
        assert {e["Service"]["Port"] for e in up} == {port}
        assert all(e["Service"]["Address"].startswith("127.") for e in up)
        fail.touch()  # every pod's readiness probe now fails
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # blocking reads until nothing passes
            idx, up = c.health.service("shopd", passing=True, index=idx, wait="10s")
            if not up:
                break
        assert up == []
        _, everyone = c.health.service("shopd")
        assert len(everyone) == 2
        assert all(ch["Status"] == "critical" for e in everyone for ch in e["Checks"] if ch["ServiceID"])
        fail.unlink()
        eventually(lambda: len(c.health.service("shopd", passing=True)[1]) == 2, timeout=60)
    finally:
        kube(server, "DELETE", "/apis/apps/v1/namespaces/default/deployments/shopd")
        kube(server, "DELETE", "/api/v1/namespaces/default/services/shopd")
