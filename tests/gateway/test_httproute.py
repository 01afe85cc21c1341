"""Gateway API HTTPRoutes as gateway routes: precedence and hostnames on the translation, then a KubeAPI (with the
vendored CRDs) + service proxy + gateway in the test's loop, real backends on pod addresses, httpx through it."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from pitwall.kube import KubeAPI
from pitwall.traffic import ServiceProxy
from pitwall.traffic.gateway.context import Ctx, Request
from pitwall.traffic.gateway.crds import gateway_api_crds
from pitwall.traffic.gateway.declarative import load_declarative
from pitwall.traffic.gateway.gatewayapi import CRD_BUNDLE, duration_s, intersect, translate_gateway_api
from pitwall.traffic.gateway.kuberoutes import KubeRoutes
from pitwall.traffic.gateway.kubesource import KubeRouteSource
from pitwall.traffic.gateway.proxy import GatewayServer
from pitwall.traffic.gateway.runtime import compile_state
from pitwall.traffic.gateway.wiring import kube_resolver
from tests.gateway.conftest import Echo
from tests.kube_fixture import started_kube
from tests.traffic.conftest import eventually, make_service, pod_ips, put_slice

pytestmark = pytest.mark.timeout(90)

Obj = dict[str, Any]
GW = "gateway.networking.k8s.io/v1"
CLASS: Obj = {"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "pitwall"},
              "spec": {"controllerName": "pitwall.dev/gateway"}}


def gateway(name: str = "gw", listeners: list[Obj] | None = None) -> Obj:
    return {"apiVersion": GW, "kind": "Gateway", "metadata": {"name": name, "namespace": "default"},
            "spec": {"gatewayClassName": "pitwall",
                     "listeners": listeners or [{"name": "http", "port": 80, "protocol": "HTTP"}]}}


def route(name: str, rules: list[Obj], *, hostnames: list[str] | None = None, created: str = "2026-01-01T00:00:00Z",
          parent: Obj | None = None) -> Obj:
    spec: Obj = {"parentRefs": [parent or {"name": "gw"}], "rules": rules}
    if hostnames:
        spec["hostnames"] = hostnames
    return {"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": name, "namespace": "default",
                                                                 "creationTimestamp": created}, "spec": spec}


def to(svc: str, weight: int = 1, port: int = 80) -> Obj:
    return {"name": svc, "port": port, "weight": weight}


def pick(t: Any, method: str, host: str, target: str, headers: dict[str, str] | None = None) -> str | None:
    req = Request(method, target, {"host": host, **(headers or {})}, b"", "1.1", True)
    got = t.table.find(req, Ctx(req, "127.0.0.1", 0.0))
    return None if got is None else f"{got.service.kube[1]}"


SERVICES = {("default", n): {} for n in ("a", "b", "c", "d", "e", "f", "old", "new", "host", "wild", "any")}


def test_durations() -> None:
    assert [duration_s(x) for x in ("10s", "500ms", "1h", "1m30s", "0s")] == [10.0, 0.5, 3600.0, 90.0, 0.0]


def test_intersection() -> None:
    assert intersect(None, []) is None
    assert intersect("*.example.com", []) == ["*.example.com"]
    assert intersect("*.example.com", ["foo.example.com", "other.org", "*.bar.example.com"]) == \
        ["foo.example.com", "*.bar.example.com"]
    assert intersect("foo.example.com", ["*.example.com"]) == ["foo.example.com"]
    assert intersect("foo.example.com", ["bar.example.com"]) == []


def test_matching_precedence() -> None:
    routes = [
        route("r1", [{"matches": [{"path": {"type": "PathPrefix", "value": "/foo"}}], "backendRefs": [to("a")]},
                     {"matches": [{"path": {"type": "Exact", "value": "/foo"}}], "backendRefs": [to("b")]},
                     {"matches": [{"path": {"type": "PathPrefix", "value": "/foo/bar"}}], "backendRefs": [to("c")]},
                     {"matches": [{"path": {"type": "PathPrefix", "value": "/foo"}, "method": "POST"}],
                      "backendRefs": [to("d")]},
                     {"matches": [{"path": {"type": "PathPrefix", "value": "/foo"}, "method": "POST",
                                   "headers": [{"name": "X-Env", "value": "canary"}]}], "backendRefs": [to("e")]},
                     {"matches": [{"path": {"type": "RegularExpression", "value": "/re/[0-9]+"},
                                   "queryParams": [{"name": "v", "value": "2"}]}], "backendRefs": [to("f")]}]),
        route("new", [{"matches": [{"path": {"type": "PathPrefix", "value": "/same"}}], "backendRefs": [to("new")]}],
              created="2026-03-01T00:00:00Z"),
        route("old", [{"matches": [{"path": {"type": "PathPrefix", "value": "/same"}}], "backendRefs": [to("old")]}],
              created="2026-02-01T00:00:00Z"),
        route("hosts", [{"backendRefs": [to("host")]}], hostnames=["api.example.com"]),
        route("wild", [{"backendRefs": [to("wild")]}], hostnames=["*.example.com"]),
        route("wild2", [{"backendRefs": [to("any")]}], hostnames=["*.b.example.com"]),
    ]
    t = translate_gateway_api([CLASS], [gateway()], routes, SERVICES, address="127.0.0.1")
    assert pick(t, "GET", "x", "/foo") == "b"  # Exact first
    assert pick(t, "GET", "x", "/foo/bar/baz") == "c"  # longest prefix
    assert pick(t, "GET", "x", "/foo/baz") == "a"
    assert pick(t, "GET", "x", "/foobar") is None  # element-wise prefix
    assert pick(t, "POST", "x", "/foo/x") == "d"  # a method match beats none
    assert pick(t, "POST", "x", "/foo/x", {"x-env": "canary"}) == "e"  # then more header matches
    assert pick(t, "GET", "x", "/re/12?v=2") == "f"
    assert pick(t, "GET", "x", "/re/12?v=3") is None
    assert pick(t, "GET", "x", "/re/12x?v=2") is None  # the regex matches the whole path
    assert pick(t, "GET", "x", "/same/1") == "old"  # then the oldest route
    assert pick(t, "GET", "api.example.com", "/foo") == "host"  # the most specific hostname first
    assert pick(t, "GET", "c.example.com:8080", "/foo") == "wild"
    assert pick(t, "GET", "a.b.example.com", "/foo") == "any"  # the longer wildcard first
    assert pick(t, "GET", "example.com", "/foo") == "b"


def _conds(status: Obj) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_statuses() -> None:
    routes = [route("ok", [{"backendRefs": [to("a")]}]),
              route("missing", [{"backendRefs": [to("nope")]}]),
              route("wrong-section", [{"backendRefs": [to("a")]}], parent={"name": "gw", "sectionName": "x"}),
              route("other-gw", [{"backendRefs": [to("a")]}], parent={"name": "theirs"}),
              route("bad-host", [{"backendRefs": [to("a")]}], hostnames=["other.org"],
                    parent={"name": "gw", "sectionName": "hosted"}),
              route("mirror", [{"filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": to("a")}}],
                                "backendRefs": [to("a")]}])]
    gw = gateway(listeners=[{"name": "http", "port": 80, "protocol": "HTTP"},
                            {"name": "hosted", "port": 80, "protocol": "HTTP", "hostname": "*.example.com"},
                            {"name": "tcp", "port": 9000, "protocol": "TCP"}])
    t = translate_gateway_api([CLASS], [gw], routes, SERVICES, address="127.0.0.1")
    p = t.route_parents
    assert _conds(p[("default", "ok")][0]) == {"Accepted": ("True", "Accepted"),
                                               "ResolvedRefs": ("True", "ResolvedRefs")}
    assert _conds(p[("default", "missing")][0])["ResolvedRefs"] == ("False", "BackendNotFound")
    assert _conds(p[("default", "wrong-section")][0])["Accepted"] == ("False", "NoMatchingParent")
    assert ("default", "other-gw") not in p  # not our Gateway: no status from us
    assert _conds(p[("default", "bad-host")][0])["Accepted"] == ("False", "NoMatchingListenerHostname")
    assert _conds(p[("default", "mirror")][0])["Accepted"] == ("False", "UnsupportedValue")
    gs = t.gateway_status[("default", "gw")]
    assert _conds(gs) == {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")}
    assert gs["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]
    by_name = {ls["name"]: ls for ls in gs["listeners"]}
    assert by_name["http"]["attachedRoutes"] == 2  # ok, missing (accepted, a backend unresolved)
    assert _conds(by_name["tcp"])["Accepted"] == ("False", "UnsupportedProtocol")


class EchoAt:
    """The gateway tests' echo server (method, path, headers as JSON) on a pod address."""

    def __init__(self) -> None:
        self.seen: list[Obj] = []
        self.servers: list[asyncio.Server] = []

    async def start(self, name: str, ip: str, port: int = 8080) -> None:
        loop = asyncio.get_running_loop()
        self.servers.append(await loop.create_server(lambda: Echo(name, self.seen), ip, port))

    async def close(self) -> None:
        for s in self.servers:
            s.close()
            await s.wait_closed()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[KubeAPI, httpx.AsyncClient, EchoAt]]:
    async with started_kube(tmp_path, gateway_api_crds()) as api:
        sp = ServiceProxy(api.client, drain_timeout_s=0.5, connect_budget_s=2.0, attempt_timeout_s=0.5)
        await sp.start()
        await sp.wait_synced(10)
        gw = GatewayServer(compile_state(load_declarative({"_format_version": "3.0"})),
                           resolve=kube_resolver(api.client))
        await gw.start("127.0.0.1", 0)

        def publish(routes: KubeRoutes) -> None:
            gw.kube_routes = routes

        source = KubeRouteSource(api.client, publish, "127.0.0.1", port=gw.port)
        task = asyncio.create_task(source.run())
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}", timeout=10)
        echo = EchoAt()
        try:
            await asyncio.wait_for(source.synced.wait(), 10)
            yield api, http, echo
        finally:
            task.cancel()
            await echo.close()
            await http.aclose()
            await gw.stop()
            await sp.stop()


