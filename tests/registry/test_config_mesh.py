"""Consul config entries enforced by the mesh: entries written through ``ConfigEntries`` (the ``PUT /v1/config``
path after decoding), seen through the store watch the blocking queries use, translated into the Istio objects
the service proxy compiles, and checked with httpx through the proxy against real HTTP backends (pods on
127.42.x.y addresses, callers identified by their pod IP as in tests/traffic)."""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.incidents import ChangeLog
from pitwall.kube.wiring import build_kube
from pitwall.registry.blocking import WatchHub
from pitwall.registry.config_entries import CONFIG_PREFIX, ConfigEntries, validate_entry
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traffic import ServiceProxy
from pitwall.traffic.istio_crds import istio_crds
from pitwall.traffic.mesh import MeshConfig
from pitwall.traffic.telemetry import MeshTelemetry
from tests.traffic.conftest import cluster_ip, endpoint, eventually, make_service, pod_ips, put_slice
from tests.traffic.mesh_helpers import App, add_pod, apply, vs

pytestmark = pytest.mark.timeout(90)

FQDN = "web.default.svc.cluster.local"
SUBSETS = {"v1": {"Filter": "Service.Meta.version == v1"}, "v2": {"Filter": 'Service.Meta.version == "v2"'}}


class Mesh:
    """The proxy over a KubeAPI with Istio's CRDs, Consul's config entries feeding it, a Service ``web``."""

    def __init__(self, proxy: ServiceProxy, config: ConfigEntries, client: Any) -> None:
        self.proxy, self.config, self.client = proxy, config, client
        self.apps: list[App] = []
        self.ip = ""
        self.caller_ip, self.other_ip = pod_ips(2)

    async def web(self, *pods: tuple[str, dict[str, str]]) -> None:
        ips = pod_ips(len(pods))
        for ip, (name, labels) in zip(ips, pods, strict=True):
            await add_pod(self.client, name, ip, {"app": "web", **labels}, sa="web")
            self.apps.append(await App(ip, 8080, name).start())
        svc = await make_service(self.client, "web", selector={"app": "web"})
        await put_slice(self.client, "web", [endpoint(ip) for ip in ips])
        self.ip = cluster_ip(svc)
        await add_pod(self.client, "sleep", self.caller_ip, {"app": "sleep"}, sa="sleep")
        await add_pod(self.client, "other", self.other_ip, {"app": "other"}, sa="other")
        await eventually(lambda: len(self.proxy.endpoints(self.ip, 80)) == len(ips)
                         and all(ip in self.proxy.pods for ip in [*ips, self.caller_ip, self.other_ip]))

    async def put(self, kind: str, name: str, body: dict[str, Any], ready: Any) -> None:
        assert await self.config.put(validate_entry({"Kind": kind, "Name": name, **body}))
        await eventually(lambda: ready(self.proxy.mesh))

    def http(self, source: str | None = None) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=source or self.caller_ip)
        return httpx.AsyncClient(base_url=f"http://{self.ip}", transport=transport, timeout=10)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    kube = build_kube(store)
    kube.add_builtin_crds(istio_crds())
    await kube.start()
    proxy = ServiceProxy(kube.client, drain_timeout_s=0.5, telemetry=MeshTelemetry(None), changes=ChangeLog(store))
    config = ConfigEntries(store, ChangeLog(store))
    hub = WatchHub(store, [CONFIG_PREFIX])
    hub.listen(config.on_events)
    proxy.overlay = config.mesh_objects
    config.listeners.append(proxy.refresh_mesh)
    await proxy.start()
    await hub.start()
    await config.start()
    await proxy.wait_synced(10)
    m = Mesh(proxy, config, kube.client)
    try:
        yield m
    finally:
        await hub.stop()
        await proxy.stop()
        for a in m.apps:
            await a.stop()
        await kube.stop()
        await store.stop()


async def _names(c: httpx.AsyncClient, n: int, path: str = "/", **kw: Any) -> collections.Counter[str]:
    got: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        r = await c.get(path, **kw)
        assert r.status_code == 200, r.text
        got[r.json()["name"]] += 1
    return got


def _routed(m: MeshConfig) -> bool:
    return m.routes_for(FQDN) is not None and m.dest_rule(FQDN) is not None


