"""The mesh's HTTP data path through httpx: Istio's VirtualService, DestinationRule and AuthorizationPolicy
applied through the Kubernetes API (Istio's CRDs installed), real HTTP backends on 127.42.x.y pod addresses,
callers identified by their pod IP (httpx binds it as the source address)."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.incidents import ChangeLog
from pitwall.kube import KubeAPI, KubeError
from pitwall.kube.wiring import build_kube
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traffic import ServiceProxy
from pitwall.traffic.http import HttpLimits
from pitwall.traffic.istio_crds import istio_crds
from pitwall.traffic.mesh import MeshConfig
from pitwall.traffic.telemetry import LABELS, MeshTelemetry
from tests.traffic.conftest import cluster_ip, endpoint, eventually, make_service, pod_ips, put_slice
from tests.traffic.mesh_helpers import App, add_pod, apply, authz, dr, vs

pytestmark = pytest.mark.timeout(60)

FQDN = "web.default.svc.cluster.local"


class World:
    """A KubeAPI with Istio's CRDs, the proxy, a Service ``web`` (port 80, name http) and its pods."""

    def __init__(self, kube: KubeAPI, proxy: ServiceProxy, telemetry: MeshTelemetry) -> None:
        self.kube, self.proxy, self.telemetry = kube, proxy, telemetry
        self.client = kube.client
        self.apps: list[App] = []
        self.ip = ""
        self.caller_ip, self.other_ip = pod_ips(2)

    async def web(self, *pods: tuple[str, dict[str, str], dict[str, Any]]) -> list[App]:
        """Service ``web`` with one pod (and backend) per ``(name, labels, App options)``."""
        ips = pod_ips(len(pods))
        apps = []
        for ip, (name, labels, opts) in zip(ips, pods, strict=True):
            await add_pod(self.client, name, ip, {"app": "web", **labels}, sa="web")
            apps.append(await App(ip, 8080, name, **opts).start())
        self.apps += apps
        svc = await make_service(self.client, "web")
        await put_slice(self.client, "web", [endpoint(ip) for ip in ips])
        self.ip = cluster_ip(svc)
        await add_pod(self.client, "sleep", self.caller_ip, {"app": "sleep"}, sa="sleep")
        await add_pod(self.client, "other", self.other_ip, {"app": "other"}, sa="other")
        await eventually(lambda: len(self.proxy.endpoints(self.ip, 80)) == len(ips)
                         and self.caller_ip in self.proxy.pods and all(ip in self.proxy.pods for ip in ips))
        return apps

    def http(self, source: str | None = None, **kw: Any) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=source or self.caller_ip)
        return httpx.AsyncClient(base_url=f"http://{self.ip}", transport=transport, timeout=10, **kw)

    async def configure(self, obj: dict[str, Any], ready: Callable[[MeshConfig], bool]) -> None:
        await apply(self.client, obj)
        await eventually(lambda: ready(self.proxy.mesh))

    def series(self, **want: str) -> int:
        """Requests counted under label values ``want``."""
        total = 0
        for key, acc in self.telemetry.series().items():
            labels = dict(zip(LABELS, key, strict=True))
            if all(labels.get(k) == v for k, v in want.items()):
                total += acc.count
        return total


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    kube = build_kube(store)
    kube.add_builtin_crds(istio_crds())
    await kube.start()
    tel = MeshTelemetry(None)
    proxy = ServiceProxy(kube.client, drain_timeout_s=0.5, telemetry=tel, changes=ChangeLog(store),
                         http_limits=HttpLimits(max_header_bytes=8192, max_body_bytes=65536))
    await proxy.start()
    await proxy.wait_synced(10)
    w = World(kube, proxy, tel)
    try:
        yield w
    finally:
        await proxy.stop()
        for a in w.apps:
            await a.stop()
        await kube.stop()
        await store.stop()


