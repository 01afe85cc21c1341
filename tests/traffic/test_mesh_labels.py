"""Istio's metric labels on every hop: same node, across nodes over mutual TLS, plaintext callers, and a
pod's egress to hosts that are no Service (the PassthroughCluster), HTTP and CONNECT tunnels.

The expected values follow Istio's definitions:
- Istio "Standard Metrics" (istio.io/latest/docs/reference/config/metrics/): ``connection_security_policy``
  is "the service authentication policy of the request. It is set to ``mutual_tls`` when Istio is used to
  make communication secure and report is from destination. It is set to ``unknown`` when report is from
  source since security policy cannot be properly populated"; ``none`` when the inbound connection was not
  mTLS (istio/proxy testdata/metric/server_request_total.yaml.tmpl). ``source_principal`` /
  ``destination_principal`` are the peers' identities from the mTLS certificates, ``unknown`` without
  mTLS (istio/proxy testdata/metric/client_request_total.yaml.tmpl and
  tcp_server_connection_open_without_mx.yaml.tmpl).
- PassthroughCluster (istio.io blog "Monitoring Blocked and Passthrough External Service Traffic";
  istio/proxy extensions/common/context.cc ``getDestinationService``): ``destination_service_name`` is the
  cluster name ``PassthroughCluster``, ``destination_service`` the request's ``:authority`` for HTTP and
  ``unknown`` for TCP (no host header); only the caller's sidecar reports (``reporter="source"``).

Pitwall's choice for two pods of one node (no bytes cross a network between them, the node plays both
sidecars and knows the caller by its pod IP or egress listener): the hop counts as ``mutual_tls`` with
both SPIFFE principals unless the workload's PeerAuthentication (or the DestinationRule's ``tls.mode``)
is DISABLE, where Istio's sidecars would talk plaintext (docs/traffic.md, "Telemetry").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from pitwall.kube.wiring import build_kube
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traffic import ServiceProxy
from pitwall.traffic.egress import EgressListeners
from pitwall.traffic.istio_crds import istio_crds
from pitwall.traffic.telemetry import LABELS, MeshTelemetry
from tests.traffic.conftest import cluster_ip, endpoint, eventually, make_service, pod_ips, put_slice
from tests.traffic.mesh_helpers import App, add_pod, apply, dr
from tests.traffic.test_meshtls import Mesh as TwoNodes
from tests.traffic.test_meshtls import configure_mode, peer_auth
from tests.traffic.test_meshtls import mesh as two_nodes  # noqa: F401 (a fixture: two mesh nodes, mTLS between)

pytestmark = pytest.mark.timeout(60)

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
WEB = "spiffe://cluster.local/ns/default/sa/web"
FQDN = "web.default.svc.cluster.local"


def series(tel: MeshTelemetry, name: str = "istio_requests_total") -> dict[str, list[tuple[dict[str, str], float]]]:
    """The flushed samples of ``name`` (labels without ``__name__``, value), keyed by ``reporter``."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for lb, _, v in tel.rows(0):
        d = dict(lb)
        if d.pop("__name__") == name:
            out.setdefault(d["reporter"], []).append((d, v))
    return out


def edge(tel: MeshTelemetry, reporter: str, name: str = "istio_requests_total", **want: str) -> dict[str, str]:
    """The one series of ``reporter`` whose labels include ``want``."""
    [(lb, _)] = [(lb, v) for lb, v in series(tel, name).get(reporter, []) if want.items() <= lb.items()]
    return lb


def caller_labels(principal: str) -> dict[str, str]:
    return {"source_workload": "sleep", "source_workload_namespace": "default", "source_principal": principal,
            "source_app": "sleep", "source_version": "unknown", "source_canonical_service": "sleep",
            "source_canonical_revision": "latest", "source_cluster": "Kubernetes"}


OUTSIDE = {"source_workload": "unknown", "source_workload_namespace": "unknown", "source_principal": "unknown",
           "source_app": "unknown", "source_version": "unknown", "source_canonical_service": "unknown",
           "source_canonical_revision": "latest", "source_cluster": "Kubernetes"}


