"""Catalog and health from Kubernetes Endpoints, and agent services with TTL/HTTP/TCP checks, via py-consul."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import consul
import httpx
import pytest

from tests.conftest import LiveServer, free_port
from tests.registry.conftest import ADMIN

pytestmark = pytest.mark.timeout(90)


def kube(server: LiveServer, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = httpx.request(method, server.url + path, json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code < 300, r.text
    return dict(r.json())


def endpoints(ready: list[str], not_ready: list[str], rv: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "shop", "namespace": "default"}
    if rv:
        meta["resourceVersion"] = rv
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
            "subsets": [{"addresses": [{"ip": ip, "targetRef": {"kind": "Pod", "name": f"shop-{i}"}}
                                       for i, ip in enumerate(ready)],
                         "notReadyAddresses": [{"ip": ip, "targetRef": {"kind": "Pod", "name": f"shop-n{i}"}}
                                               for i, ip in enumerate(not_ready)],
                         "ports": [{"port": 8080, "protocol": "TCP"}]}]}


def eventually(fn: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def test_kubernetes_services_in_catalog_and_health(server: LiveServer, c: consul.Consul) -> None:
    # A selector-less Service: its Endpoints are written here, as an external controller would.
    kube(server, "POST", "/api/v1/namespaces/default/services",
         {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop"},
          "spec": {"ports": [{"port": 80, "targetPort": 8080}]}})
    ep = kube(server, "POST", "/api/v1/namespaces/default/endpoints", endpoints(["127.0.5.1", "127.0.5.2"], []))
    _, services = c.catalog.services()
    assert services["shop"] == ["k8s"]
    _, nodes = c.catalog.service("shop")
    assert sorted((n["ServiceAddress"], n["ServicePort"]) for n in nodes) == [("127.0.5.1", 8080),
                                                                             ("127.0.5.2", 8080)]
    idx, healthy = c.health.service("shop", passing=True)
    assert len(healthy) == 2 and all(e["Service"]["Meta"]["k8s-namespace"] == "default" for e in healthy)
    # A blocking health query wakes when a pod turns not ready.
    got: dict[str, Any] = {}
    th = threading.Thread(target=lambda: got.__setitem__("r", c.health.service("shop", passing=True, index=idx,
                                                                                  wait="30s")))
    th.start()
    time.sleep(0.3)
    kube(server, "PUT", "/api/v1/namespaces/default/endpoints/shop",
         endpoints(["127.0.5.1"], ["127.0.5.2"], ep["metadata"]["resourceVersion"]))
    th.join(10)
    assert not th.is_alive()
    new_idx, healthy = got["r"]
    assert int(new_idx) > int(idx) and [e["Service"]["Address"] for e in healthy] == ["127.0.5.1"]
    _, everyone = c.health.service("shop")
    states = {e["Service"]["Address"]: [ch["Status"] for ch in e["Checks"]] for e in everyone}
    assert states == {"127.0.5.1": ["passing", "passing"], "127.0.5.2": ["passing", "critical"]}
    _, crit = c.health.state("critical")
    assert any(ch["ServiceName"] == "shop" for ch in crit)
    kube(server, "DELETE", "/api/v1/namespaces/default/services/shop")
    assert "shop" not in c.catalog.services()[1]


def test_agent_ttl_checks(c: consul.Consul) -> None:
    assert c.agent.service.register("api", service_id="api-1", port=9000, tags=["v1"],
                                    check=consul.Check.ttl("30s"))
    checks = c.agent.checks()
    assert checks["service:api-1"]["Status"] == "critical"  # a new check starts critical, as in Consul
    assert c.health.service("api", passing=True)[1] == []
    c.agent.check.ttl_pass("service:api-1", notes="all good")
    _, up = c.health.service("api", passing=True)
    assert [e["Service"]["ID"] for e in up] == ["api-1"] and up[0]["Service"]["Tags"] == ["v1"]
    assert c.agent.checks()["service:api-1"]["Output"] == "all good"
    c.agent.check.ttl_warn("service:api-1")
    assert c.health.service("api", passing=True)[1] == []
    c.agent.check.ttl_fail("service:api-1", notes="down")
    assert c.agent.checks()["service:api-1"]["Status"] == "critical"
    assert "api-1" in c.agent.services()
    assert c.agent.check.ttl_pass("service:nope") is False  # 404 Unknown check ID
    assert c.agent.service.deregister("api-1")
    assert "api-1" not in c.agent.services()
    assert "api" not in c.catalog.services()[1]


def test_ttl_expiry_and_deregister_critical(c: consul.Consul) -> None:
    c.agent.service.register("short", service_id="short-1", check=consul.Check.ttl("1s"))
    c.agent.check.ttl_pass("service:short-1")
    assert c.agent.checks()["service:short-1"]["Status"] == "passing"
    eventually(lambda: c.agent.checks()["service:short-1"]["Status"] == "critical")
    assert c.agent.checks()["service:short-1"]["Output"] == "TTL expired"
    c.agent.service.register("gone", service_id="gone-1",
                             check={"TTL": "1s", "DeregisterCriticalServiceAfter": "2s"})
    eventually(lambda: "gone-1" not in c.agent.services())
    c.agent.service.deregister("short-1")


def test_http_and_tcp_checks(server: LiveServer, c: consul.Consul) -> None:
    c.agent.service.register("web", service_id="web-http",
                             check=consul.Check.http(f"{server.url}/-/healthy", interval="1s", timeout="2s"))
    c.agent.service.register("web", service_id="web-tcp", check=consul.Check.tcp("127.0.0.1", server.port, "1s"))
    c.agent.service.register("web", service_id="web-closed", check=consul.Check.tcp("127.0.0.1", free_port(), "1s"))
    eventually(lambda: {e["Service"]["ID"] for e in c.health.service("web", passing=True)[1]} == {"web-http",
                                                                                                 "web-tcp"})
    checks = c.agent.checks()
    assert checks["service:web-http"]["Output"].startswith(f"HTTP GET {server.url}/-/healthy: 200 OK")
    assert checks["service:web-closed"]["Status"] == "critical"
    for sid in ("web-http", "web-tcp", "web-closed"):
        c.agent.service.deregister(sid)


def test_status_and_agent_self(c: consul.Consul) -> None:
    leader = c.status.leader()
    assert leader.endswith(":8300") and c.status.peers() == [leader]
    me = c.agent.self()
    assert me["Config"]["Datacenter"] == "dc1" and me["Member"]["Name"] == me["Config"]["NodeName"]
    assert c.catalog.nodes()[1]


def test_agent_services_block_on_content_hash(server: LiveServer, c: consul.Consul) -> None:
    h = {"X-Consul-Token": ADMIN}
    r = httpx.get(f"{server.url}/v1/agent/services", headers=h)
    digest = r.headers["X-Consul-ContentHash"]
    t0 = time.monotonic()
    same = httpx.get(f"{server.url}/v1/agent/services", params={"hash": digest, "wait": "1s"}, headers=h)
    assert same.headers["X-Consul-ContentHash"] == digest and time.monotonic() - t0 >= 0.9
    got: dict[str, Any] = {}
    th = threading.Thread(target=lambda: got.__setitem__("r", httpx.get(
        f"{server.url}/v1/agent/services", params={"hash": digest, "wait": "30s"}, headers=h, timeout=40)))
    th.start()
    time.sleep(0.3)
    c.agent.service.register("hashed", service_id="hashed-1", check=consul.Check.ttl("30s"))
    th.join(10)
    assert not th.is_alive()
    assert got["r"].headers["X-Consul-ContentHash"] != digest and "hashed-1" in got["r"].json()
    c.agent.service.deregister("hashed-1")
