"""``/v1/config`` through py-consul (and raw HTTP where py-consul has no call): apply, read, list, delete,
``cas``, blocking reads, and Consul's answers to bad entries (nothing stored)."""

from __future__ import annotations

import threading
import time
from typing import Any

import consul
import httpx
import pytest

from tests.conftest import LiveServer
from tests.registry.conftest import ADMIN

pytestmark = pytest.mark.timeout(60)


def _http(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{server.port}", headers={"X-Consul-Token": ADMIN}, timeout=10)


SPLITTER = {"Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]}


def test_apply_get_list_delete(c: consul.Consul, server: LiveServer) -> None:
    assert c.config.set("service-splitter", "billing", SPLITTER) is True
    assert c.config.set("service-splitter", "odd/name %", {"Splits": [{"Weight": 100}]}) is True
    got = c.config.get("service-splitter", "billing")
    assert got["Kind"] == "service-splitter" and got["Name"] == "billing"
    assert [s["Weight"] for s in got["Splits"]] == [90, 10]
    c.config.set("service-splitter", "fine", {"Splits": [{"Weight": 33.333}, {"Weight": 66.667, "Service": "b"}]})
    assert [s["Weight"] for s in c.config.get("service-splitter", "fine")["Splits"]] == [33.33, 66.67]
    with _http(server) as h:
        assert b'"Weight":90,' in h.get("/v1/config/service-splitter/billing").content
    assert got["CreateIndex"] == got["ModifyIndex"] > 0
    assert c.config.set("service-splitter", "ledger", {"Splits": [{"Weight": 100}]}) is True
    with _http(server) as h:
        listed = h.get("/v1/config/service-splitter")
        assert listed.status_code == 200 and int(listed.headers["X-Consul-Index"]) > 0
        assert sorted(e["Name"] for e in listed.json()) == ["billing", "fine", "ledger", "odd/name %"]
        assert h.get("/v1/config/service-splitter/odd%2Fname%20%25").json()["Name"] == "odd/name %"
        assert h.delete("/v1/config/service-splitter/odd%2Fname%20%25").status_code == 200
        r = h.delete("/v1/config/service-splitter/ledger")
        assert r.status_code == 200 and r.json() == {}
        r = h.get("/v1/config/service-splitter/ledger")
        assert r.status_code == 404 and r.text.rstrip() == 'Config entry not found for "service-splitter" / "ledger"'
        assert h.get("/v1/config/service-splitter").json()[0]["Name"] == "billing"


def test_cas_on_apply_and_delete(c: consul.Consul, server: LiveServer) -> None:
    assert c.config.set("service-defaults", "cas-svc", {"Protocol": "http"}, cas=0) is True
    assert c.config.set("service-defaults", "cas-svc", {"Protocol": "grpc"}, cas=0) is False
    idx = c.config.get("service-defaults", "cas-svc")["ModifyIndex"]
    assert c.config.set("service-defaults", "cas-svc", {"Protocol": "http2"}, cas=idx + 1000) is False
    assert c.config.set("service-defaults", "cas-svc", {"Protocol": "http2"}, cas=idx) is True
    assert c.config.get("service-defaults", "cas-svc")["Protocol"] == "http2"
    with _http(server) as h:
        assert h.delete(f"/v1/config/service-defaults/cas-svc?cas={idx}").json() is False
        new = c.config.get("service-defaults", "cas-svc")["ModifyIndex"]
        assert h.delete(f"/v1/config/service-defaults/cas-svc?cas={new}").json() is True
        assert h.get("/v1/config/service-defaults/cas-svc").status_code == 404


def test_intentions_are_normalised(c: consul.Consul) -> None:
    c.config.set("service-intentions", "api", {"Sources": [
        {"Name": "web", "Action": "allow"},
        {"Name": "*", "Action": "deny"},
        {"Name": "admin", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/admin", "Methods": ["GET"]}}]},
    ]})
    got = c.config.get("service-intentions", "api")
    assert [(s["Name"], s["Precedence"], s["Type"]) for s in got["Sources"]] == [
        ("web", 9, "consul"), ("*", 8, "consul"), ("admin", 9, "consul")]


@pytest.mark.parametrize(("entry", "status", "text"), [
    ({"Kind": "service-splitter", "Name": "x", "Splits": [{"Weight": 70}, {"Weight": 10, "ServiceSubset": "b"}]},
     500, "the sum of all split weights must be 100, not 80.000000"),
    ({"Kind": "service-splitter", "Name": "x", "Splits": []}, 500, "no splits configured"),
    ({"Kind": "service-splitter", "Name": "x", "Splits": [{"Weight": 50}, {"Weight": 50}]}, 500,
     'split destination occurs more than once: service="x", subset="", namespace="default", partition="default"'),
    ({"Kind": "service-router", "Name": "x", "Routes": [{"Match": {"HTTP": {"PathPrefix": "api"}}}]}, 500,
     "Route[0] PathPrefix doesn't start with '/': \"api\""),
    ({"Kind": "service-router", "Name": "x", "Routes": [{"Match": {"HTTP": {"Methods": ["FETCH"]}}}]}, 500,
     'Route[0] Methods contains an invalid method "FETCH"'),
    ({"Kind": "service-router", "Name": "x", "Routes": [{"Destination": {"PrefixRewrite": "/"}}]}, 500,
     "Route[0] cannot make use of PrefixRewrite without configuring either PathExact or PathPrefix"),
    ({"Kind": "service-resolver", "Name": "x", "DefaultSubset": "v9"}, 500, 'DefaultSubset "v9" is not a valid subset'),
    ({"Kind": "service-intentions", "Name": "x", "Sources": [{"Name": "web", "Action": "maybe"}]}, 500,
     "Sources[0].Action must be set to 'allow' or 'deny'"),
    ({"Kind": "service-router", "Name": "x", "Routes": [{"Match": {"HTTP": {"PathRegex": "/a(b"}}}]}, 500,
     "Route[0] PathRegex is not a valid RE2 regular expression: error parsing regexp: missing closing ): `/a(b`"),
    ({"Kind": "proxy-defaults", "Name": "mine"}, 500, 'invalid name ("mine"), only "global" is supported'),
    ({"Kind": "mesh-gateway-things", "Name": "x"}, 400, "invalid config entry kind: mesh-gateway-things"),
    ({"Name": "x"}, 400, "Request decoding failed: Payload does not contain a kind/Kind key at the top level"),
    ({"Kind": "service-defaults"}, 500, "Name is required"),
])
def test_bad_entries_answer_as_consul_and_store_nothing(server: LiveServer, entry: dict[str, Any], status: int,
                                                        text: str) -> None:
    with _http(server) as h:
        r = h.put("/v1/config", json=entry)
        assert (r.status_code, r.text.rstrip("\n")) == (status, text)
        if entry.get("Kind") in ("service-splitter", "service-router", "service-resolver", "service-intentions"):
            assert h.get(f"/v1/config/{entry['Kind']}/x").status_code == 404
        assert h.put("/v1/config", content=b"{not json").status_code == 400
        assert h.get("/v1/config/nope/x").text.rstrip() == "invalid config entry kind: nope"


def test_py_consul_raises_on_a_refused_entry(c: consul.Consul) -> None:
    with pytest.raises(consul.ConsulException, match="sum of all split weights"):
        c.config.set("service-splitter", "bad", {"Splits": [{"Weight": 99.98}]})


def test_blocking_read_wakes_on_change_only(c: consul.Consul, server: LiveServer) -> None:
    c.config.set("service-resolver", "blk", {"DefaultSubset": "v1", "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"}}})
    with _http(server) as h:
        r = h.get("/v1/config/service-resolver/blk")
        idx = int(r.headers["X-Consul-Index"])
        out: dict[str, Any] = {}

        def wait() -> None:
            with _http(server) as h2:
                t0 = time.monotonic()
                w = h2.get(f"/v1/config/service-resolver/blk?index={idx}&wait=20s")
                out.update(elapsed=time.monotonic() - t0, index=int(w.headers["X-Consul-Index"]), body=w.json())

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.5)
        c.kv.put("unrelated/key", "x")  # other churn does not wake the query
        c.config.set("service-defaults", "other", {"Protocol": "http"})
        c.config.set("service-resolver", "blk2", {})  # nor does an entry whose name starts alike
        time.sleep(0.5)
        assert t.is_alive()
        c.config.set("service-resolver", "blk", {"Subsets": {"v1": {"Filter": "Service.Meta.version == v2"}}})
        t.join(10)
        assert out["index"] > idx and out["body"]["Subsets"]["v1"]["Filter"] == "Service.Meta.version == v2"
        timed = h.get(f"/v1/config/service-resolver/blk?index={out['index']}&wait=200ms")
        assert timed.status_code == 200 and int(timed.headers["X-Consul-Index"]) == out["index"]


