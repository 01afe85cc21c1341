"""The endpoints controller against the real Kubernetes API over SQLite, with simulated pods
(Pod objects whose status the test writes, as a kubelet would), and through the service proxy."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pitwall.controllers import ControllerRunner
from pitwall.controllers.endpoints import MANAGED_BY, EndpointsReconciler
from pitwall.kube import KubeAPI, KubeClient, NotFoundError
from pitwall.traffic import ServiceProxy
from tests.traffic.conftest import Backend, backends, http_get, load_during, pod_ips

Obj = dict[str, Any]
SLICE = ("discovery.k8s.io/v1", "EndpointSlice")


@pytest.fixture
async def runner(kube: KubeAPI) -> AsyncIterator[ControllerRunner]:
    r = ControllerRunner(kube.client, EndpointsReconciler(kube.client), resync_s=0)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


async def until(check: Callable[[], Any], *, tries: int = 300, every_s: float = 0.02) -> Any:
    """Wait (bounded) until the awaitable ``check()`` returns something truthy; return it."""
    last: Any = None
    for _ in range(tries):
        last = await check()
        if last:
            return last
        await asyncio.sleep(every_s)
    raise AssertionError(f"condition not reached; last: {last!r}")


async def make_pod(client: KubeClient, name: str, ip: str | None, *, ready: bool = True,
                   labels: Obj | None = None, ports: list[Obj] | None = None, node: str = "node-1") -> Obj:
    pod = await client.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels or {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                                                   "ports": ports or [{"name": "http", "containerPort": 8080}]}]},
    })
    if ip is not None:
        pod = await set_pod(client, name, ip=ip, ready=ready)
    return pod


async def set_pod(client: KubeClient, name: str, *, ip: str | None = None, ready: bool | None = None) -> Obj:
    pod = await client.get("v1", "Pod", name, "default")
    st = pod.setdefault("status", {})
    st["phase"] = "Running"
    if ip is not None:
        st["podIP"] = ip
        st["podIPs"] = [{"ip": ip}]
    if ready is not None:
        st["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    return await client.update_status(pod)


async def make_service(client: KubeClient, name: str = "web", *, target: Any = 8080, **spec: Any) -> Obj:
    return await client.create({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default",
                                                            "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": target}], **spec},
    })


async def slices(client: KubeClient, service: str = "web") -> list[Obj]:
    sel = f"kubernetes.io/service-name={service}"
    return (await client.list(*SLICE, "default", label_selector=sel)).items


async def endpoints(client: KubeClient, name: str = "web") -> Obj | None:
    try:
        return await client.get("v1", "Endpoints", name, "default")
    except NotFoundError:
        return None


def addresses(ep: Obj | None, field: str = "addresses") -> set[str]:
    return {a["ip"] for s in (ep or {}).get("subsets") or [] for a in s.get(field) or []}


def slice_view(items: list[Obj]) -> dict[str, tuple[bool, bool, bool]]:
    """address -> (ready, serving, terminating) over all slices."""
    return {e["addresses"][0]: (e["conditions"]["ready"], e["conditions"]["serving"], e["conditions"]["terminating"])
            for s in items for e in s.get("endpoints") or []}


@pytest.mark.timeout(60)
async def test_endpoints_and_slices_from_pods(kube: KubeAPI, runner: ControllerRunner) -> None:
    c = kube.client
    a, b, n = pod_ips(3)
    await make_pod(c, "web-a", a)
    await make_pod(c, "web-b", b)
    await make_pod(c, "web-n", n, ready=False)
    await make_pod(c, "web-pending", None)  # no podIP yet: not an endpoint
    await make_pod(c, "other", pod_ips(1)[0], labels={"app": "other"})
    svc = await make_service(c)

    async def settled() -> Obj | None:
        ep = await endpoints(c)
        return ep if addresses(ep) == {a, b} and addresses(ep, "notReadyAddresses") == {n} else None

    ep = await until(settled)
    assert ep["metadata"]["labels"] == {"tier": "front"}
    assert ep["subsets"][0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    first = next(x for x in ep["subsets"][0]["addresses"] if x["ip"] == a)
    assert first["nodeName"] == "node-1"
    assert first["targetRef"]["kind"] == "Pod" and first["targetRef"]["name"] == "web-a"

    (sl,) = await until(lambda: slices(c))
    labels = sl["metadata"]["labels"]
    assert labels["kubernetes.io/service-name"] == "web"
    assert labels["endpointslice.kubernetes.io/managed-by"] == MANAGED_BY
    assert labels["tier"] == "front"
    assert sl["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
    assert sl["addressType"] == "IPv4"
    assert sl["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert slice_view([sl]) == {a: (True, True, False), b: (True, True, False), n: (False, False, False)}
    ep_a = next(e for e in sl["endpoints"] if e["addresses"] == [a])
    assert ep_a["targetRef"]["name"] == "web-a" and ep_a["nodeName"] == "node-1"


@pytest.mark.timeout(60)
async def test_slices_follow_readiness_labels_and_deletion(kube: KubeAPI, runner: ControllerRunner) -> None:
    c = kube.client
    a, b = pod_ips(2)
    await make_service(c)
    await make_pod(c, "web-a", a)
    await make_pod(c, "web-b", b, ready=False)

    async def view() -> dict[str, tuple[bool, bool, bool]]:
        return slice_view(await slices(c))

    await until(lambda: _eq(view(), {a: (True, True, False), b: (False, False, False)}))
    await set_pod(c, "web-b", ready=True)
    await set_pod(c, "web-a", ready=False)
    await until(lambda: _eq(view(), {a: (False, False, False), b: (True, True, False)}))
    ep = await endpoints(c)
    assert addresses(ep) == {b} and addresses(ep, "notReadyAddresses") == {a}

    # relabelled away from the selector: no longer an endpoint
    pod = await c.get("v1", "Pod", "web-a", "default")
    pod["metadata"]["labels"] = {"app": "elsewhere"}
    await c.update(pod)
    await until(lambda: _eq(view(), {b: (True, True, False)}))

    # a pod being deleted (bound to a node, so it waits its grace period): terminating, not ready
    await set_pod(c, "web-b", ready=True)
    await c.delete("v1", "Pod", "web-b", "default")
    await until(lambda: _eq(view(), {b: (False, True, True)}))
    ep = await endpoints(c)
    assert addresses(ep) == set() and addresses(ep, "notReadyAddresses") == set()

    # the node finishes the deletion: no endpoint left, one empty slice stays
    await c.delete("v1", "Pod", "web-b", "default", grace_period=0)
    await until(lambda: _eq(view(), {}))
    (sl,) = await slices(c)
    assert sl["endpoints"] == [] and sl["ports"] == []

    await c.delete("v1", "Service", "web", "default")

    async def outputs_gone() -> bool:
        return await endpoints(c) is None and not await slices(c)

    await until(outputs_gone)


@pytest.mark.timeout(60)
async def test_named_target_port_resolved_per_pod(kube: KubeAPI, runner: ControllerRunner) -> None:
    c = kube.client
    a, b, x = pod_ips(3)
    await make_pod(c, "web-a", a, ports=[{"name": "http", "containerPort": 8080}])
    await make_pod(c, "web-b", b, ports=[{"name": "http", "containerPort": 9090}])
    await make_pod(c, "web-x", x, ports=[{"name": "metrics", "containerPort": 9100}])
    await make_service(c, target="http")

    async def by_port() -> dict[int, set[str]]:
        out: dict[int, set[str]] = collections.defaultdict(set)
        for s in await slices(c):
            for p in s.get("ports") or []:
                out[p["port"]] |= {e["addresses"][0] for e in s.get("endpoints") or []}
        return dict(out)

    await until(lambda: _eq(by_port(), {8080: {a}, 9090: {b}}))
    got = {tuple((p["name"], p["port"]) for p in s["ports"]): [e["addresses"][0] for e in s["endpoints"]]
           for s in await slices(c)}
    # the pod without an "http" port sits in a slice without ports (as upstream), which no proxy uses
    assert got == {(("http", 8080),): [a], (("http", 9090),): [b], (): [x]}
    ep = await endpoints(c)
    assert ep is not None
    assert sorted((s["ports"][0]["port"], s["addresses"][0]["ip"]) for s in ep["subsets"]) == [(8080, a), (9090, b)]


@pytest.mark.timeout(60)
async def test_publish_not_ready_addresses(kube: KubeAPI, runner: ControllerRunner) -> None:
    c = kube.client
    (n,) = pod_ips(1)
    await make_pod(c, "web-n", n, ready=False)
    await make_service(c, publishNotReadyAddresses=True)
    await until(lambda: _eq(_slice_view_of(c), {n: (True, True, False)}))
    assert addresses(await endpoints(c)) == {n}


@pytest.mark.timeout(60)
async def test_selectorless_service_and_hand_written_slices_are_left_alone(kube: KubeAPI,
                                                                          runner: ControllerRunner) -> None:
    c = kube.client
    await c.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": "default"},
                    "spec": {"ports": [{"port": 80}]}})
    await c.create({"apiVersion": SLICE[0], "kind": SLICE[1],
                    "metadata": {"name": "ext-1", "namespace": "default",
                                 "labels": {"kubernetes.io/service-name": "ext"}},
                    "addressType": "IPv4", "endpoints": [{"addresses": ["127.42.250.1"]}],
                    "ports": [{"name": "", "port": 80}]})
    await make_service(c)  # a selecting one, to know the controller has run
    await until(lambda: slices(c))
    (sl,) = await slices(c, "ext")
    assert sl["metadata"]["name"] == "ext-1" and await endpoints(c, "ext") is None


@pytest.mark.timeout(60)
async def test_proxy_routes_to_ready_pods_only(kube: KubeAPI, runner: ControllerRunner) -> None:
    c = kube.client
    a, b = pod_ips(2)
    proxy = ServiceProxy(c, drain_timeout_s=0.5, connect_budget_s=2.0)
    await proxy.start()
    try:
        async with backends((a, 8080), (b, 8080)):
            await make_pod(c, "web-a", a)
            await make_pod(c, "web-b", b, ready=False)
            svc = await make_service(c)
            ip = svc["spec"]["clusterIP"]

            async def serving(n: int) -> bool:
                return len(proxy.endpoints(ip, 80)) == n

            await until(lambda: serving(1))
            assert {await http_get(ip, 80) for _ in range(6)} == {a}
            await set_pod(c, "web-b", ready=True)
            await until(lambda: serving(2))
            assert {await http_get(ip, 80) for _ in range(6)} == {a, b}
    finally:
        await proxy.stop()


async def _slice_view_of(c: KubeClient) -> dict[str, tuple[bool, bool, bool]]:
    return slice_view(await slices(c))


async def _eq(got: Any, want: Any) -> bool:
    return bool(await got == want)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_rolling_pods_behind_the_controller_lose_no_request(kube: KubeAPI, runner: ControllerRunner) -> None:
    """Pods replaced one by one as a Deployment's rollout does (new pod Ready, old pod deleted: terminating
    for its grace period, its socket closed, then gone) under steady load through the ClusterIP."""
    c = kube.client
    old_ips, new_ips = pod_ips(2), pod_ips(2)
    proxy = ServiceProxy(c, drain_timeout_s=2.0, connect_budget_s=2.0)
    await proxy.start()
    old = [await Backend(ip, 8080).start() for ip in old_ips]
    new = [Backend(ip, 8080) for ip in new_ips]
    try:
        for i, ip in enumerate(old_ips):
            await make_pod(c, f"web-old-{i}", ip)
        svc = await make_service(c)
        cip = svc["spec"]["clusterIP"]

        async def serving(ips: list[str]) -> bool:
            return {b.ip for b in proxy.endpoints(cip, 80)} == set(ips)

        await until(lambda: serving(old_ips))

        async def rollout() -> None:
            await asyncio.sleep(1.0)
            for i in range(2):
                await new[i].start()
                await make_pod(c, f"web-new-{i}", new_ips[i], ready=False)
                await asyncio.sleep(0.3)
                await set_pod(c, f"web-new-{i}", ready=True)  # the kubelet's readiness probe passed
                await asyncio.sleep(1.0)
                await c.delete("v1", "Pod", f"web-old-{i}", "default")  # terminating: out of the ready set
                await asyncio.sleep(1.0)
                await old[i].close_listener()  # SIGTERM handled: stops listening
                await asyncio.sleep(0.5)
                await c.delete("v1", "Pod", f"web-old-{i}", "default", grace_period=0)  # the node is done

        got, failures = await load_during(cip, 80, rollout(), threads=4, requests=500, pace_s=0.02)
        assert failures == []
        assert sum(got.values()) == 2000 and set(got) == set(old_ips) | set(new_ips)
        await until(lambda: serving(new_ips))
    finally:
        for b in old + new:
            await b.stop()
        await proxy.stop()