def web_labels(workload: str, principal: str) -> dict[str, str]:
    return {"destination_service": FQDN, "destination_service_name": "web",
            "destination_service_namespace": "default", "destination_workload": workload,
            "destination_workload_namespace": "default", "destination_principal": principal,
            "destination_app": "web", "destination_version": "unknown", "destination_canonical_service": "web",
            "destination_canonical_revision": "latest", "destination_cluster": "Kubernetes"}


# No grpc-status answered: ``grpc_response_status`` is empty, so absent from the stored series.
HTTP_200 = {"request_protocol": "http", "response_code": "200", "response_flags": "-"}


def both_reporters(tel: MeshTelemetry, security: str, **want: str) -> tuple[dict[str, str], dict[str, str]]:
    """The source and destination series of one edge; they differ in ``connection_security_policy``
    only (the source reporter's is ``unknown``)."""
    src = edge(tel, "source", **want)
    dst = edge(tel, "destination", **want)
    assert src["connection_security_policy"] == "unknown"
    assert dst["connection_security_policy"] == security
    assert {k: v for k, v in src.items() if k not in ("reporter", "connection_security_policy")} == {
        k: v for k, v in dst.items() if k not in ("reporter", "connection_security_policy")}
    return src, dst


@dataclass
class Node:
    proxy: ServiceProxy
    egress: EgressListeners
    tel: MeshTelemetry
    svc_ip: str
    caller_ip: str
    egress_url: str
    apps: list[App] = field(default_factory=list)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """One node: Service ``web`` (a pod of serviceAccount web), a ``sleep`` pod (serviceAccount sleep) with
    its egress listener, the service proxy counting into an in-memory ``MeshTelemetry``."""
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    kube = build_kube(store)
    kube.add_builtin_crds(istio_crds())
    await kube.start()
    tel = MeshTelemetry(None)
    proxy = ServiceProxy(kube.client, drain_timeout_s=0.5, connect_budget_s=1.0, attempt_timeout_s=0.5,
                         telemetry=tel)
    egress = EgressListeners(proxy, port=0)
    apps: list[App] = []
    try:
        await proxy.start()
        await proxy.wait_synced(10)
        c = kube.client
        web_ip, caller_ip = pod_ips(2)
        await add_pod(c, "web-0", web_ip, {"app": "web"}, sa="web")
        await add_pod(c, "sleep", caller_ip, {"app": "sleep"}, sa="sleep")
        apps.append(await App(web_ip, 8080, "web-0").start())
        svc = await make_service(c, "web")
        await put_slice(c, "web", [endpoint(web_ip)])
        ip = cluster_ip(svc)
        await eventually(lambda: len(proxy.endpoints(ip, 80)) == 1 and web_ip in proxy.pods
                         and caller_ip in proxy.pods)
        url = await egress.open(await c.get("v1", "Pod", "sleep", "default"), caller_ip)
        assert url is not None
        yield Node(proxy, egress, tel, ip, caller_ip, url, apps)
    finally:
        await egress.stop()
        await proxy.stop()
        for a in apps:
            await a.stop()
        await kube.stop()
        await store.stop()


async def test_http_same_node_follows_the_peer_authentication_mode(node: Node) -> None:
    transport = httpx.AsyncHTTPTransport(local_address=node.caller_ip)
    async with httpx.AsyncClient(transport=transport, timeout=10) as c:
        assert (await c.get(f"http://{node.svc_ip}/a")).status_code == 200
    # PERMISSIVE (no policy): a mesh caller on this node is authenticated by the node: mutual_tls.
    _, dst = both_reporters(node.tel, "mutual_tls", source_workload="sleep")
    assert dst == {**caller_labels(SLEEP), **web_labels("web-0", WEB), **HTTP_200, "reporter": "destination",
                   "connection_security_policy": "mutual_tls"}

    # DISABLE: Istio's sidecars talk plaintext; no principal is known from a certificate.
    await apply(node.proxy.client, peer_auth("off", {"selector": {"matchLabels": {"app": "web"}},
                                                     "mtls": {"mode": "DISABLE"}}))
    web = node.proxy.pods[node.apps[0].ip]
    await eventually(lambda: node.proxy.mesh.peer_auth is not None and node.proxy.mesh.peer_auth.mode(
        web, 8080) == "DISABLE")
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=node.caller_ip),
                                 timeout=10) as c:
        assert (await c.get(f"http://{node.svc_ip}/b")).status_code == 200
    _, dst = both_reporters(node.tel, "none", source_workload="sleep", source_principal="unknown")
    assert dst == {**caller_labels("unknown"), **web_labels("web-0", "unknown"), **HTTP_200,
                   "reporter": "destination", "connection_security_policy": "none"}


