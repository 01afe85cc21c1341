"""A Deployment rolled over real pods: the controllers with pitwall's kubelet (processes, readiness probes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pitwall.controllers.wiring import build_controllers
from pitwall.kube.wiring import build_kube
from pitwall.node import Kubelet
from pitwall.node.runtime import kill_leftovers
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.controllers.conftest import eventually
from tests.controllers.test_deployment import PodMonitor, get_d, live_pods
from tests.node.conftest import FAST, HTTP_SERVER, NODE, PY, Sinks, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Any]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    await api.start()
    sinks = Sinks()
    kubelet = Kubelet(api, data_dir=tmp_path / "node", logs=sinks, metrics=sinks, node_name=NODE, **FAST)
    manager = build_controllers(api, election=None)
    try:
        await kubelet.start()
        await kubelet.wait_synced()
        await manager.start()
        yield api
    finally:
        await manager.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(kubelet.stop(), 30)
        kill_leftovers(tmp_path / "node" / "pods")
        await api.stop()
        await store.stop()


def web(version: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                         "terminationGracePeriodSeconds": 2,
                         "containers": [{"name": "c", "image": f"web:{version}", "command": [PY, "-u", "-c", HTTP_SERVER],
                                         "env": [{"name": "PORT", "value": str(port)}],
                                         "ports": [{"name": "http", "containerPort": port}],
                                         "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                                            "periodSeconds": 1}}]}}}}


async def done(api: Any, image: str) -> bool:
    d = await get_d(api)
    st = d.get("status") or {}
    pods = await live_pods(api)
    return (st.get("observedGeneration") == d["metadata"]["generation"] and st.get("updatedReplicas") == 3
            and st.get("availableReplicas") == 3 and st.get("replicas") == 3 and len(pods) == 3
            and all(p["spec"]["containers"][0]["image"] == image for p in pods))


@pytest.mark.timeout(120)
async def test_rolling_update_over_real_pods_keeps_every_replica(cluster: Any) -> None:
    port = free_port()
    await cluster.client.create(web("v1", port))
    await eventually(lambda: done(cluster, "web:v1"), tries=600, every_s=0.1)
    async with PodMonitor(cluster.client) as mon:
        await cluster.client.patch("apps/v1", "Deployment", "web",
                                   {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:v2"}]}}}},
                                   namespace="default", patch_type="strategic")
        await eventually(lambda: done(cluster, "web:v2"), tries=600, every_s=0.1)
    assert mon.min_ready >= 3  # maxUnavailable 0: never fewer than three ready pods
    assert mon.mixed
