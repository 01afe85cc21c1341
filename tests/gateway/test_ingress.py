"""Ingress as gateway routes: the translation's precedence, then a KubeAPI + service proxy + gateway in the test's
loop with real backends on pod addresses behind Services, requests through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.kube import KubeAPI
from pitwall.traffic import ServiceProxy
from pitwall.traffic.gateway.declarative import load_declarative
from pitwall.traffic.gateway.ingress import IngressRoutes, ours, translate_ingresses
from pitwall.traffic.gateway.kubesource import KubeRouteSource
from pitwall.traffic.gateway.proxy import GatewayServer
from pitwall.traffic.gateway.runtime import compile_state
from pitwall.traffic.gateway.wiring import kube_resolver
from tests.kube_fixture import started_kube
from tests.traffic.conftest import Backend, eventually, make_service, pod_ips, put_slice

pytestmark = pytest.mark.timeout(60)

Obj = dict[str, Any]
PITWALL_CLASS: Obj = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "pitwall"},
                      "spec": {"controller": "pitwall.dev/gateway"}}


def ingress(name: str, rules: list[Obj], *, cls: str | None = "pitwall", created: str = "2026-01-01T00:00:00Z",
            annotations: dict[str, str] | None = None, default: Obj | None = None) -> Obj:
    spec: Obj = {"rules": rules}
    if cls is not None:
        spec["ingressClassName"] = cls
    if default is not None:
        spec["defaultBackend"] = default
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created,
                         "annotations": annotations or {}}, "spec": spec}


def path(p: str, svc: str, port: int | str = 80, kind: str = "Prefix") -> Obj:
    ref = {"number": port} if isinstance(port, int) else {"name": port}
    return {"path": p, "pathType": kind, "backend": {"service": {"name": svc, "port": ref}}}


def rule(paths: list[Obj], host: str | None = None) -> Obj:
    r: Obj = {"http": {"paths": paths}}
    if host is not None:
        r["host"] = host
    return r


def served(routes: IngressRoutes, host: str, p: str) -> str | None:
    """The backend ``svc:port`` a request goes to (None when no rule matches)."""
    r = routes.find(host, p)
    return None if r is None or r.service is None else f"{r.service.kube[1] if r.service.kube else '?'}:" \
                                                         f"{r.service.port}"


def test_class_selection() -> None:
    classes = {"pitwall": PITWALL_CLASS,
               "nginx": {"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}}
    assert ours(ingress("a", [], cls="pitwall"), classes)
    assert not ours(ingress("a", [], cls="nginx"), classes)
    assert not ours(ingress("a", [], cls="missing"), classes)
    assert ours(ingress("a", [], cls=None, annotations={"kubernetes.io/ingress.class": "pitwall"}), {})
    assert not ours(ingress("a", [], cls="pitwall", annotations={"kubernetes.io/ingress.class": "nginx"}), classes)
    assert not ours(ingress("a", [], cls=None), classes)  # no default class
    dflt = {**PITWALL_CLASS, "metadata": {"name": "pitwall", "annotations": {
        "ingressclass.kubernetes.io/is-default-class": "true"}}}
    assert ours(ingress("a", [], cls=None), {"pitwall": dflt})


def test_path_precedence_and_hosts() -> None:
    ings = [
        ingress("old", [rule([path("/foo", "prefix-foo"), path("/foo/bar", "prefix-foobar"),
                              path("/foo", "exact-foo", kind="Exact"), path("/", "root", kind="ImplementationSpecific")])],
                created="2026-01-01T00:00:00Z"),
        ingress("new", [rule([path("/foo", "newer-foo")]),
                        rule([path("/", "exact-host")], host="api.example.com"),
                        rule([path("/", "wild")], host="*.example.com")],
                created="2026-02-01T00:00:00Z"),
        ingress("other", [rule([path("/", "nginx-owned")], host="api.example.com")], cls="nginx"),
    ]
    t = translate_ingresses(ings, {"pitwall": PITWALL_CLASS}, {})
    r = t.routes
    assert served(r, "x", "/foo") == "exact-foo:80"  # Exact before Prefix at equal length
    assert served(r, "x", "/foo/") == "prefix-foo:80"  # older Ingress wins a tie
    assert served(r, "x", "/foo/baz") == "prefix-foo:80"
    assert served(r, "x", "/foo/bar/baz") == "prefix-foobar:80"  # longest prefix
    assert served(r, "x", "/foobar") == "root:80"  # element-wise: /foo does not match /foobar
    assert served(r, "api.example.com:8080", "/anything") == "exact-host:80"
    assert served(r, "www.example.com", "/x") == "wild:80"
    assert served(r, "a.b.example.com", "/x") == "root:80"  # the wildcard covers one label only
    assert served(r, "example.com", "/x") == "root:80"
    assert [i["metadata"]["name"] for i in t.served] == ["old", "new"]


def test_port_names_and_problems() -> None:
    services = {("default", "web"): {"spec": {"ports": [{"name": "http", "port": 8081}]}}}
    t = translate_ingresses([ingress("a", [rule([path("/ok", "web", "http"), path("/bad", "web", "grpc")])],
                                     default={"service": {"name": "web", "port": {"number": 9000}}})],
                            {"pitwall": PITWALL_CLASS}, services)
    assert served(t.routes, "h", "/ok/x") == "web:8081"
    assert served(t.routes, "h", "/bad") is None
    assert t.routes.default is not None and t.routes.default.service is not None
    assert t.routes.default.service.port == 9000
    assert t.problems["default/a"] == ["spec.rules[0].http.paths[1].backend.service.port.name: "
                                       "Service default/web has no port named 'grpc'"]


class Stack:
    def __init__(self, api: KubeAPI, gw: GatewayServer, source: KubeRouteSource, http: httpx.AsyncClient,
                 changes: list[str]) -> None:
        self.api, self.gw, self.source, self.http, self.changes = api, gw, source, http, changes


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    import asyncio

    async with started_kube(tmp_path) as api:
        sp = ServiceProxy(api.client, drain_timeout_s=0.5, connect_budget_s=2.0, attempt_timeout_s=0.5)
        await sp.start()
        await sp.wait_synced(10)
        kong = load_declarative({"_format_version": "3.0", "services": [
            {"name": "kong-svc", "url": "http://127.0.0.1:1", "routes": [{"name": "kong", "paths": ["/kong"]}]},
        ]})
        gw = GatewayServer(compile_state(kong), resolve=kube_resolver(api.client))
        await gw.start("127.0.0.1", 0)

        def publish(routes: IngressRoutes) -> None:
            gw.kube_routes = routes

        changes: list[str] = []

        async def record(summary: str, details: Obj) -> None:
            changes.append(summary)

        source = KubeRouteSource(api.client, publish, "127.0.0.1", record=record)
        task = asyncio.create_task(source.run())
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}", timeout=10)
        try:
            await asyncio.wait_for(source.synced.wait(), 10)
            yield Stack(api, gw, source, http, changes)
        finally:
            task.cancel()
            await http.aclose()
            await gw.stop()
            await sp.stop()


async def _backend_service(client: Any, name: str, ip: str) -> Backend:
    b = await Backend(ip, 8080, name).start()
    await make_service(client, name, [{"name": "http", "port": 80, "targetPort": 8080}], selector={"app": name})
    await put_slice(client, name, [{"addresses": [ip], "conditions": {"ready": True}}], name=f"{name}-s")
    return b


async def test_ingress_routes_requests_to_services(stack: Stack) -> None:
    c = stack.api.client
    ips = pod_ips(3)
    backends = [await _backend_service(c, n, ip) for n, ip in zip(("web", "api", "fallback"), ips, strict=True)]
    try:
        await c.create(PITWALL_CLASS)
        await c.create(ingress("site", [rule([path("/", "web")], host="www.example.com"),
                                        rule([path("/v1", "api", "http"), path("/v1/exact", "web", kind="Exact")])],
                               default={"service": {"name": "fallback", "port": {"number": 80}}}))

        async def answers(host: str, p: str) -> str:
            r = await stack.http.get(p, headers={"Host": host})
            return f"{r.status_code} {r.text}"

        async def routed() -> bool:
            return await answers("www.example.com", "/x") == "200 web"

        await eventually(routed)
        assert await answers("other", "/v1/users") == "200 api"
        assert await answers("other", "/v1/exact") == "200 web"
        assert await answers("other", "/v1x") == "200 fallback"  # no rule: Kong's routes, then defaultBackend
        # Kong's routes coexist: /kong is the file's (its upstream is closed: Kong's 502)
        r = await stack.http.get("/kong", headers={"Host": "other"})
        assert r.status_code == 502 and "invalid response" in r.text

        async def status_written() -> bool:
            got = await c.get("networking.k8s.io/v1", "Ingress", "site", "default")
            return bool(got.get("status", {}).get("loadBalancer", {}).get("ingress") == [{"ip": "127.0.0.1"}])

        await eventually(status_written)
        # one change event for the Ingress; its status write and the Services' changes add none
        assert [x for x in stack.changes if "1 Ingresses" in x] == \
            ["gateway Kubernetes routes applied: 1 Ingresses, 0 HTTPRoutes, 0 HTTPRoute matches"]

        # a change swaps the routes: the class goes away, the Ingress is no longer ours
        await c.delete("networking.k8s.io/v1", "IngressClass", "pitwall")

        async def unrouted() -> bool:
            return (await stack.http.get("/x", headers={"Host": "www.example.com"})).status_code == 404

        await eventually(unrouted)

        async def address_dropped() -> bool:
            got = await c.get("networking.k8s.io/v1", "Ingress", "site", "default")
            return not got.get("status", {}).get("loadBalancer", {}).get("ingress")

        await eventually(address_dropped)
    finally:
        for b in backends:
            await b.stop()
