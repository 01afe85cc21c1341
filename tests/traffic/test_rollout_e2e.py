"""Issue 14's proof: a Deployment's rolling update under steady load through its Service loses no request.

Everything real: the Kubernetes API over SQLite, the kubelet running pods as processes on 127.42.x.y with
readiness probes and a preStop hook, the ReplicaSet/Deployment controllers and the endpoints controller on
the shared controller loop, and the service proxy on the Service's cluster IP.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pitwall.controllers.endpoints import EndpointsReconciler
from pitwall.controllers.wiring import Registration, build_controllers
from pitwall.kube import KubeAPI
from pitwall.node import Kubelet
from pitwall.node.runtime import kill_leftovers
from pitwall.traffic import ServiceProxy
from tests.traffic.conftest import _one_request

APP = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["POD_IP"].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""


def deployment(replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": "web", "image": "python:3.11", "command": [sys.executable, "-u", "-c", APP],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                    # the usual recipe: keep serving until the endpoints have moved on
                    "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}},
                }],
            }},
        },
    }


@pytest.fixture
async def cluster(kube: KubeAPI, tmp_path: Path) -> AsyncIterator[tuple[KubeAPI, ServiceProxy]]:
    kubelet = Kubelet(kube, data_dir=tmp_path / "node", node_name="e2e-node", backoff_initial_s=0.3,
                      backoff_max_s=1.2, sample_interval_s=0.5, metrics_interval_s=5.0, max_shutdown_grace_s=5.0)
    manager = build_controllers(kube, election=None, extra=[Registration(EndpointsReconciler, workers=1)])
    proxy = ServiceProxy(kube.client, drain_timeout_s=10.0)
    try:
        await kubelet.start()
        await kubelet.wait_synced()
        await manager.start()
        await proxy.start()
        yield kube, proxy
    finally:
        await proxy.stop()
        await manager.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(kubelet.stop(), 30)
        kill_leftovers(tmp_path / "node" / "pods")


def load_until(ip: str, port: int, stop: threading.Event, got: collections.Counter[str], failures: list[str],
               max_requests: int = 4000) -> None:
    for _ in range(max_requests):
        if stop.is_set():
            return
        try:
            got[_one_request(ip, port, 5.0)] += 1
        except OSError as e:
            failures.append(repr(e))
        time.sleep(0.02)


async def _until(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached in {timeout}s; last: {last!r}")


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_deployment_rolling_update_through_the_service_loses_no_request(
        cluster: tuple[KubeAPI, ServiceProxy]) -> None:
    kube, proxy = cluster
    c = kube.client
    await c.create(deployment())
    svc = await c.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                          "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80,
                                                                          "targetPort": "http"}]}})
    ip = svc["spec"]["clusterIP"]

    async def ready_ips() -> set[str]:
        return {b.ip for b in proxy.endpoints(ip, 80)}

    async def two_ready() -> set[str]:
        got = await ready_ips()
        return got if len(got) == 2 else set()

    before = await _until(two_ready, 60)

    async def rolled() -> bool:
        d = await c.get("apps/v1", "Deployment", "web", "default")
        st, gen = d.get("status") or {}, d["metadata"].get("generation")
        pods = (await c.list("v1", "Pod", "default", label_selector="app=web")).items
        return (st.get("observedGeneration") == gen and st.get("updatedReplicas") == 2
                and st.get("availableReplicas") == 2 and st.get("replicas") == 2 and len(pods) == 2
                and len(await ready_ips()) == 2)

    got: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=load_until, args=(ip, 80, stop, got, failures), daemon=True)
               for _ in range(4)]
    for t in threads:
        t.start()
    try:
        await asyncio.sleep(1.0)
        await c.patch("apps/v1", "Deployment", "web", {"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "2026-12-05T00:00:00Z"}}}}}, namespace="default")
        await _until(rolled, 90)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            await asyncio.to_thread(t.join, 30)
    after = await ready_ips()
    assert failures == []
    assert after.isdisjoint(before)  # every pod was replaced...
    assert set(got) >= before | after  # ...while the load ran against old and new ones
    assert sum(got.values()) > 200