def _subsets() -> dict[str, Any]:
    return {"subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}


async def _names(c: httpx.AsyncClient, n: int, **kw: Any) -> collections.Counter[str]:
    got: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        r = await c.get("/", **kw)
        assert r.status_code == 200, r.text
        got[r.json()["name"]] += 1
    return got


async def test_default_route_balances_and_counts(world: World) -> None:
    await world.web(("a", {}, {}), ("b", {}, {}))
    async with world.http() as c:
        got = await _names(c, 10)
    assert got == {"a": 5, "b": 5}
    assert sum(a.connections for a in world.apps) <= 4  # upstream connections are kept alive and reused
    assert world.series(source_workload="sleep", source_principal="spiffe://cluster.local/ns/default/sa/sleep",
                        destination_service=FQDN, destination_service_name="web", destination_workload="a",
                        response_code="200", response_flags="-", request_protocol="http") == 5


async def test_weighted_split_over_subsets(world: World) -> None:
    await world.web(("v1-a", {"version": "v1"}, {}), ("v1-b", {"version": "v1"}, {}), ("v2", {"version": "v2"}, {}))
    await world.configure(dr("web", _subsets()), lambda m: m.dest_rule(FQDN) is not None)
    await world.configure(vs("web", [{"route": [{"destination": {"host": "web", "subset": "v1"}, "weight": 80},
                                                {"destination": {"host": "web", "subset": "v2"}, "weight": 20}]}]),
                          lambda m: m.routes_for(FQDN) is not None)
    async with world.http() as c:
        got = await _names(c, 400)
    assert set(got) == {"v1-a", "v1-b", "v2"}
    assert 52 <= got["v2"] <= 108  # 80 expected; binomial sd 8: 3.5 sd either side
    assert abs(got["v1-a"] - got["v1-b"]) <= 2  # round robin inside the subset


async def test_header_match_and_default_route(world: World) -> None:
    await world.web(("v1", {"version": "v1"}, {}), ("v2", {"version": "v2"}, {}))
    await world.configure(dr("web", _subsets()), lambda m: m.dest_rule(FQDN) is not None)
    await world.configure(vs("web", [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [{"destination": {"host": "web",
                                                                                            "subset": "v2"}}]},
        {"match": [{"uri": {"regex": "/api/v[0-9]+/.*"}, "method": {"exact": "GET"}}],
         "route": [{"destination": {"host": "web", "subset": "v2"}}]},
        {"route": [{"destination": {"host": "web", "subset": "v1"}}]}]), lambda m: m.routes_for(FQDN) is not None)
    async with world.http() as c:
        assert await _names(c, 4, headers={"end-user": "jason"}) == {"v2": 4}
        assert await _names(c, 4, headers={"end-user": "mary"}) == {"v1": 4}
        assert (await c.get("/api/v3/items")).json()["name"] == "v2"
        assert (await c.post("/api/v3/items")).json()["name"] == "v1"
        assert (await c.get("/api/vx/items")).json()["name"] == "v1"


async def test_query_params_source_labels_and_no_route(world: World) -> None:
    await world.web(("v1", {"version": "v1"}, {}), ("v2", {"version": "v2"}, {}))
    await world.configure(dr("web", _subsets()), lambda m: m.dest_rule(FQDN) is not None)
    await world.configure(vs("web", [
        {"match": [{"queryParams": {"canary": {"exact": "yes"}}}], "route": [{"destination": {"host": "web",
                                                                                            "subset": "v2"}}]},
        {"match": [{"sourceLabels": {"app": "sleep"}}], "route": [{"destination": {"host": "web", "subset": "v1"}}]},
    ]), lambda m: m.routes_for(FQDN) is not None)
    async with world.http() as c:
        assert (await c.get("/?canary=yes")).json()["name"] == "v2"
        assert (await c.get("/")).json()["name"] == "v1"
    async with world.http(world.other_ip) as c:
        r = await c.get("/")
        assert r.status_code == 404 and r.text == ""  # no route matched: Envoy's NR
    assert world.series(response_code="404", response_flags="NR", source_workload="other") == 1