async def test_destination_rule_tls_disable_makes_a_same_node_hop_plaintext(node: Node) -> None:
    await apply(node.proxy.client, dr("web", {"trafficPolicy": {"tls": {"mode": "DISABLE"}}}))
    await eventually(lambda: (rule := node.proxy.mesh.dest_rule(FQDN)) is not None and rule.tls_mode == "DISABLE")
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=node.caller_ip),
                                 timeout=10) as c:
        assert (await c.get(f"http://{node.svc_ip}/dr")).status_code == 200
    _, dst = both_reporters(node.tel, "none", source_workload="sleep")
    assert dst == {**caller_labels("unknown"), **web_labels("web-0", "unknown"), **HTTP_200,
                   "reporter": "destination", "connection_security_policy": "none"}


async def test_http_outside_caller_is_plaintext_under_permissive(node: Node) -> None:
    async with httpx.AsyncClient(timeout=10) as c:  # from 127.0.0.1: no mesh pod
        assert (await c.get(f"http://{node.svc_ip}/outside")).status_code == 200
    _, dst = both_reporters(node.tel, "none", source_workload="unknown")
    assert dst == {**OUTSIDE, **web_labels("web-0", "unknown"), **HTTP_200, "reporter": "destination",
                   "connection_security_policy": "none"}


