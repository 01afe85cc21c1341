"""The service proxy against the real Kubernetes API over SQLite and real TCP backends on 127.42.x.y."""

from __future__ import annotations

import asyncio
import collections

import pytest

from pitwall.kube import KubeAPI
from pitwall.traffic import ServiceProxy
from tests.traffic.conftest import (
    Backend,
    backends,
    cluster_ip,
    endpoint,
    eventually,
    http_get,
    make_service,
    pod_ips,
    put_slice,
)


async def _serving(proxy: ServiceProxy, ip: str, port: int, n: int) -> None:
    await eventually(lambda: len(proxy.endpoints(ip, port)) == n)


@pytest.mark.timeout(30)
async def test_traffic_flows_and_is_counted(kube: KubeAPI, proxy: ServiceProxy) -> None:
    (a,) = pod_ips(1)
    async with backends((a, 8080)):
        svc = await make_service(kube.client, "web")
        await put_slice(kube.client, "web", [endpoint(a)])
        ip = cluster_ip(svc)
        await _serving(proxy, ip, 80, 1)
        assert await http_get(ip, 80) == a
        stats = proxy.stats[("default", "web")]
        assert stats.connections_total == 1
        assert stats.bytes_sent > 0 and stats.bytes_received > 0
        await eventually(lambda: stats.connections_active == 0)


@pytest.mark.timeout(30)
async def test_round_robin_over_ready_endpoints(kube: KubeAPI, proxy: ServiceProxy) -> None:
    ips = pod_ips(3)
    async with backends(*[(i, 8080) for i in ips]) as bs:
        svc = await make_service(kube.client, "rr")
        await put_slice(kube.client, "rr", [endpoint(i) for i in ips])
        ip = cluster_ip(svc)
        await _serving(proxy, ip, 80, 3)
        got = collections.Counter([await http_get(ip, 80) for _ in range(12)])
        assert got == {i: 4 for i in ips}
        assert [b.requests for b in bs] == [4, 4, 4]


@pytest.mark.timeout(30)
async def test_not_ready_endpoint_gets_no_traffic_until_ready(kube: KubeAPI, proxy: ServiceProxy) -> None:
    a, b = pod_ips(2)
    async with backends((a, 8080), (b, 8080)) as (_ba, bb):
        svc = await make_service(kube.client, "nr")
        await put_slice(kube.client, "nr", [endpoint(a), endpoint(b, ready=False)])
        ip = cluster_ip(svc)
        await _serving(proxy, ip, 80, 1)
        assert {await http_get(ip, 80) for _ in range(6)} == {a}
        assert bb.requests == 0
        await put_slice(kube.client, "nr", [endpoint(a), endpoint(b)])
        await _serving(proxy, ip, 80, 2)
        assert {await http_get(ip, 80) for _ in range(6)} == {a, b}


@pytest.mark.timeout(30)
async def test_terminating_serving_endpoints_only_when_none_ready(kube: KubeAPI, proxy: ServiceProxy) -> None:
    a, b = pod_ips(2)
    async with backends((a, 8080), (b, 8080)):
        svc = await make_service(kube.client, "term")
        ip = cluster_ip(svc)
        await put_slice(kube.client, "term", [endpoint(a), endpoint(b, ready=False, serving=True, terminating=True)])
        await _serving(proxy, ip, 80, 1)
        assert {await http_get(ip, 80) for _ in range(4)} == {a}
        await put_slice(kube.client, "term", [endpoint(a, ready=False, serving=False),
                                              endpoint(b, ready=False, serving=True, terminating=True)])
        await eventually(lambda: [str(x) for x in proxy.endpoints(ip, 80)] == [f"{b}:8080"])
        assert {await http_get(ip, 80) for _ in range(4)} == {b}


@pytest.mark.timeout(30)
async def test_refused_connect_is_retried_on_another_endpoint(kube: KubeAPI, proxy: ServiceProxy) -> None:
    live, dead = pod_ips(2)
    async with backends((live, 8080)):
        svc = await make_service(kube.client, "retry")
        await put_slice(kube.client, "retry", [endpoint(live), endpoint(dead)])  # nothing listens on dead
        ip = cluster_ip(svc)
        await _serving(proxy, ip, 80, 2)
        assert {await http_get(ip, 80) for _ in range(6)} == {live}
        assert proxy.stats[("default", "retry")].connect_failures >= 3


@pytest.mark.timeout(30)
async def test_named_target_port_resolved_per_endpoint(kube: KubeAPI, proxy: ServiceProxy) -> None:
    a, b = pod_ips(2)
    async with backends((a, 8080), (b, 9090)):
        svc = await make_service(kube.client, "named", [{"name": "web", "port": 80, "targetPort": "http"}])
        # two slices, as the endpoints controller writes them when pods name their port differently
        await put_slice(kube.client, "named", [endpoint(a)], name="named-1",
                        ports=[{"name": "web", "port": 8080, "protocol": "TCP"}])
        await put_slice(kube.client, "named", [endpoint(b)], name="named-2",
                        ports=[{"name": "web", "port": 9090, "protocol": "TCP"}])
        ip = cluster_ip(svc)
        await _serving(proxy, ip, 80, 2)
        assert {await http_get(ip, 80) for _ in range(4)} == {a, b}