async def test_splitter_90_10_over_resolver_subsets(mesh: Mesh) -> None:
    await mesh.web(("v1", {"version": "v1"}), ("v2", {"version": "v2"}))
    await mesh.put("service-resolver", "web", {"Subsets": SUBSETS}, lambda m: m.dest_rule(FQDN) is not None)
    await mesh.put("service-splitter", "web", {"Splits": [{"Weight": 90, "ServiceSubset": "v1"},
                                                          {"Weight": 10, "ServiceSubset": "v2"}]}, _routed)
    async with mesh.http() as c:
        got = await _names(c, 600)
    assert set(got) == {"v1", "v2"}
    assert 35 <= got["v2"] <= 85  # 60 expected; binomial sd 7.3: 3.4 sd either side
    # Deleting the splitter restores the plain route (no split): all pods again by round robin.
    await mesh.config.delete("service-splitter", "web")
    await eventually(lambda: all(d.subset == "" for r in (mesh.proxy.mesh.routes_for(FQDN) or ())
                                 for d in r.dests) or mesh.proxy.mesh.routes_for(FQDN) is None)
    async with mesh.http() as c:
        assert set(await _names(c, 10)) == {"v1", "v2"}


async def test_router_matches_default_subset_and_redirect(mesh: Mesh) -> None:
    await mesh.web(("v1", {"version": "v1"}), ("v2", {"version": "v2"}))
    await mesh.put("service-resolver", "web", {"Subsets": SUBSETS, "DefaultSubset": "v1"},
                   lambda m: m.dest_rule(FQDN) is not None)
    await mesh.put("service-router", "web", {"Routes": [
        {"Match": {"HTTP": {"PathPrefix": "/beta/"}}, "Destination": {"ServiceSubset": "v2", "PrefixRewrite": "/"}},
        {"Match": {"HTTP": {"Header": [{"Name": "X-Canary", "Exact": "1"}], "Methods": ["GET"]}},
         "Destination": {"ServiceSubset": "v2"}},
        {"Match": {"HTTP": {"QueryParam": [{"Name": "v", "Exact": "2"}]}}, "Destination": {"ServiceSubset": "v2"}},
        {"Match": {"HTTP": {"PathRegex": "/re/[0-9]+"}}, "Destination": {"ServiceSubset": "v2"}},
    ]}, lambda m: len(m.routes_for(FQDN) or ()) == 5)
    async with mesh.http() as c:
        assert set(await _names(c, 6)) == {"v1"}  # DefaultSubset
        r = await c.get("/beta/x")
        assert r.json()["name"] == "v2" and r.json()["path"] == "/x"  # the matched prefix replaced, as Envoy
        assert set(await _names(c, 3, headers={"x-canary": "1"})) == {"v2"}
        assert (await c.post("/", headers={"x-canary": "1"})).json()["name"] == "v1"  # method not matched
        assert set(await _names(c, 3, "/?v=2")) == {"v2"}
        assert set(await _names(c, 3, "/re/42")) == {"v2"}
        assert set(await _names(c, 3, "/re/x")) == {"v1"}


async def test_deny_intention_answers_rbac_403(mesh: Mesh) -> None:
    await mesh.web(("a", {}),)
    await mesh.put("service-intentions", "web", {"Sources": [{"Name": "sleep", "Action": "deny"}]},
                   lambda m: m.authz is not None and len(m.authz.policies) == 1)
    async with mesh.http() as c:
        r = await c.get("/")
        assert r.status_code == 403 and r.text == "RBAC: access denied"
    async with mesh.http(mesh.other_ip) as c:
        assert (await c.get("/")).status_code == 200
    # Exact sources before the wildcard: sleep allowed, everyone else denied.
    await mesh.put("service-intentions", "web", {"Sources": [{"Name": "*", "Action": "deny"},
                                                             {"Name": "sleep", "Action": "allow"}]},
                   lambda m: m.authz is not None and len(m.authz.policies[0].rules[0].get("x-unless") or ()) == 1)
    async with mesh.http() as c:
        assert (await c.get("/")).status_code == 200
    async with mesh.http(mesh.other_ip) as c:
        assert (await c.get("/")).status_code == 403
    await mesh.config.delete("service-intentions", "web")
    await eventually(lambda: mesh.proxy.mesh.authz is None or not mesh.proxy.mesh.authz.policies)
    async with mesh.http(mesh.other_ip) as c:
        assert (await c.get("/")).status_code == 200