@dataclass
class External:
    """A plain HTTP server on an address that is no Service: what it read and wrote, per connection."""

    ip: str
    port: int = 0
    read: list[int] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> External:
        self.server = await asyncio.start_server(self._handle, self.ip, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nexternal"
        self.read.append(len(head))
        self.written.append(len(answer))
        w.write(answer)
        await w.drain()
        w.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def external() -> AsyncIterator[External]:
    ext = await External(pod_ips(1)[0]).start()
    try:
        yield ext
    finally:
        ext.stop()


PASSTHROUGH_DEST = {"destination_service_name": "PassthroughCluster", "destination_service_namespace": "unknown",
                    "destination_workload": "unknown", "destination_workload_namespace": "unknown",
                    "destination_principal": "unknown", "destination_app": "unknown",
                    "destination_version": "unknown", "destination_canonical_service": "unknown",
                    "destination_canonical_revision": "latest", "destination_cluster": "Kubernetes"}


async def test_egress_passthrough_request_counts_under_passthrough_cluster(node: Node, external: External) -> None:
    async with httpx.AsyncClient(proxy=node.egress_url, timeout=10) as c:
        r = await c.get(f"http://{external.ip}:{external.port}/out", headers={"content-type": "text/plain"})
    assert r.status_code == 200 and r.text == "external"
    assert node.egress.stats.passthrough_requests == 1
    per = series(node.tel)
    assert set(per) == {"source"}  # no sidecar at the other end: no destination reporter
    [(lb, count)] = per["source"]
    assert count == 1.0
    assert lb == {**caller_labels("unknown"), **PASSTHROUGH_DEST,
                  "destination_service": f"{external.ip}:{external.port}", **HTTP_200, "reporter": "source",
                  "connection_security_policy": "unknown"}
    [(_, size)] = series(node.tel, "istio_response_bytes_sum")["source"]
    assert size == 8.0


async def test_egress_connect_tunnel_counts_tcp_under_passthrough_cluster(node: Node, external: External) -> None:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "10", "--proxytunnel", "--proxy", node.egress_url,
        f"http://{external.ip}:{external.port}/tunnel", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert out == b"external"
    assert node.egress.stats.tunnels == 1
    await eventually(lambda: node.tel.open_connections() == 0)
    assert series(node.tel) == {}  # bytes in a tunnel: no HTTP request counted
    values = {name: series(node.tel, name) for name in (
        "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
        "istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total")}
    want = {**caller_labels("unknown"), **PASSTHROUGH_DEST, "destination_service": "unknown",
            "request_protocol": "tcp", "response_flags": "-", "reporter": "source",
            "connection_security_policy": "unknown"}
    got = {name: [(lb, v) for lb, v in per["source"]] for name, per in values.items()}
    assert all(set(per) == {"source"} for per in values.values())
    assert got == {"istio_tcp_connections_opened_total": [(want, 1.0)],
                   "istio_tcp_connections_closed_total": [(want, 1.0)],
                   "istio_tcp_received_bytes_total": [(want, float(sum(external.read)))],
                   "istio_tcp_sent_bytes_total": [(want, float(sum(external.written)))]}


async def test_connect_tunnel_to_an_unreachable_host_counts_with_uf(node: Node) -> None:
    (ip,) = pod_ips(1)  # nothing listens there
    r, w = await asyncio.open_connection(*node.egress_url.removeprefix("http://").split(":"))
    try:
        w.write(f"CONNECT {ip}:9 HTTP/1.1\r\nHost: {ip}:9\r\n\r\n".encode())
        assert (await asyncio.wait_for(r.read(), 10)).startswith(b"HTTP/1.1 503")
    finally:
        w.close()
    lb = edge(node.tel, "source", "istio_tcp_connections_closed_total", response_flags="UF")
    assert lb["destination_service_name"] == "PassthroughCluster" and lb["source_workload"] == "sleep"
    assert "destination" not in series(node.tel, "istio_tcp_connections_closed_total")


async def test_http_across_nodes_over_mutual_tls_and_plaintext(two_nodes: TwoNodes) -> None:  # noqa: F811
    m = two_nodes
    tel = MeshTelemetry(None)
    m.proxy.telemetry = tel
    async with m.http() as c:
        assert (await c.get("/x")).status_code == 200
    assert m.tls_relay.connections >= 1
    _, dst = both_reporters(tel, "mutual_tls", source_workload="sleep")
    assert dst == {**caller_labels(SLEEP), **web_labels("web-b", WEB), **HTTP_200, "reporter": "destination",
                   "connection_security_policy": "mutual_tls"}
    # A caller that is no mesh pod crosses in plaintext (PERMISSIVE takes it): none, no principals.
    async with httpx.AsyncClient(timeout=10) as c:
        assert (await c.get(f"http://{m.svc_ip}/y")).status_code == 200
    _, dst = both_reporters(tel, "none", source_workload="unknown")
    assert dst == {**OUTSIDE, **web_labels("web-b", "unknown"), **HTTP_200, "reporter": "destination",
                   "connection_security_policy": "none"}
    # DISABLE on the workload: auto-mTLS sends the mesh caller in plaintext too.
    await configure_mode(m, peer_auth("web", {"selector": {"matchLabels": {"app": "web"}},
                                              "mtls": {"mode": "DISABLE"}}), "DISABLE")
    async with m.http() as c:
        assert (await c.get("/z")).status_code == 200
    assert m.plain_relay.connections >= 1  # (the pooled plaintext connection of the outside caller is reused)
    _, dst = both_reporters(tel, "none", source_workload="sleep", source_principal="unknown")
    assert dst["destination_principal"] == "unknown" and dst["destination_workload"] == "web-b"


def test_every_label_is_covered() -> None:
    """The dictionaries above name every label the mesh writes (a new label must be asserted here)."""
    named = {*caller_labels(""), *web_labels("", ""), *HTTP_200, "grpc_response_status", "connection_security_policy"}
    assert named == set(LABELS)
