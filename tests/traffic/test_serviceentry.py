"""Istio's ServiceEntry: a pod's request for a host outside the registry, through its egress listener, goes
to the entry's endpoints with the VirtualService and DestinationRule rules of that host, and counts in
Istio's metrics as Istio labels a ServiceEntry destination.

The "external" endpoints are HTTP servers on 127.0.0.1 (STATIC), or reached by resolving ``localhost``
(DNS). One test runs Debian's curl in a real pod; the others call through a pod's egress listener with
httpx (the listener's address is what names the calling pod).
"""

from __future__ import annotations

import asyncio
import random
import shutil
from typing import Any

import httpx
import pytest

from pitwall.traffic.serviceentry import compile_service_entries, entry_error
from pitwall.traffic.telemetry import LABELS
from tests.conftest import free_port
from tests.traffic import test_egress
from tests.traffic.conftest import eventually
from tests.traffic.mesh_helpers import App, apply, authz, dr, vs
from tests.traffic.test_egress import Mesh

pytestmark = pytest.mark.timeout(120)
mesh = test_egress.mesh  # the fixture: API, kubelet, service proxy with telemetry, egress listeners

Obj = dict[str, Any]
HOST = "api.example.test"


def _entry(name: str, hosts: list[str], ports: list[Obj], resolution: str, endpoints: list[Obj] | None = None,
           location: str = "MESH_EXTERNAL") -> Obj:
    spec: Obj = {"hosts": hosts, "ports": ports, "resolution": resolution, "location": location}
    if endpoints is not None:
        spec["endpoints"] = endpoints
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": name},
            "spec": spec}


HTTP80 = [{"number": 80, "name": "http", "protocol": "HTTP"}]


async def _apps(mesh: Mesh, n: int, **kw: Any) -> list[App]:
    apps = [await App("127.0.0.1", free_port(), f"ext-{i}", **kw).start() for i in range(n)]
    mesh.apps.extend(apps)
    return apps