async def test_l7_permissions_first_match_wins(mesh: Mesh) -> None:
    await mesh.web(("a", {}),)
    await mesh.put("service-intentions", "web", {"Sources": [
        {"Name": "sleep", "Permissions": [
            {"Action": "allow", "HTTP": {"PathPrefix": "/admin/public"}},
            {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
            {"Action": "deny", "HTTP": {"Methods": ["DELETE"]}},
            {"Action": "deny", "HTTP": {"PathRegex": "/secret-[0-9]+",
                                        "Header": [{"Name": "X-Role", "Exact": "admin", "Invert": True}]}}]},
        {"Name": "*", "Action": "deny"}]},
        lambda m: m.authz is not None and len(m.authz.policies) == 1)
    async with mesh.http() as c:
        assert (await c.get("/admin/public/x")).status_code == 200  # the earlier allow wins
        assert (await c.get("/admin/x")).status_code == 403
        assert (await c.delete("/thing")).status_code == 403
        assert (await c.get("/thing")).status_code == 200  # no permission matched: default allow
        assert (await c.get("/secret-7")).status_code == 403
        assert (await c.get("/secret-7", headers={"x-role": "admin"})).status_code == 200
    async with mesh.http(mesh.other_ip) as c:
        assert (await c.get("/thing")).status_code == 403  # the wildcard deny


async def test_istio_objects_take_precedence(mesh: Mesh) -> None:
    await mesh.web(("v1", {"version": "v1"}), ("v2", {"version": "v2"}))
    await mesh.put("service-resolver", "web", {"Subsets": SUBSETS}, lambda m: m.dest_rule(FQDN) is not None)
    await mesh.put("service-splitter", "web", {"Splits": [{"Weight": 100, "ServiceSubset": "v2"}]}, _routed)
    async with mesh.http() as c:
        assert set(await _names(c, 4)) == {"v2"}
    await apply(mesh.client, vs("web", [{"route": [{"destination": {"host": "web", "subset": "v1"}}]}]))
    await eventually(lambda: (mesh.proxy.mesh.routes_for(FQDN) or ())[0].dests[0].subset == "v1")
    async with mesh.http() as c:
        assert set(await _names(c, 4)) == {"v1"}  # Istio's VirtualService, over the resolver's subsets


async def test_untranslatable_filter_is_reported_not_half_applied(mesh: Mesh) -> None:
    await mesh.web(("v1", {"version": "v1"}),)
    await mesh.put("service-resolver", "web", {"Subsets": {"v1": {"Filter": "Service.Tags contains v1"}}},
                   lambda m: any("web" in k for k in m.errors))
    assert mesh.proxy.mesh.dest_rule(FQDN) is None
    async with mesh.http() as c:
        assert set(await _names(c, 2)) == {"v1"}
    # The service's intentions are enforced all the same.
    await mesh.put("service-intentions", "web", {"Sources": [{"Name": "sleep", "Action": "deny"}]},
                   lambda m: m.authz is not None and len(m.authz.policies) == 1)
    async with mesh.http() as c:
        assert (await c.get("/")).status_code == 403


async def test_resolver_failover_when_the_subset_has_no_ready_endpoint(mesh: Mesh) -> None:
    await mesh.web(("v1", {"version": "v1"}), ("v2", {"version": "v2"}))
    await mesh.put("service-resolver", "web", {"Subsets": SUBSETS, "DefaultSubset": "v1",
                                               "Failover": {"v1": {"ServiceSubset": "v2"}}}, _routed)
    async with mesh.http() as c:
        assert set(await _names(c, 4)) == {"v1"}
        v1_ip, v2_ip = mesh.apps[0].ip, mesh.apps[1].ip
        await put_slice(mesh.client, "web", [endpoint(v1_ip, ready=False), endpoint(v2_ip)])
        await eventually(lambda: [b.ip for b in mesh.proxy.endpoints(mesh.ip, 80)] == [v2_ip])
        assert set(await _names(c, 4)) == {"v2"}  # v1 has no ready endpoint: its failover takes over
        await put_slice(mesh.client, "web", [endpoint(v1_ip), endpoint(v2_ip)])
        await eventually(lambda: len(mesh.proxy.endpoints(mesh.ip, 80)) == 2)
        assert set(await _names(c, 4)) == {"v1"}


async def test_entry_changes_are_change_events(mesh: Mesh) -> None:
    await mesh.web(("a", {}),)
    body = {"Kind": "service-intentions", "Name": "web", "Sources": [{"Name": "sleep", "Action": "deny"}]}
    assert await mesh.config.put(validate_entry(body), who="ops")
    assert not await mesh.config.put(validate_entry(body), cas=0, who="ops")  # refused: no event
    assert await mesh.config.delete("service-intentions", "web", who="ops")
    changes = mesh.config.changes
    assert changes is not None
    events = [e for e in await changes.between(0, time.time_ns() + 1) if e.source == "consul-config"]
    assert [(e.kind, e.who, e.details["change"]) for e in events] == [("config", "ops", "applied"),
                                                                      ("config", "ops", "deleted")]
    assert events[0].summary.startswith("Consul service-intentions web applied (revision ")
