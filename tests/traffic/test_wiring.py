"""The traffic part: the proxy as a component, its counters in the server's self-metrics."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from pitwall.core.lifecycle import Supervised
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.kube import KubeAPI
from pitwall.traffic import build_traffic_part
from tests.traffic.conftest import (
    backends,
    cluster_ip,
    endpoint,
    eventually,
    http_get,
    make_service,
    pod_ips,
    put_slice,
)


@pytest.mark.timeout(30)
async def test_traffic_part_serves_and_exports_counters(kube: KubeAPI) -> None:
    part = build_traffic_part(kube)
    (proxy,) = part.components()
    assert isinstance(proxy, Supervised)
    metrics = SelfMetrics()
    part.register_metrics(metrics)
    await proxy.start()
    try:
        (a,) = pod_ips(1)
        async with backends((a, 8080)):
            svc = await make_service(kube.client, "wired")
            await put_slice(kube.client, "wired", [endpoint(a)])
            ip = cluster_ip(svc)
            await eventually(lambda: bool(part.proxy.endpoints(ip, 80)))
            assert await http_get(ip, 80) == a
            await eventually(lambda: part.proxy.open_connections() == 0)
        text = generate_latest(metrics.registry).decode()
        assert 'pitwall_service_proxy_connections_total{namespace="default",service="wired"} 1.0' in text
        assert "pitwall_service_proxy_listeners 1.0" in text
        assert 'pitwall_service_proxy_open_connections{namespace="default",service="wired"} 0.0' in text
    finally:
        await proxy.stop()
    assert part.proxy.tasks.running == 0