async def _caller(mesh: Mesh, name: str = "sleep") -> str:
    """A pod (bound to another node, so no process runs) with an egress listener; its proxy URL."""
    ip = f"127.42.{mesh.subnet + 1}.{random.randrange(2, 250)}"
    pod = await mesh.client.create({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                         "labels": {"app": name}},
        "spec": {"nodeName": "elsewhere", "containers": [{"name": "c", "image": "x"}]}})
    pod["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    await mesh.client.update_status(pod)
    url = await mesh.egress.open(pod, ip)
    assert url is not None
    return url


async def _entry_known(mesh: Mesh, host: str) -> None:
    await eventually(lambda: mesh.proxy.mesh.entries.lookup(host) is not None)


def _rows(mesh: Mesh, **want: str) -> list[dict[str, str]]:
    """The label sets (both reporters spelled out) of the series matching ``want``."""
    out = []
    for lb, _, _ in mesh.telemetry.rows(0):
        d = dict(lb)
        if d.get("__name__") == "istio_requests_total" and all(d.get(k) == v for k, v in want.items()):
            out.append(d)
    return out


async def test_curl_in_a_pod_reaches_a_static_service_entry(mesh: Mesh) -> None:
    """``curl http://api.example.test/`` in a pod (HTTP_PROXY = its egress listener) goes to the entry's
    STATIC endpoints, with Istio's labels for a ServiceEntry destination and the source reporter only."""
    a, b = await _apps(mesh, 2)
    await apply(mesh.client, _entry("api", [HOST], [{"number": 80, "name": "http", "protocol": "HTTP"}], "STATIC",
                                    [{"address": "127.0.0.1", "ports": {"http": a.port}},
                                     {"address": "127.0.0.1", "ports": {"http": b.port}}]))
    await _entry_known(mesh, HOST)
    assert shutil.which("curl"), "Debian's curl is needed"
    curl = ("for i in 1 2 3 4; do curl -sS -o /dev/null -w 'curl %{http_code}\\n' http://api.example.test/x; done;"
            " sleep 300")
    await mesh.run_pod("curl-caller", ["sh", "-c", curl])
    assert await mesh.lines("curl-caller", "curl ", 4) == ["curl 200"] * 4
    assert len(a.requests) == 2 and len(b.requests) == 2  # round-robin over the two endpoints
    assert all(r["headers"]["host"] == HOST and r["headers"].get("x-request-id") for r in a.requests + b.requests)
    assert mesh.series(source_workload="curl-caller", destination_service=HOST, destination_service_name=HOST,
                       destination_service_namespace="default", destination_workload="unknown",
                       destination_workload_namespace="unknown", destination_principal="unknown",
                       response_code="200") == 4
    rows = _rows(mesh, source_workload="curl-caller")
    assert rows and {r["reporter"] for r in rows} == {"source"}  # no sidecar at an external endpoint
    assert mesh.egress.stats.service_requests == 4 and mesh.egress.stats.passthrough_requests == 0
    spans = mesh.tracer._cols  # a CLIENT span per request, the host as the remote service
    hops = [(svc, remote) for svc, remote, name in zip(spans.service, spans.remote_service, spans.name, strict=True)
            if name == f"{HOST}:80/*"]
    assert hops == [("curl-caller.default", HOST)] * 4


async def test_virtual_service_and_destination_rule_rules_apply_to_the_host(mesh: Mesh) -> None:
    """Retries, a timeout, a fault and DestinationRule subsets (by the endpoints' labels) written for the
    entry's host; an AuthorizationPolicy denying everything in the namespace does not apply (no sidecar
    there); endpoint weights split the traffic."""
    flaky, slow, v2 = await _apps(mesh, 3)
    flaky.fail_first = 2
    slow.delay_s = 2.0
    await apply(mesh.client, _entry("api", [HOST], HTTP80, "STATIC", [
        {"address": "127.0.0.1", "ports": {"http": flaky.port}, "labels": {"version": "flaky"}},
        {"address": "127.0.0.1", "ports": {"http": slow.port}, "labels": {"version": "slow"}},
        {"address": "127.0.0.1", "ports": {"http": v2.port}, "labels": {"version": "v2"}}]))
    await apply(mesh.client, dr(HOST, {"subsets": [{"name": n, "labels": {"version": n}}
                                                   for n in ("flaky", "slow", "v2")]}))
    route = {"retries": {"attempts": 3, "retryOn": "5xx", "perTryTimeout": "5s"}}
    await apply(mesh.client, vs("api", [
        {"match": [{"uri": {"prefix": "/flaky"}}], "route": [{"destination": {"host": HOST, "subset": "flaky"}}],
         **route},
        {"match": [{"uri": {"prefix": "/slow"}}], "timeout": "0.2s",
         "route": [{"destination": {"host": HOST, "subset": "slow"}}]},
        {"match": [{"uri": {"prefix": "/fault"}}],
         "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}},
         "route": [{"destination": {"host": HOST, "subset": "v2"}}]},
        {"route": [{"destination": {"host": HOST, "subset": "v2"}}]}], hosts=[HOST]))
    await apply(mesh.client, authz("deny-all", {"action": "DENY", "rules": [{}]}))
    await _entry_known(mesh, HOST)
    await eventually(lambda: mesh.proxy.mesh.routes_for(HOST) is not None and bool(
        mesh.proxy.mesh.authz and mesh.proxy.mesh.authz.policies))
    proxy = await _caller(mesh)
    async with httpx.AsyncClient(proxy=proxy, timeout=10) as c:
        r = await c.get(f"http://{HOST}/flaky")
        assert r.status_code == 200 and r.json()["name"] == flaky.name
        assert len(flaky.requests) == 3  # two 503s retried
        r = await c.get(f"http://{HOST}/slow")
        assert r.status_code == 504 and r.text == "upstream request timeout"
        r = await c.get(f"http://{HOST}/fault")
        assert r.status_code == 418 and r.text == "fault filter abort" and not v2.requests
        r = await c.get(f"http://{HOST}/plain")
        assert r.status_code == 200 and r.json()["name"] == v2.name
    assert mesh.series(source_workload="sleep", destination_service_name=HOST, response_code="504",
                       response_flags="UT") == 1
    assert mesh.series(source_workload="sleep", destination_service_name=HOST, response_code="418",
                       response_flags="FI") == 1


async def test_endpoint_weights_split_the_traffic(mesh: Mesh) -> None:
    light, heavy = await _apps(mesh, 2)
    await apply(mesh.client, _entry("api", [HOST], HTTP80, "STATIC", [
        {"address": "127.0.0.1", "ports": {"http": light.port}, "weight": 1},
        {"address": "127.0.0.1", "ports": {"http": heavy.port}, "weight": 3}]))
    await _entry_known(mesh, HOST)
    proxy = await _caller(mesh)
    async with httpx.AsyncClient(proxy=proxy, timeout=10) as c:
        for _ in range(40):
            assert (await c.get(f"http://{HOST}/")).status_code == 200
    assert (len(light.requests), len(heavy.requests)) == (10, 30)  # round-robin over the weighted list


async def test_dns_resolution_and_resolution_none(mesh: Mesh) -> None:
    """DNS: the endpoint ``localhost`` (or, without endpoints, the host itself) is resolved when the
    connection opens; NONE: the request goes where it names. TCP ports relay without L7 routing."""
    (app,) = await _apps(mesh, 1)
    await apply(mesh.client, _entry("by-dns", ["api.dns.test"], [{"number": 80, "name": "http", "protocol": "HTTP",
                                                                   "targetPort": app.port}],
                                    "DNS", [{"address": "localhost"}]))
    await apply(mesh.client, _entry("itself", ["localhost"], [{"number": app.port, "name": "http",
                                                               "protocol": "HTTP"}], "DNS"))
    await apply(mesh.client, _entry("none", ["127.0.0.1"], [{"number": app.port, "name": "web",
                                                             "protocol": "HTTP"}], "NONE",
                                    location="MESH_INTERNAL"))
    for h in ("api.dns.test", "localhost", "127.0.0.1"):
        await _entry_known(mesh, h)
    proxy = await _caller(mesh)
    async with httpx.AsyncClient(proxy=proxy, timeout=10) as c:
        assert (await c.get("http://api.dns.test/a")).status_code == 200
        assert (await c.get(f"http://localhost:{app.port}/b")).status_code == 200
        assert (await c.get(f"http://127.0.0.1:{app.port}/c")).status_code == 200
    assert [r["path"] for r in app.requests] == ["/a", "/b", "/c"]
    for host in ("api.dns.test", "localhost", "127.0.0.1"):
        assert mesh.series(source_workload="sleep", destination_service_name=host, response_code="200",
                           destination_workload="unknown") == 1, host
    assert mesh.egress.stats.passthrough_requests == 0


async def test_tcp_port_and_connect_tunnel_reach_the_endpoints(mesh: Mesh) -> None:
    (app,) = await _apps(mesh, 1)
    await apply(mesh.client, _entry("db", ["db.example.test"], [{"number": 5432, "name": "tcp", "protocol": "TCP"}],
                                    "STATIC", [{"address": "127.0.0.1", "ports": {"tcp": app.port}}]))
    await _entry_known(mesh, "db.example.test")
    proxy = await _caller(mesh)
    async with httpx.AsyncClient(proxy=proxy, timeout=10) as c:  # an HTTP request on a TCP port: relayed
        r = await c.get("http://db.example.test:5432/relayed")
        assert r.status_code == 200 and r.json()["path"] == "/relayed"
    host, port = proxy.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"CONNECT db.example.test:5432 HTTP/1.1\r\nHost: db.example.test:5432\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    writer.write(b"GET /tunnelled HTTP/1.1\r\nHost: db\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
    assert b'"path": "/tunnelled"' in await asyncio.wait_for(reader.readexactly(length), 10)
    writer.close()
    assert [r["path"] for r in app.requests] == ["/relayed", "/tunnelled"]
    assert mesh.egress.stats.tunnels == 1
    opened = [key for key in mesh.telemetry.tcp_series() if dict(zip(LABELS, key, strict=True))[
        "destination_service_name"] == "db.example.test"]
    assert opened and all(dict(zip(LABELS, k, strict=True))["source_workload"] == "sleep" for k in opened)


async def test_a_bad_entry_is_rejected_and_the_previous_version_stays(mesh: Mesh) -> None:
    (app,) = await _apps(mesh, 1)
    good = _entry("api", [HOST], HTTP80, "STATIC", [{"address": "127.0.0.1", "ports": {"http": app.port}}])
    await apply(mesh.client, good)
    await _entry_known(mesh, HOST)
    bad = _entry("api", [HOST], HTTP80, "STATIC", [])  # STATIC without endpoints
    await apply(mesh.client, bad)
    await eventually(lambda: any("ServiceEntry default/api" in k for k in mesh.proxy.mesh.errors))
    err = next(v for k, v in mesh.proxy.mesh.errors.items() if "ServiceEntry default/api" in k)
    assert "spec.endpoints" in err
    proxy = await _caller(mesh)
    async with httpx.AsyncClient(proxy=proxy, timeout=10) as c:
        assert (await c.get(f"http://{HOST}/still")).status_code == 200
    cluster = mesh.proxy.clusters()[f"outbound|80||{HOST}"]
    assert [b.port for b in cluster.hosts] == [app.port]
    # A new version moving the entry to another endpoint: the old one's state and pooled connections go.
    (other,) = await _apps(mesh, 1)
    await apply(mesh.client, _entry("api", [HOST], HTTP80, "STATIC",
                                    [{"address": "127.0.0.1", "ports": {"http": other.port}}]))
    await eventually(lambda: not cluster.hosts and not cluster.idle)
    async with httpx.AsyncClient(proxy=proxy, timeout=10) as c:
        assert (await c.get(f"http://{HOST}/moved")).json()["name"] == other.name


def test_entries_compile_as_istio_reads_them() -> None:
    """Defaults, ports, weights, wildcards, the oldest entry winning a host, and errors with the field."""

    def se(name: str, created: str, **spec: Any) -> Obj:
        return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created}, "spec": spec}

    t = compile_service_entries([
        se("w", "2026-01-02T00:00:00Z", hosts=["*.example.test"], ports=[{"number": 443, "name": "tls",
                                                                        "protocol": "TLS"}]),
        se("a", "2026-01-01T00:00:00Z", hosts=["API.example.test."], resolution="STATIC",
           ports=[{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 8080}],
           endpoints=[{"address": "10.0.0.1"}, {"address": "10.0.0.2", "ports": {"http": 9090}, "weight": 2,
                                                "labels": {"v": "2"}}]),
        se("late", "2026-01-03T00:00:00Z", hosts=["api.example.test"], ports=[{"number": 80}]),
    ])
    a = t.lookup("api.example.test")
    assert a is not None and a.external and a.resolution == "STATIC" and not a.original_dst
    p = a.port(80)
    assert p is not None and p.http and a.port(81) is None
    assert [(b.ip, b.port) for b in p.endpoints] == [("10.0.0.1", 8080), ("10.0.0.2", 9090), ("10.0.0.2", 9090)]
    assert dict(p.labels[p.endpoints[1]]) == {"v": "2"}
    w = t.lookup("x.y.example.test")
    assert w is not None and w.name == "w" and w.original_dst and w.port(443) is not None
    assert not w.port(443).http  # type: ignore[union-attr]
    assert t.lookup("example.test") is None and t.lookup("other.test") is None
    assert "already defined by ns/a" in t.errors["ServiceEntry ns/late"]
    assert entry_error(se("x", "", hosts=["h"], ports=[{"number": 80}], resolution="STATIC")) == \
        "spec.endpoints: resolution STATIC needs endpoints"
    assert "spec.ports[0].number" in str(entry_error(se("x", "", hosts=["h"], ports=[{"number": 0}])))
    assert "spec.endpoints[0].weight" in str(entry_error(se("x", "", hosts=["h"], ports=[{"number": 1}],
                                                           resolution="DNS", endpoints=[{"address": "a",
                                                                                         "weight": -1}])))
    assert "wildcard" in str(entry_error(se("x", "", hosts=["*.h"], ports=[{"number": 1}], resolution="DNS")))