async def test_rewrite_redirect_and_headers(world: World) -> None:
    (app,) = await world.web(("a", {}, {}))
    await world.configure(vs("web", [
        {"match": [{"uri": {"prefix": "/old"}}], "redirect": {"uri": "/new", "authority": "example.org"}},
        {"match": [{"uri": {"prefix": "/api/"}}], "rewrite": {"uri": "/v2/"},
         "headers": {"request": {"set": {"x-set": "1"}, "add": {"x-added": "2"}, "remove": ["x-drop"]},
                     "response": {"set": {"x-resp": "yes"}, "remove": ["x-backend"]}},
         "route": [{"destination": {"host": "web"}}]},
    ]), lambda m: m.routes_for(FQDN) is not None)
    async with world.http() as c:
        r = await c.get("/old/page")
        assert r.status_code == 301 and r.headers["location"] == "http://example.org/new"
        r = await c.get("/api/items?x=1", headers={"x-drop": "gone", "x-set": "0"})
        assert r.status_code == 200
        seen = r.json()
        assert seen["path"] == "/v2/items?x=1"
        assert seen["headers"]["x-set"] == "1" and seen["headers"]["x-added"] == "2"
        assert "x-drop" not in seen["headers"]
        assert seen["headers"]["traceparent"].startswith("00-") and len(seen["headers"]["x-b3-traceid"]) == 32
        assert r.headers["x-resp"] == "yes" and "x-backend" not in r.headers
    assert len(app.requests) == 1  # the redirect never reached the backend


async def test_retries_on_5xx_and_default_policy(world: World) -> None:
    (app,) = await world.web(("flaky", {}, {"fail_first": 2}))
    async with world.http() as c:
        # Istio's default policy retries connect failures, not a 503 answer.
        r = await c.get("/")
        assert r.status_code == 503 and len(app.requests) == 1
        app.fail_first = 2
        await world.configure(vs("web", [{"route": [{"destination": {"host": "web"}}],
                                          "retries": {"attempts": 3, "retryOn": "5xx"}}]),
                              lambda m: m.routes_for(FQDN) is not None)
        r = await c.get("/")
        assert r.status_code == 200 and len(app.requests) == 4  # 1 + two failed tries + the good one
        app.fail_first = 10
        r = await c.get("/")
        assert r.status_code == 503 and len(app.requests) == 8  # 1 try + 3 retries, then the last answer
        assert world.series(response_code="503", response_flags="URX") == 1
        await world.configure(vs("web", [{"route": [{"destination": {"host": "web"}}],
                                          "retries": {"attempts": 2, "retryOn": "gateway-error,409"}}]),
                              lambda m: (r := m.routes_for(FQDN)) is not None and r[0].retry.attempts == 2)
        app.fail_first, app.status = 0, 409
        assert (await c.get("/")).status_code == 409 and len(app.requests) == 11  # status codes in retryOn


async def test_timeout_and_per_try_timeout(world: World) -> None:
    (app,) = await world.web(("slow", {}, {"delay_s": 0.5}))
    await world.configure(vs("web", [{"route": [{"destination": {"host": "web"}}], "timeout": "0.1s",
                                      "retries": {"attempts": 0}}]), lambda m: m.routes_for(FQDN) is not None)
    async with world.http() as c:
        r = await c.get("/")
        assert r.status_code == 504 and r.text == "upstream request timeout"
        await world.configure(vs("web", [{"route": [{"destination": {"host": "web"}}],
                                          "retries": {"attempts": 2, "perTryTimeout": "0.05s",
                                                      "retryOn": "reset"}}]),
                              lambda m: (r := m.routes_for(FQDN)) is not None and r[0].timeout_s is None)
        before = len(app.requests)
        r = await c.get("/")
        assert r.status_code == 504
        await eventually(lambda: len(app.requests) == before + 3)  # each per-try timeout retried
    assert world.series(response_code="504", response_flags="UT") >= 1