async def _services(api: KubeAPI, echo: EchoAt, names: list[str]) -> None:
    for name, ip in zip(names, pod_ips(len(names)), strict=True):
        await echo.start(name, ip)
        await make_service(api.client, name, [{"name": "http", "port": 80, "targetPort": 8080}])
        await put_slice(api.client, name, [{"addresses": [ip], "conditions": {"ready": True}}], name=f"{name}-s")


async def test_httproutes_end_to_end(stack: tuple[KubeAPI, httpx.AsyncClient, EchoAt]) -> None:
    api, http, echo = stack
    c = api.client
    await _services(api, echo, ["v1", "v2", "web"])
    await c.create(CLASS)
    await c.create(gateway())
    await c.create(route("split", [{"matches": [{"path": {"type": "PathPrefix", "value": "/split"}}],
                                    "backendRefs": [to("v1", 3), to("v2", 1)]}]))
    await c.create(route("filters", [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
         "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
             "set": [{"name": "X-Set", "value": "s"}], "add": [{"name": "X-Add", "value": "b"}],
             "remove": ["X-Drop"]}},
                     {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                         "set": [{"name": "X-Echo-Name", "value": "hidden"}], "add": [{"name": "X-Resp", "value": "r"}],
                         "remove": ["Set-Cookie"]}},
                     {"type": "URLRewrite", "urlRewrite": {"hostname": "internal.svc", "path": {
                         "type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}}],
         "backendRefs": [to("web")]},
        {"matches": [{"path": {"type": "Exact", "value": "/old"}}],
         "filters": [{"type": "RequestRedirect", "requestRedirect": {
             "scheme": "https", "hostname": "new.example.com", "path": {"type": "ReplaceFullPath",
                                                                      "replaceFullPath": "/new"},
             "statusCode": 301}}]}]))
    await c.create(route("slow", [{"matches": [{"path": {"type": "PathPrefix", "value": "/sleep"}}],
                                   "timeouts": {"request": "10s", "backendRequest": "300ms"},
                                   "backendRefs": [to("web")]}]))
    await c.create(route("broken", [{"matches": [{"path": {"type": "PathPrefix", "value": "/broken"}}],
                                     "backendRefs": [to("no-such-service")]}]))

    async def routed() -> bool:
        return (await http.get("/api/x")).status_code == 200

    await eventually(routed)

    # a weighted split 3:1 over N requests, within 4 standard deviations of the binomial mean
    n = 200
    counts: Counter[str] = Counter()
    for _ in range(n):
        r = await http.get("/split")
        assert r.status_code == 200
        counts[r.json()["server"]] += 1
    p = 0.75
    assert abs(counts["v1"] - n * p) <= 4 * math.sqrt(n * p * (1 - p)), counts

    r = await http.get("/api/users?q=1", headers={"X-Add": "a", "X-Drop": "1", "X-Set": "old"})
    seen = r.json()
    assert (seen["path"], seen["query"]) == ("/v2/users", "q=1")
    assert seen["headers"]["x-set"] == "s" and seen["headers"]["x-add"] == "a,b" and "x-drop" not in seen["headers"]
    assert seen["headers"]["host"] == "internal.svc"
    assert r.headers["x-echo-name"] == "hidden" and r.headers["x-resp"] == "r" and "set-cookie" not in r.headers

    # the rule's timeouts: the backend sleeps 2 s, the 300 ms backendRequest answers 504 first
    r = await http.get("/sleep/2")
    assert r.status_code == 504 and "timing out" in r.text
    assert (await http.get("/sleep/0")).status_code == 200

    r = await http.get("/old?x=1")
    assert (r.status_code, r.headers["location"]) == (301, "https://new.example.com/new?x=1")

    # the bad route: 500 for its traffic, ResolvedRefs False with the spec's reason; the others unharmed
    assert (await http.get("/broken")).status_code == 500

    async def bad_status() -> bool:
        got = await c.get(GW, "HTTPRoute", "broken", "default")
        conds = {x["type"]: x for x in (got.get("status", {}).get("parents") or [{}])[0].get("conditions", [])}
        return conds.get("ResolvedRefs", {}).get("reason") == "BackendNotFound" and \
            conds["ResolvedRefs"]["status"] == "False" and conds["Accepted"]["status"] == "True"

    await eventually(bad_status)
    gw = await c.get(GW, "Gateway", "gw", "default")
    assert _conds(gw["status"])["Programmed"] == ("True", "Programmed")
    assert gw["status"]["listeners"][0]["attachedRoutes"] == 4
    cls = await c.get(GW, "GatewayClass", "pitwall")
    assert _conds(cls["status"]) == {"Accepted": ("True", "Accepted"),
                                     "SupportedVersion": ("True", "SupportedVersion")}
    crd = await c.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "gatewayclasses.gateway.networking.k8s.io")
    assert crd["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"] == CRD_BUNDLE
    assert (await http.get("/split")).status_code == 200
    # the status write is stable: a second rebuild writes nothing (same resourceVersion)
    before = (await c.get(GW, "HTTPRoute", "split", "default"))["metadata"]["resourceVersion"]
    await c.create(route("later", [{"matches": [{"path": {"type": "Exact", "value": "/later"}}],
                                    "backendRefs": [to("web")]}]))

    async def later() -> bool:
        return (await http.get("/later")).status_code == 200

    await eventually(later)
    assert (await c.get(GW, "HTTPRoute", "split", "default"))["metadata"]["resourceVersion"] == before
    assert orjson.loads((await http.get("/later")).content)["server"] == "web"


