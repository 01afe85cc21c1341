"""Blocking catalog, health and session reads held in ``ParkHeldQueries`` (below the router), via py-consul
against a live pitwall: woken by their own data only, answered at ``wait``, freed on disconnect, auth first."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import consul
import httpx
import pytest

from tests.conftest import LiveServer
from tests.registry.conftest import ADMIN
from tests.registry.test_catalog import eventually, kube

pytestmark = pytest.mark.timeout(90)


def _held(server: LiveServer) -> float:
    m = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    return next(float(x.split()[-1]) for x in m.splitlines() if x.startswith("pitwall_consul_blocking_queries "))


def _endpoints(name: str, ready: list[str], not_ready: list[str], rv: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", **({"resourceVersion": rv} if rv else {})}
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
            "subsets": [{"addresses": [{"ip": ip, "targetRef": {"kind": "Pod", "name": f"{name}-r{i}"}}
                                       for i, ip in enumerate(ready)],
                         "notReadyAddresses": [{"ip": ip, "targetRef": {"kind": "Pod", "name": f"{name}-n{i}"}}
                                               for i, ip in enumerate(not_ready)],
                         "ports": [{"port": 8080, "protocol": "TCP"}]}]}


def _service(server: LiveServer, name: str, ready: list[str], not_ready: list[str]) -> dict[str, Any]:
    """A selector-less Service and its Endpoints (written here, as the endpoints controller would)."""
    kube(server, "POST", "/api/v1/namespaces/default/services",
         {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
          "spec": {"ports": [{"port": 80, "targetPort": 8080}]}})
    return kube(server, "POST", "/api/v1/namespaces/default/endpoints", _endpoints(name, ready, not_ready))


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    got: dict[str, Any] = {}
    th = threading.Thread(target=lambda: got.__setitem__("r", fn()), daemon=True)
    th.start()
    return th, got


def _wait_held(server: LiveServer, n: float) -> None:
    eventually(lambda: _held(server) >= n, timeout=20)


def test_health_service_wakes_on_its_own_pods_only(server: LiveServer, c: consul.Consul) -> None:
    ep = _service(server, "parka", [], ["127.0.7.1"])
    idx, entries = c.health.service("parka", passing=True)
    assert entries == []
    base = _held(server)
    th, got = _in_thread(lambda: c.health.service("parka", passing=True, index=idx, wait="30s"))
    th2, got2 = _in_thread(lambda: c.catalog.service("parka", index=idx, wait="30s"))
    _wait_held(server, base + 2)
    _service(server, "parkb", ["127.0.7.9"], [])  # another service's change: neither query answers
    kube(server, "PUT", "/api/v1/namespaces/default/services/parkb",
         kube(server, "GET", "/api/v1/namespaces/default/services/parkb") | {"spec": {
             "ports": [{"port": 81, "targetPort": 8080}]}})
    time.sleep(1.0)
    assert th.is_alive() and th2.is_alive() and _held(server) >= base + 2
    # the pod turns ready: its address moves to the ready list
    kube(server, "PUT", "/api/v1/namespaces/default/endpoints/parka",
         _endpoints("parka", ["127.0.7.1"], [], ep["metadata"]["resourceVersion"]))
    th.join(10)
    th2.join(10)
    assert not th.is_alive() and not th2.is_alive()
    new_idx, up = got["r"]
    assert int(new_idx) > int(idx) and [e["Service"]["Address"] for e in up] == ["127.0.7.1"]
    assert int(got2["r"][0]) == int(new_idx) and [n["ServiceAddress"] for n in got2["r"][1]] == ["127.0.7.1"]
    # Nothing changes: the answer comes at ``wait``, with the same index.
    t0 = time.monotonic()
    same, again = c.health.service("parka", index=new_idx, wait="1s")
    assert same == new_idx and len(again) == 1 and time.monotonic() - t0 >= 1.0
    # Deleting the Service (its instances vanish, no higher index to read) answers a held read too.
    th, got = _in_thread(lambda: c.health.service("parka", index=new_idx, wait="30s"))
    _wait_held(server, base + 1)
    kube(server, "DELETE", "/api/v1/namespaces/default/endpoints/parka")
    th.join(10)
    assert not th.is_alive() and got["r"][1] == [] and int(got["r"][0]) > int(new_idx)
    kube(server, "DELETE", "/api/v1/namespaces/default/services/parka")
    kube(server, "DELETE", "/api/v1/namespaces/default/services/parkb")


def test_sessions_block_on_their_own_keys(server: LiveServer, c: consul.Consul) -> None:
    sid = c.session.create(name="parked", ttl=60)
    idx, info = c.session.info(sid)
    assert info is not None and info["ID"] == sid
    base = _held(server)
    th, got = _in_thread(lambda: c.session.info(sid, index=idx, wait="30s"))
    _wait_held(server, base + 1)
    other = c.session.create(name="other", ttl=60)  # another session: the info query stays held
    time.sleep(1.0)
    assert th.is_alive()
    lidx, listed = c.session.list()
    assert {s["ID"] for s in listed} >= {sid, other}
    th2, got2 = _in_thread(lambda: c.session.list(index=lidx, wait="30s"))
    _wait_held(server, base + 2)
    c.session.destroy(sid)  # a delete: both answer, the list without it, the info with none
    th.join(10)
    th2.join(10)
    assert not th.is_alive() and not th2.is_alive()
    assert got["r"][1] is None and int(got["r"][0]) > int(idx)
    assert sid not in {s["ID"] for s in got2["r"][1]} and int(got2["r"][0]) > int(lidx)
    c.session.destroy(other)


def test_a_client_leaving_a_parked_health_read_frees_it(server: LiveServer, c: consul.Consul) -> None:
    _service(server, "parkgone", ["127.0.7.5"], [])
    idx, _ = c.health.service("parkgone")
    base = _held(server)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"GET /v1/health/service/parkgone?index={idx}&wait=60s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"X-Consul-Token: {ADMIN}\r\n\r\n".encode())
    _wait_held(server, base + 1)
    sock.close()
    eventually(lambda: _held(server) <= base, timeout=10)  # long before the 60s wait ends
    kube(server, "DELETE", "/api/v1/namespaces/default/services/parkgone")


def test_tokens_are_checked_before_parking(server: LiveServer, c: consul.Consul) -> None:
    _service(server, "parkacl", ["127.0.7.6"], [])
    idx, _ = c.health.service("parkacl")
    base = _held(server)
    for headers in ({"X-Consul-Token": "not-a-token-0123456789"}, {}):
        r = httpx.get(f"{server.url}/v1/health/service/parkacl?index={idx}&wait=30s", headers=headers, timeout=10)
        assert r.status_code in (401, 403), (headers, r.status_code)  # at once, never held
    assert _held(server) == base
    kube(server, "DELETE", "/api/v1/namespaces/default/services/parkacl")


def test_agent_services_block_on_their_content_hash(server: LiveServer, c: consul.Consul) -> None:
    h = {"X-Consul-Token": ADMIN}
    c.agent.service.register("parkh", service_id="parkh-1", port=9100)
    r = httpx.get(f"{server.url}/v1/agent/services", headers=h)
    digest = r.headers["X-Consul-ContentHash"]
    base = _held(server)
    url = f"{server.url}/v1/agent/services?hash={digest}&wait=30s"
    th, got = _in_thread(lambda: httpx.get(url, headers=h, timeout=40))
    _wait_held(server, base + 1)
    c.kv.put("parkh/unrelated", "x")  # not the agent's services: still held
    time.sleep(1.0)
    assert th.is_alive()
    c.agent.service.register("parkh2", service_id="parkh2-1", port=9101)
    th.join(10)
    assert not th.is_alive()
    woken = got["r"]
    assert woken.status_code == 200 and woken.headers["X-Consul-ContentHash"] != digest
    assert "parkh2-1" in woken.json()
    same = httpx.get(f"{server.url}/v1/agent/services?hash={woken.headers['X-Consul-ContentHash']}&wait=1s",
                     headers=h, timeout=10)
    assert same.headers["X-Consul-ContentHash"] == woken.headers["X-Consul-ContentHash"]
    c.agent.service.deregister("parkh-1")
    c.agent.service.deregister("parkh2-1")