@pytest.mark.timeout(30)
async def test_client_ip_affinity(kube: KubeAPI, proxy: ServiceProxy) -> None:
    ips = pod_ips(3)
    async with backends(*[(i, 8080) for i in ips]):
        svc = await make_service(kube.client, "sticky", sessionAffinity="ClientIP")
        await put_slice(kube.client, "sticky", [endpoint(i) for i in ips])
        ip = cluster_ip(svc)
        await _serving(proxy, ip, 80, 3)
        assert len({await http_get(ip, 80) for _ in range(8)}) == 1


@pytest.mark.timeout(30)
async def test_half_close_passes_through(kube: KubeAPI, proxy: ServiceProxy) -> None:
    (a,) = pod_ips(1)
    echo = await Backend(a, 7000, echo=True).start()
    try:
        svc = await make_service(kube.client, "echo", [{"name": "tcp", "port": 7000}])
        await put_slice(kube.client, "echo", [endpoint(a)], ports=[{"name": "tcp", "port": 7000}])
        ip = cluster_ip(svc)
        await _serving(proxy, ip, 7000, 1)
        r, w = await asyncio.open_connection(ip, 7000)
        payload = bytes(range(256)) * 4096  # 1 MiB, more than every buffer on the way
        w.write(payload)
        w.write_eof()  # half-close: the echo server answers everything, then closes its side
        got = await asyncio.wait_for(r.read(), 10)
        w.close()
        assert got == payload
        stats = proxy.stats[("default", "echo")]
        await eventually(lambda: stats.bytes_received == len(payload))
        assert stats.bytes_sent == len(payload)
    finally:
        await echo.stop()


@pytest.mark.timeout(30)
async def test_not_ready_endpoint_drains_open_connections(kube: KubeAPI, proxy: ServiceProxy) -> None:
    (a,) = pod_ips(1)
    echo = await Backend(a, 7001, echo=True).start()
    try:
        svc = await make_service(kube.client, "drain", [{"name": "tcp", "port": 7001}])
        ports = [{"name": "tcp", "port": 7001}]
        await put_slice(kube.client, "drain", [endpoint(a)], ports=ports)
        ip = cluster_ip(svc)
        await _serving(proxy, ip, 7001, 1)
        r, w = await asyncio.open_connection(ip, 7001)
        w.write(b"one")
        assert await r.readexactly(3) == b"one"
        await put_slice(kube.client, "drain", [endpoint(a, ready=False)], ports=ports)
        await _serving(proxy, ip, 7001, 0)
        w.write(b"two")  # the open connection still flows...
        assert await r.readexactly(3) == b"two"
        assert await asyncio.wait_for(r.read(), 10) == b""  # ...until the drain timeout (0.5 s) closes it
        w.close()
    finally:
        await echo.stop()


@pytest.mark.timeout(30)
async def test_listeners_follow_services(kube: KubeAPI, proxy: ServiceProxy) -> None:
    (a,) = pod_ips(1)
    async with backends((a, 8080)):
        svc = await make_service(kube.client, "gone")
        headless = await make_service(kube.client, "headless", clusterIP="None")
        await put_slice(kube.client, "gone", [endpoint(a)])
        ip = cluster_ip(svc)
        await _serving(proxy, ip, 80, 1)
        assert headless["spec"]["clusterIP"] == "None"
        assert all(addr[0] != "None" for addr in proxy.listening())
        assert await http_get(ip, 80) == a
        # a port added to the Service gets its listener, a port removed loses it
        svc["spec"]["ports"] = [{"name": "alt", "port": 81, "targetPort": 8080}]
        await kube.client.update(svc)
        await eventually(lambda: (ip, 81) in proxy.listening() and (ip, 80) not in proxy.listening())
        await kube.client.delete("v1", "Service", "gone", "default")
        await eventually(lambda: not any(addr[0] == ip for addr in proxy.listening()))
        with pytest.raises(OSError):
            await http_get(ip, 81)


@pytest.mark.timeout(30)
async def test_address_in_use_is_retried(kube: KubeAPI) -> None:
    (a,) = pod_ips(1)
    blocker = await asyncio.start_server(lambda r, w: w.close(), "127.96.250.7", 80)  # someone else holds it
    p = ServiceProxy(kube.client, bind_retry_s=0.1)
    await p.start()
    try:
        async with backends((a, 8080)):
            await make_service(kube.client, "busy", clusterIP="127.96.250.7")
            await put_slice(kube.client, "busy", [endpoint(a)])
            await eventually(lambda: ("127.96.250.7", 80) in p.bind_errors)
            blocker.close()
            await blocker.wait_closed()
            await eventually(lambda: ("127.96.250.7", 80) in p.listening() and not p.bind_errors)
            await eventually(lambda: bool(p.endpoints("127.96.250.7", 80)))
            assert await http_get("127.96.250.7", 80) == a
    finally:
        blocker.close()
        await p.stop()
