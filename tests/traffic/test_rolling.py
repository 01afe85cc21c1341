"""No request lost through the ClusterIP while endpoints are swapped the way a rolling update swaps them."""

from __future__ import annotations

import asyncio

import pytest

from pitwall.kube import KubeAPI
from pitwall.traffic import ServiceProxy
from tests.traffic.conftest import (
    Backend,
    cluster_ip,
    endpoint,
    eventually,
    load_during,
    make_service,
    pod_ips,
    put_slice,
)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_rolling_swap_under_steady_load_loses_no_request(kube: KubeAPI, proxy: ServiceProxy) -> None:
    """2,000 requests over about 10 s from 4 threads, each on a new connection, while two old endpoints are
    replaced by two new ones: new ready, then old not ready (terminating), then the old socket closes."""
    old_ips, new_ips = pod_ips(2), pod_ips(2)
    old = [await Backend(ip, 8080).start() for ip in old_ips]
    new = [Backend(ip, 8080) for ip in new_ips]
    state = {ip: endpoint(ip) for ip in old_ips}
    svc = await make_service(kube.client, "roll")
    ip = cluster_ip(svc)
    await put_slice(kube.client, "roll", list(state.values()))
    await eventually(lambda: len(proxy.endpoints(ip, 80)) == 2)

    async def publish() -> None:
        await put_slice(kube.client, "roll", list(state.values()))

    async def rollout() -> None:
        await asyncio.sleep(1.0)
        for i in range(2):
            await new[i].start()
            state[new_ips[i]] = endpoint(new_ips[i])
            await publish()
            await asyncio.sleep(1.0)
            state[old_ips[i]] = endpoint(old_ips[i], ready=False, serving=True, terminating=True)
            await publish()
            await asyncio.sleep(1.0)
            await old[i].close_listener()  # the old pod stops listening, finishes what it had
            await asyncio.sleep(1.0)
            del state[old_ips[i]]
            await publish()

    try:
        got, failures = await load_during(ip, 80, rollout(), threads=4, requests=500, pace_s=0.02)
    finally:
        for b in old + new:
            await b.stop()
    assert failures == []
    assert sum(got.values()) == 2000
    assert set(got) == set(old_ips) | set(new_ips)  # the load really spanned the swap
    assert proxy.endpoints(ip, 80) and {b.ip for b in proxy.endpoints(ip, 80)} == set(new_ips)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_endpoint_closing_before_it_is_marked_loses_no_request(kube: KubeAPI, proxy: ServiceProxy) -> None:
    """An old endpoint stops listening before the proxy hears it is not ready (a pod that exits on SIGTERM
    at once): connects it refuses are retried on another endpoint, so no request fails."""
    old_ip, new_ip = pod_ips(2)
    old, new = await Backend(old_ip, 8080).start(), Backend(new_ip, 8080)
    svc = await make_service(kube.client, "abrupt")
    ip = cluster_ip(svc)
    await put_slice(kube.client, "abrupt", [endpoint(old_ip)])
    await eventually(lambda: len(proxy.endpoints(ip, 80)) == 1)

    async def swap() -> None:
        await asyncio.sleep(1.0)
        await new.start()
        await put_slice(kube.client, "abrupt", [endpoint(old_ip), endpoint(new_ip)])
        await asyncio.sleep(1.0)
        await old.close_listener()
        await asyncio.sleep(1.0)  # refused meanwhile, until the slice says so
        await put_slice(kube.client, "abrupt", [endpoint(new_ip)])

    try:
        got, failures = await load_during(ip, 80, swap(), threads=2, requests=250, pace_s=0.02)
    finally:
        await old.stop()
        await new.stop()
    assert failures == []
    assert sum(got.values()) == 500 and set(got) == {old_ip, new_ip}
    assert proxy.stats[("default", "abrupt")].connect_failures > 0