async def test_two_servers_agree_on_status(stack: tuple[KubeAPI, httpx.AsyncClient, EchoAt]) -> None:
    """A second server's gateway (another listen address) adds its address beside the first's; then both
    find the status as they want it and write nothing more (no write-back loop between servers)."""
    api, _, _ = stack
    c = api.client
    await c.create(CLASS)
    await c.create(gateway())
    await c.create({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "pitwall"},
                    "spec": {"controller": "pitwall.dev/gateway"}})
    await c.create({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                    "metadata": {"name": "site", "namespace": "default"},
                    "spec": {"ingressClassName": "pitwall", "defaultBackend": {
                        "service": {"name": "web", "port": {"number": 80}}}}})
    other = KubeRouteSource(c, lambda routes: None, "127.0.0.2")
    task = asyncio.create_task(other.run())
    try:
        async def both() -> bool:
            gw = await c.get(GW, "Gateway", "gw", "default")
            ing = await c.get("networking.k8s.io/v1", "Ingress", "site", "default")
            ips = {a["value"] for a in gw.get("status", {}).get("addresses", [])}
            ing_ips = {i["ip"] for i in ing.get("status", {}).get("loadBalancer", {}).get("ingress", [])}
            return ips == ing_ips == {"127.0.0.1", "127.0.0.2"}

        await eventually(both)
        rvs = [(await c.get(GW, "Gateway", "gw", "default"))["metadata"]["resourceVersion"],
               (await c.get("networking.k8s.io/v1", "Ingress", "site", "default"))["metadata"]["resourceVersion"]]
        await asyncio.sleep(1.0)  # several settle periods: a loop would have written again by now
        assert rvs == [(await c.get(GW, "Gateway", "gw", "default"))["metadata"]["resourceVersion"],
                       (await c.get("networking.k8s.io/v1", "Ingress", "site",
                                    "default"))["metadata"]["resourceVersion"]]
    finally:
        task.cancel()


def test_allowed_routes_namespace_selector() -> None:
    gw = gateway(listeners=[{"name": "sel", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {
        "from": "Selector", "selector": {"matchLabels": {"shared-gateway": "true"}}}}}])
    rt = route("r", [{"backendRefs": [to("a")]}])
    for labels, want in (({"shared-gateway": "true"}, ("True", "Accepted")),
                         ({"shared-gateway": "no"}, ("False", "NotAllowedByListeners"))):
        t = translate_gateway_api([CLASS], [gw], [rt], SERVICES, address="127.0.0.1",
                                  namespaces={"default": {"metadata": {"name": "default", "labels": labels}}})
        assert _conds(t.route_parents[("default", "r")][0])["Accepted"] == want
        assert (pick(t, "GET", "x", "/") == "a") == (want[0] == "True")
