"""Pod discovery (``kubernetes_sd_configs``, role pod) from the in-process Kubernetes API, scraping a real exporter."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pitwall.core.errors import ConfigError
from pitwall.kube import KubeAPI, KubeClient, KubePodSource
from pitwall.metrics import Exemplar, MetricMetadata, SampleBatch
from pitwall.metrics.scrape.config import parse_scrape_configs
from pitwall.metrics.scrape.kubernetes import DEFAULT_POD_JOB, pod_groups
from pitwall.metrics.scrape.manager import ScrapeManager
from tests.kube_fixture import started_kube

POD_IP = "127.42.200.7"


class Recorder:
    """An Appender keeping every sample as (labels dict, value)."""

    def __init__(self) -> None:
        self.samples: list[tuple[dict[str, str], float]] = []

    async def append(self, tenant: str, batch: SampleBatch) -> None:
        for i, v in zip(batch.series_idx, batch.values, strict=True):
            self.samples.append((dict(batch.series[int(i)]), float(v)))

    async def append_metadata(self, tenant: str, metadata: Sequence[MetricMetadata]) -> None:
        return None

    async def append_exemplars(self, tenant: str, exemplars: Sequence[Exemplar]) -> None:
        return None


class PodExporter:
    """A pod-like exporter: serves /custom/metrics on the pod's loopback address."""

    def __init__(self, host: str) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                ok = self.path == "/custom/metrics"
                body = b"# TYPE app_requests_total counter\napp_requests_total 42\n" if ok else b"no\n"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pod_exporter() -> Iterator[PodExporter]:
    e = PodExporter(POD_IP)
    yield e
    e.close()


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with started_kube(tmp_path) as api:
        yield api


def pod(name: str, port: int, annotations: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web", "tier.x/y": "a"},
                         "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "web:1",
                                     "ports": [{"containerPort": port, "name": "http"}]}]}}


async def run_pod(client: KubeClient, obj: dict[str, Any], ip: str = POD_IP) -> None:
    created = await client.create(obj)
    created["status"] = {"phase": "Running", "podIP": ip, "hostIP": "127.0.0.1",
                         "conditions": [{"type": "Ready", "status": "True"}]}
    await client.update_status(created)


async def wait_for(check: Any, what: str, steps: int = 500) -> None:
    for _ in range(steps):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(30)
async def test_annotated_pod_is_scraped_by_the_default_job(kube: KubeAPI, pod_exporter: PodExporter) -> None:
    c = kube.client
    port = pod_exporter.port
    await run_pod(c, pod("web-1", port, {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                                         "prometheus.io/path": "/custom/metrics"}))
    await run_pod(c, pod("quiet", port, {}), ip="127.42.200.8")  # not annotated: never scraped
    rec = Recorder()
    mgr = ScrapeManager(rec, configs=[])
    mgr.set_pod_source(KubePodSource(c), default_interval_ms=100)
    await mgr.start()
    try:
        def scraped() -> list[dict[str, str]]:
            return [lb for lb, v in rec.samples if lb.get("__name__") == "app_requests_total" and v == 42]

        await wait_for(lambda: bool(scraped()), "the annotated pod's sample")
        lb = scraped()[0]
        assert lb["job"] == DEFAULT_POD_JOB and lb["instance"] == f"{POD_IP}:{port}"
        assert lb["namespace"] == "default" and lb["pod"] == "web-1" and lb["app"] == "web" and lb["tier_x_y"] == "a"
        snap = mgr.targets(DEFAULT_POD_JOB)
        assert [t.scrape_url for t in snap.active] == [f"http://{POD_IP}:{port}/custom/metrics"]
        assert snap.active[0].discovered_labels["__meta_kubernetes_pod_ready"] == "true"
        assert any(d.discovered_labels.get("__meta_kubernetes_pod_name") == "quiet" for d in snap.dropped)

        # deleting the pod retires its target (watch-driven, no resync needed) and writes staleness markers
        await c.delete("v1", "Pod", "web-1", "default", grace_period=0)
        await wait_for(lambda: not mgr.targets(DEFAULT_POD_JOB).active, "the target to go")
        await wait_for(lambda: any(lb.get("__name__") == "up" and math.isnan(v) for lb, v in rec.samples),
                       "end-of-run staleness markers")
    finally:
        await mgr.stop()


@pytest.mark.timeout(30)
async def test_configured_pod_job_replaces_the_default(kube: KubeAPI, pod_exporter: PodExporter) -> None:
    c = kube.client
    port = pod_exporter.port
    await run_pod(c, pod("web-1", port, {}))
    cfgs = parse_scrape_configs([{
        "job_name": "pods", "scrape_interval": "100ms", "metrics_path": "/custom/metrics",
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": ["default"]},
                                   "selectors": [{"role": "pod", "label": "app=web"}]}],
        "relabel_configs": [{"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "http",
                             "action": "keep"}],
    }])
    rec = Recorder()
    mgr = ScrapeManager(rec, configs=cfgs)
    mgr.set_pod_source(KubePodSource(c))
    await mgr.start()
    try:
        await wait_for(lambda: any(lb.get("__name__") == "app_requests_total" and lb.get("job") == "pods"
                                   for lb, _ in rec.samples), "a scrape by the configured job")
        assert mgr.targets(DEFAULT_POD_JOB).active == []
    finally:
        await mgr.stop()


@pytest.mark.timeout(10)
def test_pod_groups_as_prometheus_builds_them() -> None:
    p = {"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app.kubernetes.io/name": "x"},
                      "annotations": {"prometheus.io/scrape": "true"},
                      "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}]},
         "spec": {"nodeName": "n1", "containers": [
             {"name": "a", "image": "i", "ports": [{"containerPort": 80, "name": "web"},
                                                   {"containerPort": 53, "protocol": "UDP"}]},
             {"name": "b", "image": "j"}],
             "initContainers": [{"name": "init", "image": "k"}]},
         "status": {"podIP": "127.42.0.9", "phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}
    groups = pod_groups([p, {"metadata": {"name": "no-ip"}, "spec": {}, "status": {}}])
    assert [t for ts, _ in groups for t in ts] == ["127.42.0.9:80", "127.42.0.9:53", "127.42.0.9"]
    first = groups[0][1]
    assert first["__meta_kubernetes_pod_label_app_kubernetes_io_name"] == "x"
    assert first["__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name"] == "true"
    assert first["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "true"
    assert first["__meta_kubernetes_pod_ready"] == "false" and first["__meta_kubernetes_pod_phase"] == "Running"
    assert first["__meta_kubernetes_pod_controller_kind"] == "ReplicaSet"
    assert first["__meta_kubernetes_pod_container_port_name"] == "web"
    assert groups[1][1]["__meta_kubernetes_pod_container_port_protocol"] == "UDP"
    assert "__meta_kubernetes_pod_container_port_number" not in groups[2][1]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("sd", "message"), [
    ({"role": "service"}, 'role "service" is not supported'),
    ({"role": "pod", "api_server": "https://k8s:6443"}, "api_server and kubeconfig_file are not supported"),
    ({"role": "pod", "bogus": 1}, "field bogus not found"),
])
def test_bad_kubernetes_sd_config(sd: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_scrape_configs([{"job_name": "x", "kubernetes_sd_configs": [sd]}])