async def test_fault_abort_and_delay(world: World) -> None:
    (app,) = await world.web(("a", {}, {}))
    await world.configure(vs("web", [
        {"match": [{"headers": {"x-abort": {}}}], "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}},
         "route": [{"destination": {"host": "web"}}], "retries": {"attempts": 3, "retryOn": "5xx"}},
        {"fault": {"delay": {"fixedDelay": "0.05s", "percentage": {"value": 100}}},
         "route": [{"destination": {"host": "web"}}]}]), lambda m: m.routes_for(FQDN) is not None)
    routes = world.proxy.mesh.routes_for(FQDN)
    assert routes is not None and routes[0].retry.attempts == 0 and routes[0].timeout_s is None  # Istio's rule
    async with world.http() as c:
        r = await c.get("/", headers={"x-abort": "1"})
        assert r.status_code == 418 and r.text == "fault filter abort"
        assert not app.requests
        assert (await c.get("/")).status_code == 200
    assert world.series(response_code="418", response_flags="FI") == 1
    assert world.series(response_code="200", response_flags="DI") == 1


async def test_outlier_detection_ejects_the_failing_host(world: World) -> None:
    good, bad = await world.web(("good", {}, {}), ("bad", {}, {"status": 500}))
    await world.configure(dr("web", {"trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}, "outlierDetection": {
        "consecutive5xxErrors": 2, "interval": "1s", "baseEjectionTime": "30s", "maxEjectionPercent": 50}}}),
        lambda m: m.dest_rule(FQDN) is not None)
    await world.configure(vs("web", [{"route": [{"destination": {"host": "web"}}], "retries": {"attempts": 0}}]),
                          lambda m: m.routes_for(FQDN) is not None)
    async with world.http() as c:
        codes = [(await c.get("/")).status_code for _ in range(20)]
    assert codes.count(500) == 2 and len(bad.requests) == 2  # ejected after its second consecutive 5xx
    assert len(good.requests) == 18
    assert codes[-10:] == [200] * 10
    cluster = world.proxy.clusters()["outbound|80||" + FQDN]
    assert cluster.ejections_total == 1
    assert world.proxy.changes is not None
    log = world.proxy.changes
    assert isinstance(log, ChangeLog)

    async def ejection_recorded() -> bool:
        return len(await log.between(0, 2**62, service="default/web")) == 1

    await eventually(ejection_recorded)
    (ev,) = await log.between(0, 2**62, service="default/web")
    assert ev.source == "mesh" and ev.summary == f"outlier detection ejected pod default/bad from outbound|80||{FQDN} for 30s"


async def test_max_ejection_percent_keeps_hosts_in(world: World) -> None:
    await world.web(("a", {}, {"status": 503}), ("b", {}, {"status": 503}))
    await world.configure(dr("web", {"trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 1,
                                                                            "maxEjectionPercent": 50}}}),
                          lambda m: m.dest_rule(FQDN) is not None)
    async with world.http() as c:
        for _ in range(6):
            assert (await c.get("/")).status_code == 503
    assert world.proxy.clusters()["outbound|80||" + FQDN].ejected(asyncio.get_running_loop().time()) <= 1


