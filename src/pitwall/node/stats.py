"""Usage and state as metrics: kube-state-metrics and cAdvisor series every 15 s, and ``kubectl top``.

Series written through the metrics pillar's ``Appender`` (tenant
``default``), named as community dashboards expect:

- ``kube_pod_status_phase{namespace,pod,uid,phase}`` 1 for the pod's phase, 0 for the others;
- ``kube_pod_container_status_restarts_total{namespace,pod,uid,container}``;
- ``kube_pod_container_status_ready{namespace,pod,uid,container}``;
- ``container_cpu_usage_seconds_total{namespace,pod,container,cpu="total"}`` (all processes of the
  container's process group, those that ended included);
- ``container_memory_working_set_bytes{namespace,pod,container}`` (resident set of the group).

kube-state-metrics series carry ``job="kube-state-metrics"``, cAdvisor ones
``job="kubelet"``, ``metrics_path="/metrics/cadvisor"``, as a Prometheus
scraping a cluster labels them. ``NodeStats`` is also the
``MetricsProvider`` of ``metrics.k8s.io`` (PodMetrics, NodeMetrics).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitwall.core.labels import labels_from_dict
from pitwall.metrics import Appender, SampleBatch
from pitwall.node.container import rfc3339

if TYPE_CHECKING:
    from pitwall.node.kubelet import Kubelet

__all__ = ["NodeStats"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_quantity(cores: float) -> str:
    return f"{max(0, round(cores * 1e9))}n"


def _mem_quantity(b: int) -> str:
    return f"{max(0, b) // 1024}Ki"


class NodeStats:
    """Turns the kubelet's samples into series and metrics-server objects."""

    def __init__(self, kubelet: Kubelet, appender: Appender | None, *, tenant: str = "default") -> None:
        self.kubelet = kubelet
        self.appender = appender
        self.tenant = tenant
        self._node_cpu: list[tuple[float, float]] = []  # (monotonic, busy seconds)
        self.node_memory = 0

    def sample_node(self) -> None:
        try:
            first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
            vals = [int(x) for x in first[1:]]
            busy = (sum(vals) - vals[3] - (vals[4] if len(vals) > 4 else 0)) / _CLK_TCK
            mem = {}
            for line in Path("/proc/meminfo").read_text().splitlines():
                k, _, v = line.partition(":")
                mem[k] = int(v.split()[0]) * 1024
            self.node_memory = mem.get("MemTotal", 0) - mem.get("MemAvailable", 0)
        except (OSError, ValueError, IndexError):
            return
        self._node_cpu = [*self._node_cpu[-1:], (time.monotonic(), busy)]

    def rows(self, ts_ms: int) -> list[tuple[tuple[tuple[str, str], ...], int, float]]:
        """The samples of one scrape."""
        out: list[tuple[tuple[tuple[str, str], ...], int, float]] = []
        node = self.kubelet.node_name
        for w in list(self.kubelet.workers.values()):
            phase = w.phase()
            base = {"namespace": w.namespace, "pod": w.name, "uid": w.uid}
            ksm = {**base, "job": "kube-state-metrics"}
            for p in PHASES:
                out.append((labels_from_dict({**ksm, "__name__": "kube_pod_status_phase", "phase": p}), ts_ms,
                            1.0 if p == phase else 0.0))
            for c in w.containers:
                lc = {**ksm, "container": c.name}
                out.append((labels_from_dict({**lc, "__name__": "kube_pod_container_status_restarts_total"}),
                            ts_ms, float(c.restart_count)))
                out.append((labels_from_dict({**lc, "__name__": "kube_pod_container_status_ready"}), ts_ms,
                            1.0 if c.ready and c.running() else 0.0))
                if not c.ever_started:
                    continue
                cad = {"namespace": w.namespace, "pod": w.name, "container": c.name, "node": node,
                       "image": str(c.spec.get("image", "")), "job": "kubelet", "metrics_path": "/metrics/cadvisor"}
                out.append((labels_from_dict({**cad, "__name__": "container_cpu_usage_seconds_total", "cpu": "total"}),
                            ts_ms, c.cpu_total))
                out.append((labels_from_dict({**cad, "__name__": "container_memory_working_set_bytes"}), ts_ms,
                            float(c.rss if c.running() else 0)))
        return out

    async def write(self) -> None:
        if self.appender is None:
            return
        rows = self.rows(int(time.time() * 1000))
        if rows:
            await self.appender.append(self.tenant, SampleBatch.from_rows(rows))

    async def run(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.write()
            except Exception as e:
                log.warning("node: writing pod metrics failed: %s", e)

    # -- MetricsProvider (kubectl top) ----------------------------------------

    async def pod_metrics(self, namespace: str) -> list[Obj]:
        out: list[Obj] = []
        for w in list(self.kubelet.workers.values()):
            if namespace and w.namespace != namespace:
                continue
            containers = []
            for c in w.containers:
                if not c.running():
                    continue
                rate = 0.0
                if len(c.cpu_samples) == 2:
                    (t0, v0), (t1, v1) = c.cpu_samples
                    rate = (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0
                containers.append({"name": c.name, "usage": {"cpu": _cpu_quantity(rate),
                                                             "memory": _mem_quantity(c.rss)}})
            if not containers:
                continue
            m = w.pod.get("metadata") or {}
            out.append({"metadata": {"name": w.name, "namespace": w.namespace, "labels": m.get("labels") or {},
                                     "creationTimestamp": rfc3339()},
                        "timestamp": rfc3339(), "window": f"{self.kubelet.sample_interval_s:g}s",
                        "containers": containers})
        return out

    async def node_metrics(self) -> list[Obj]:
        rate = 0.0
        if len(self._node_cpu) == 2:
            (t0, v0), (t1, v1) = self._node_cpu
            rate = (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0
        name = self.kubelet.node_name
        return [{"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
                              "creationTimestamp": rfc3339()},
                 "timestamp": rfc3339(), "window": f"{self.kubelet.sample_interval_s:g}s",
                 "usage": {"cpu": _cpu_quantity(rate), "memory": _mem_quantity(self.node_memory)}}]