def test_entries_reach_the_servers_mesh(c: consul.Consul, server: LiveServer) -> None:
    """``pitwall server`` wires the entries into its service proxy: a Service and entries written through the
    real clients (py-consul, the Kubernetes API) show up in the proxy's compiled mesh."""
    cp = server.app.state.components.control_plane
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop", "namespace": "default"},
           "spec": {"selector": {"app": "shop"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
    with _http(server) as h:
        r = h.post("/api/v1/namespaces/default/services", json=svc, headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 201, r.text
    c.config.set("service-intentions", "shop", {"Sources": [{"Name": "web", "Action": "deny"}]})
    c.config.set("service-splitter", "shop", {"Splits": [{"Weight": 50}, {"Weight": 50, "Service": "shop-v2"}]})
    fq = "shop.default.svc.cluster.local"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        mesh = cp.traffic.proxy.mesh
        if mesh.routes_for(fq) and mesh.authz is not None and mesh.authz.policies:
            break
        time.sleep(0.05)
    mesh = cp.traffic.proxy.mesh
    weights = sorted((d.host, d.weight) for d in mesh.routes_for(fq)[-1].dests)
    assert weights == [("shop-v2.default.svc.cluster.local", 5000), (fq, 5000)]
    assert [p.name for p in mesh.authz.policies] == ["consul-intentions-shop"]