async def test_connection_pool_overflow(world: World) -> None:
    await world.web(("slow", {}, {"delay_s": 0.3}))
    await world.configure(dr("web", {"trafficPolicy": {"connectionPool": {
        "tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}}}), lambda m: m.dest_rule(FQDN)
        is not None)
    async with world.http() as c:
        rs = await asyncio.gather(*[c.get("/") for _ in range(6)])
    over = [r for r in rs if r.status_code == 503]
    assert len(over) == 4 and sum(r.status_code == 200 for r in rs) == 2  # one in flight, one pending
    assert all(r.headers["x-envoy-overloaded"] == "true" for r in over)
    assert over[0].text == "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    assert world.series(response_code="503", response_flags="UO") == 4


async def test_upstream_errors_answer_as_envoy(world: World) -> None:
    dead, gone = pod_ips(2)
    svc = await make_service(world.client, "dead")
    await put_slice(world.client, "dead", [endpoint(dead)])
    await eventually(lambda: len(world.proxy.endpoints(cluster_ip(svc), 80)) == 1)
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"http://{cluster_ip(svc)}/")
        assert r.status_code == 503
        assert r.text.startswith("upstream connect error or disconnect/reset before headers. reset reason: ")
        await put_slice(world.client, "dead", [endpoint(gone, ready=False)])
        await eventually(lambda: not world.proxy.endpoints(cluster_ip(svc), 80))
        r = await c.get(f"http://{cluster_ip(svc)}/")
        assert r.status_code == 503 and r.text == "no healthy upstream"


async def test_size_limits(world: World) -> None:
    (app,) = await world.web(("a", {}, {}))
    async with world.http() as c:
        assert (await c.get("/", headers={"x-big": "v" * 9000})).status_code == 431
    async with world.http() as c:
        assert (await c.post("/", content=b"x" * 70000)).status_code == 413
        assert (await c.post("/", content=b"x" * 1000)).status_code == 200
    assert [len(r["body"]) for r in app.requests] == [1000]


async def test_authorization_policy_allow_and_deny(world: World) -> None:
    await world.web(("a", {}, {}))
    await world.configure(authz("web-allow", {"selector": {"matchLabels": {"app": "web"}}, "action": "ALLOW",
                                              "rules": [{"from": [{"source": {"principals": [
                                                  "cluster.local/ns/default/sa/sleep"]}}],
                                                  "to": [{"operation": {"methods": ["GET"]}}]}]}),
                          lambda m: m.authz is not None and len(m.authz.policies) == 1)
    async with world.http() as c:
        assert (await c.get("/")).status_code == 200
        r = await c.post("/")
        assert r.status_code == 403 and r.text == "RBAC: access denied"
    async with world.http(world.other_ip) as c:
        assert (await c.get("/")).status_code == 403
    await world.configure(authz("no-admin", {"action": "DENY", "rules": [{"to": [{"operation": {
        "paths": ["/admin*"]}}]}]}), lambda m: m.authz is not None and len(m.authz.policies) == 2)
    await world.configure(authz("ext", {"action": "CUSTOM", "provider": {"name": "x"}, "rules": [{}]}),
                          lambda m: m.authz is not None and "default/ext" in m.authz.skipped)
    async with world.http() as c:
        assert (await c.get("/admin/users")).status_code == 403
        assert (await c.get("/users")).status_code == 200
    assert world.series(response_code="403", source_workload="other") == 1


async def test_config_swap_is_atomic(world: World) -> None:
    await world.web(("v1", {"version": "v1"}, {}), ("v2", {"version": "v2"}, {}))
    await world.configure(dr("web", _subsets()), lambda m: m.dest_rule(FQDN) is not None)

    def config(subset: str) -> dict[str, Any]:
        return vs("web", [{"route": [{"destination": {"host": "web", "subset": subset}}],
                           "headers": {"response": {"set": {"x-config": subset}}}}])

    await world.configure(config("v1"), lambda m: m.routes_for(FQDN) is not None)
    pairs: collections.Counter[tuple[str, str]] = collections.Counter()
    stop = asyncio.Event()

    async def load() -> None:
        async with world.http() as c:
            while not stop.is_set():
                r = await c.get("/")
                pairs[(r.json()["name"], r.headers["x-config"])] += 1

    tasks = [asyncio.create_task(load()) for _ in range(4)]
    for i in range(10):
        subset = "v2" if i % 2 == 0 else "v1"
        await world.configure(config(subset), lambda m, s=subset: (r := m.routes_for(FQDN)) is not None  # type: ignore[misc]
                              and r[0].dests[0].subset == s)
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(*tasks)
    assert set(pairs) == {("v1", "v1"), ("v2", "v2")}  # never one config's route with the other's headers


async def test_bad_config_is_rejected_whole_and_the_previous_stays(world: World) -> None:
    await world.web(("a", {}, {}))
    await apply(world.client, vs("web", [{"match": [{"uri": {"regex": "(a+"}}],
                                          "route": [{"destination": {"host": "web"}}]}]))
    await eventually(lambda: "VirtualService default/web" in world.proxy.mesh.errors)
    assert world.proxy.mesh.errors["VirtualService default/web"].startswith("spec.http[0].match[0].uri.regex: ")
    assert "missing closing )" in world.proxy.mesh.errors["VirtualService default/web"]
    assert world.proxy.mesh.routes_for(FQDN) is None  # nothing before it: the default route
    async with world.http() as c:
        assert (await c.get("/anything")).status_code == 200
        good = vs("web", [{"route": [{"destination": {"host": "web"}}],
                           "headers": {"response": {"set": {"x-version": "good"}}}}])
        await world.configure(good, lambda m: m.routes_for(FQDN) is not None and not m.errors)
        # Istio's CEL rule refuses a bad duration at the API, as a real cluster's apiserver does: nothing stored.
        with pytest.raises(KubeError, match=r"spec.http\[0\].timeout: .*must be a valid duration"):
            await apply(world.client, vs("web", [{"route": [{"destination": {"host": "web"}}], "timeout": "soon"}]))
        bad = vs("web", [{"match": [{"uri": {"regex": "(b+"}}], "route": [{"destination": {"host": "web"}}]}])
        await apply(world.client, bad)  # valid to the API, refused by the mesh (RE2)
        await eventually(lambda: "VirtualService default/web" in world.proxy.mesh.errors)
        assert "spec.http[0].match[0].uri.regex: " in world.proxy.mesh.errors["VirtualService default/web"]
        assert (await c.get("/")).headers["x-version"] == "good"  # the previous version stays in force


async def test_consistent_hash_on_header(world: World) -> None:
    await world.web(("a", {}, {}), ("b", {}, {}), ("c", {}, {}))
    await world.configure(dr("web", {"trafficPolicy": {"loadBalancer": {"consistentHash": {
        "httpHeaderName": "x-user"}}}}), lambda m: m.dest_rule(FQDN) is not None)
    async with world.http() as c:
        for user in ("ann", "bob", "cyd", "dan"):
            got = await _names(c, 5, headers={"x-user": user})
            assert len(got) == 1, (user, got)


def test_labels_are_istios() -> None:
    assert {"source_workload", "source_workload_namespace", "destination_service", "destination_service_name",
            "destination_service_namespace", "destination_workload", "destination_workload_namespace",
            "response_code", "response_flags", "request_protocol", "source_principal",
            "destination_principal", "connection_security_policy"} <= set(LABELS)
    assert json.dumps(LABELS)  # a plain tuple of strings


async def test_idle_client_connection_is_closed(world: World) -> None:
    await world.web(("a", {}, {}))
    world.proxy.http_limits = HttpLimits(idle_timeout_s=0.2)
    r, w = await asyncio.open_connection(world.ip, 80)
    w.write(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
    await w.drain()
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
    await r.readexactly(length)
    assert await asyncio.wait_for(r.read(), 5) == b""  # kept alive, then closed once idle
    w.close()


async def test_mirror_sends_a_shadow_copy(world: World) -> None:
    v1, v2 = await world.web(("v1", {"version": "v1"}, {}), ("v2", {"version": "v2"}, {"status": 500}))
    await world.configure(dr("web", _subsets()), lambda m: m.dest_rule(FQDN) is not None)
    await world.configure(vs("web", [{"route": [{"destination": {"host": "web", "subset": "v1"}}],
                                      "mirror": {"host": "web", "subset": "v2"}}]),
                          lambda m: (r := m.routes_for(FQDN)) is not None and bool(r[0].mirrors))
    async with world.http() as c:
        for _ in range(3):
            r = await c.post("/orders", content=b"{}", headers={"host": "web:80"})
            assert r.status_code == 200 and r.json()["name"] == "v1"  # the copy's 500 never reaches the caller
    await eventually(lambda: len(v2.requests) == 3)
    assert {q["headers"]["host"] for q in v2.requests} == {"web-shadow:80"}
    assert [q["body"] for q in v2.requests] == [b"{}"] * 3 and len(v1.requests) == 3


async def test_undefined_subset_and_empty_subset(world: World) -> None:
    await world.web(("v1", {"version": "v1"}, {}))
    await world.configure(vs("web", [
        {"match": [{"uri": {"prefix": "/v2"}}], "route": [{"destination": {"host": "web", "subset": "v2"}}]},
        {"route": [{"destination": {"host": "web", "subset": "v9"}}]}]), lambda m: m.routes_for(FQDN) is not None)
    async with world.http() as c:
        assert (await c.get("/")).status_code == 503  # no DestinationRule defines v9
        await world.configure(dr("web", _subsets()), lambda m: m.dest_rule(FQDN) is not None)
        r = await c.get("/v2")
        assert r.status_code == 503 and r.text == "no healthy upstream"  # defined, but no v2 pod
    assert world.series(response_code="503", response_flags="NC") == 1
    assert world.series(response_code="503", response_flags="UH") == 1


async def test_pool_accounting_returns_to_zero_under_load(world: World) -> None:
    await world.web(("a", {}, {"delay_s": 0.005}), ("b", {}, {"delay_s": 0.005, "fail_first": 5}))
    await world.configure(dr("web", {"trafficPolicy": {"connectionPool": {
        "tcp": {"maxConnections": 3}, "http": {"http1MaxPendingRequests": 1000}}}}),
        lambda m: m.dest_rule(FQDN) is not None)
    await world.configure(vs("web", [{"route": [{"destination": {"host": "web"}}],
                                      "retries": {"attempts": 2, "retryOn": "5xx", "perTryTimeout": "2s"}}]),
                          lambda m: m.routes_for(FQDN) is not None)
    async with world.http() as c:
        rs = await asyncio.gather(*[c.get("/") for _ in range(60)])
    assert [r.status_code for r in rs if r.status_code != 200] == []  # the 503s of b were retried on a
    cluster = world.proxy.clusters()["outbound|80||" + FQDN]
    assert (cluster.in_use, cluster.pending, cluster.active_requests, cluster.active_retries) == (0, 0, 0, 0)
    assert all(h.active == 0 for h in cluster.hosts.values())
    assert sum(len(v) for v in cluster.idle.values()) <= 3  # never more connections than maxConnections in use


async def test_max_retries_caps_outstanding_retries(world: World) -> None:
    (app,) = await world.web(("down", {}, {"status": 503, "delay_s": 0.2}))
    await world.configure(dr("web", {"trafficPolicy": {"connectionPool": {"http": {"maxRetries": 1}}}}),
                          lambda m: m.dest_rule(FQDN) is not None)
    await world.configure(vs("web", [{"route": [{"destination": {"host": "web"}}],
                                      "retries": {"attempts": 1, "retryOn": "5xx"}}]),
                          lambda m: m.routes_for(FQDN) is not None)
    async with world.http() as c:
        rs = await asyncio.gather(*[c.get("/") for _ in range(3)])
    assert [r.status_code for r in rs] == [503] * 3
    assert len(app.requests) == 4  # three tries, and one retry: the other two found the budget taken
    assert world.proxy.clusters()["outbound|80||" + FQDN].active_retries == 0


async def test_slow_client_byte_by_byte_is_still_http(world: World) -> None:
    (app,) = await world.web(("a", {}, {}))
    r, w = await asyncio.open_connection(world.ip, 80)
    for b in b"PUT /slow HTTP/1.1\r\nHost: web\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok":
        w.write(bytes([b]))
        await w.drain()
        await asyncio.sleep(0.001)
    raw = await asyncio.wait_for(r.read(), 5)
    w.close()
    assert raw.startswith(b"HTTP/1.1 200 ") and b"x-envoy" not in raw.lower()
    assert app.requests[0]["path"] == "/slow" and "x-request-id" in app.requests[0]["headers"]  # routed by the mesh


async def test_retry_budget_bounds_retries(world: World) -> None:
    world.proxy.retry_budget = (0.0, 0.5, 2.0)  # no ratio: half a retry a second over 2 s, one retry in all
    (app,) = await world.web(("down", {}, {"status": 503}))
    await world.configure(vs("web", [{"route": [{"destination": {"host": "web"}}],
                                      "retries": {"attempts": 3, "retryOn": "5xx"}}]),
                          lambda m: m.routes_for(FQDN) is not None)
    async with world.http() as c:
        assert (await c.get("/")).status_code == 503
        assert len(app.requests) == 2  # the try and the one retry the budget holds, not 1 + 3
        assert (await c.get("/")).status_code == 503
        assert len(app.requests) == 3  # the budget is spent: no retry
    budget = world.proxy.clusters()["outbound|80||" + FQDN].budget
    assert budget is not None and budget.exhausted == 2  # a refused retry in each request
