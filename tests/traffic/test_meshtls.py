"""Mutual TLS between two pitwall nodes, PeerAuthentication, identity from certificates, leaf rotation.

Two ``MeshNode``s (``node-a``, ``node-b``) share one Kubernetes API (as two servers share one etcd):
node A's service proxy takes the calls of pods on node A, node B's inbound listener serves its pod.
Node B's advertised address is replaced by a recording relay in front of its listeners, so the test
sees the bytes that travel between the nodes. Node B reads the same pods and policies as A (it gets
the proxy's view: in one process both would follow the same API anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from pitwall.kube import KubeAPI, KubeClient
from pitwall.kube.wiring import build_kube
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traffic import ServiceProxy
from pitwall.traffic.istio_crds import istio_crds
from pitwall.traffic.meshca import peer_spiffe_id
from pitwall.traffic.meshtls import INBOUND_ANNOTATION, InboundAddr, MeshNode
from pitwall.traffic.peerauth import compile_peer_auth
from pitwall.traffic.pods import PodInfo
from tests.traffic.conftest import Backend, cluster_ip, endpoint, eventually, make_service, pod_ips, put_slice
from tests.traffic.mesh_helpers import App, apply, authz

pytestmark = pytest.mark.timeout(60)

TTL_S = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Relay:
    """A TCP relay that records what the caller sends (the bytes on the wire between the nodes)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = bytearray()
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> Relay:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self._tasks):
            t.cancel()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.transport.abort()
            return

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bool) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if record:
                        self.sent += data
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort() if src.exception() else dst.close()

        tasks = [asyncio.create_task(copy(r, uw, True)), asyncio.create_task(copy(ur, w, False))]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)


@dataclass
class Mesh:
    kube: KubeAPI
    client: KubeClient
    proxy: ServiceProxy
    node_a: MeshNode
    node_b: MeshNode
    clock: Clock
    tls_relay: Relay
    plain_relay: Relay
    app: App
    svc_ip: str
    caller_ip: str
    other_ip: str
    web_ip: str

    def http(self, source: str | None = None) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=source or self.caller_ip)
        return httpx.AsyncClient(base_url=f"http://{self.svc_ip}", transport=transport, timeout=10)


async def add_pod(client: KubeClient, name: str, ip: str, node: str, sa: str, labels: dict[str, str]) -> None:
    pod = await client.create({"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": name, "namespace": "default", "labels": labels},
                               "spec": {"serviceAccountName": sa, "nodeName": node,
                                        "containers": [{"name": "c", "image": "app"}]}})
    pod["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    await client.update_status(pod)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    kube = build_kube(store)
    kube.add_builtin_crds(istio_crds())
    await kube.start()
    client = kube.client
    for n in ("node-a", "node-b"):
        await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}})
    clock = Clock()
    node_a = MeshNode(client, "node-a", leaf_ttl_s=TTL_S, clock=clock)
    node_b = MeshNode(client, "node-b", leaf_ttl_s=TTL_S, clock=clock)
    proxy = ServiceProxy(client, drain_timeout_s=0.5, connect_budget_s=2.0, mesh_node=node_a)
    node_b.view = proxy
    await node_a.start()
    await node_b.start()
    await proxy.start()
    await proxy.wait_synced(10)
    assert node_a.address is not None and node_b.address is not None
    b_addr = node_b.address

    async def advertised(node: str) -> str:
        return str((await client.get("v1", "Node", node))["metadata"].get("annotations", {}).get(
            INBOUND_ANNOTATION, ""))

    await eventually(lambda: advertised("node-b"), tries=400)
    assert await advertised("node-b") == str(b_addr)
    tls_relay = await Relay(b_addr.tls_port).start()
    plain_relay = await Relay(b_addr.plain_port).start()
    relayed = InboundAddr("127.0.0.1", tls_relay.port, plain_relay.port)
    await client.patch("v1", "Node", "node-b", {"metadata": {"annotations": {INBOUND_ANNOTATION: str(relayed)}}})
    await eventually(lambda: node_a.peers.get("node-b") == relayed)

    caller_ip, other_ip, web_ip = pod_ips(3)
    await add_pod(client, "sleep", caller_ip, "node-a", "sleep", {"app": "sleep"})
    await add_pod(client, "other", other_ip, "node-a", "other", {"app": "other"})
    await add_pod(client, "web-b", web_ip, "node-b", "web", {"app": "web"})
    app = await App(web_ip, 8080, "web-b").start()
    svc = await make_service(client, "web")
    await put_slice(client, "web", [endpoint(web_ip)])
    ip = cluster_ip(svc)
    await eventually(lambda: len(proxy.endpoints(ip, 80)) == 1 and all(
        a in proxy.pods for a in (caller_ip, other_ip, web_ip)))
    m = Mesh(kube, client, proxy, node_a, node_b, clock, tls_relay, plain_relay, app, ip, caller_ip, other_ip,
             web_ip)
    try:
        yield m
    finally:
        await proxy.stop()
        await node_b.stop()
        await node_a.stop()
        await tls_relay.stop()
        await plain_relay.stop()
        await app.stop()
        await kube.stop()
        await store.stop()


def peer_auth(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


async def configure_mode(m: Mesh, obj: dict[str, Any], want: str) -> None:
    await apply(m.client, obj)
    web = m.proxy.pods[m.web_ip]
    await eventually(lambda: m.proxy.mesh.peer_auth is not None and m.proxy.mesh.peer_auth.mode(web, 8080) == want)


async def raw_plaintext(addr: InboundAddr, ip: str) -> bytes:
    """A plaintext client on node B's inbound listener: the CONNECT line, one GET; what comes back."""
    r, w = await asyncio.open_connection(addr.host, addr.plain_port)
    try:
        w.write(f"CONNECT {ip}:8080 HTTP/1.1\r\nx-pitwall-protocol: http\r\n\r\n".encode()
                + b"GET /plain HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
        await w.drain()
        try:
            return await asyncio.wait_for(r.read(), 10)
        except ConnectionResetError:
            return b"<reset>"
    finally:
        w.transport.abort()


async def test_cross_node_hop_is_mutual_tls(mesh: Mesh) -> None:
    async with mesh.http() as c:
        for _ in range(3):
            r = await c.get("/hello", headers={"x-secret": "plain-marker"})
            assert r.status_code == 200, r.text
            assert r.json()["name"] == "web-b" and r.json()["path"] == "/hello"
    wire = bytes(mesh.tls_relay.sent)
    assert mesh.tls_relay.connections >= 1 and mesh.plain_relay.connections == 0
    assert wire[0] == 0x16 and wire[1] == 0x03  # a TLS handshake record opens the connection
    for plain in (b"GET /hello", b"plain-marker", b"CONNECT", b"HTTP/1.1"):
        assert plain not in wire
    assert mesh.node_b.stats.inbound_tls >= 1 and mesh.node_a.stats.outbound_tls >= 1
    # Both nodes issue under the one root kept in the cluster.
    assert mesh.node_a.ca is not None and mesh.node_b.ca is not None
    assert mesh.node_a.ca.cert == mesh.node_b.ca.cert


async def test_server_authorizes_by_certificate_principal(mesh: Mesh) -> None:
    await apply(mesh.client, authz("web-allow", {
        "selector": {"matchLabels": {"app": "web"}}, "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}]}))
    await eventually(lambda: mesh.proxy.mesh.authz is not None and len(mesh.proxy.mesh.authz.policies) == 1)
    async with mesh.http() as c:
        assert (await c.get("/")).status_code == 200
    async with mesh.http(mesh.other_ip) as c:
        r = await c.get("/")
        assert r.status_code == 403 and r.text == "RBAC: access denied"
    # Node B decided (node A passes remote endpoints on), from connections that all come from the relay's
    # address: the principal came from the certificate.
    assert mesh.node_b.stats.denied == 1
    await apply(mesh.client, authz("deny-sleep", {
        "action": "DENY", "rules": [{"from": [{"source": {"principals": ["*/sa/sleep"]}}]}]}))
    await eventually(lambda: mesh.proxy.mesh.authz is not None and len(mesh.proxy.mesh.authz.policies) == 2)
    async with mesh.http() as c:
        assert (await c.get("/")).status_code == 403
    assert mesh.node_b.stats.denied == 2
    assert [q["path"] for q in mesh.app.requests] == ["/"]


async def test_strict_resets_plaintext_permissive_takes_both(mesh: Mesh) -> None:
    direct = mesh.node_b.address
    assert direct is not None
    # PERMISSIVE (no policy): a plaintext client gets through, a mesh caller uses mutual TLS.
    assert b"web-b" in await raw_plaintext(direct, mesh.web_ip)
    await configure_mode(mesh, peer_auth("default", {"mtls": {"mode": "STRICT"}}, "istio-system"), "STRICT")
    got = await raw_plaintext(direct, mesh.web_ip)
    assert got in (b"", b"<reset>")  # reset before any answer, as Envoy does
    assert mesh.node_b.stats.rejected_plaintext == 1
    async with mesh.http() as c:
        assert (await c.get("/")).status_code == 200  # the mesh caller presents its certificate
    # A caller that is no mesh pod has no certificate: its plaintext hop is reset, the client sees Envoy's 503.
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"http://{mesh.svc_ip}/")
        assert r.status_code == 503 and "reset" in r.text
    assert mesh.node_b.stats.rejected_plaintext == 2
    # A plaintext client on the TLS port fails the handshake.
    r2, w2 = await asyncio.open_connection(direct.host, direct.tls_port)
    w2.write(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
    with contextlib.suppress(ConnectionResetError):
        assert b"web-b" not in await asyncio.wait_for(r2.read(), 10)
    w2.transport.abort()
    # A namespace policy PERMISSIVE overrides the mesh's STRICT; a workload port DISABLE overrides both.
    await configure_mode(mesh, peer_auth("ns", {"mtls": {"mode": "PERMISSIVE"}}), "PERMISSIVE")
    assert b"web-b" in await raw_plaintext(direct, mesh.web_ip)
    await configure_mode(mesh, peer_auth("web", {"selector": {"matchLabels": {"app": "web"}},
                                                 "portLevelMtls": {"8080": {"mode": "DISABLE"}}}), "DISABLE")
    before = mesh.plain_relay.connections
    async with mesh.http() as c:
        assert (await c.get("/")).status_code == 200  # auto-mTLS: the client side goes plaintext to DISABLE
    assert mesh.plain_relay.connections == before + 1


async def echo_once(svc_ip: str, source: str, payload: bytes) -> bytes:
    """One connection to the echo Service from ``source``: the echo of ``payload`` (b"" when refused)."""
    r, w = await asyncio.open_connection(svc_ip, 7000, local_addr=(source, 0))
    try:
        w.write(payload)
        await w.drain()
        try:
            return await asyncio.wait_for(r.readexactly(len(payload)), 10)
        except (ConnectionResetError, asyncio.IncompleteReadError):
            return b""
    finally:
        w.transport.abort()


async def test_tcp_port_crosses_nodes_over_mutual_tls(mesh: Mesh) -> None:
    (echo_ip,) = pod_ips(1)
    await add_pod(mesh.client, "echo-b", echo_ip, "node-b", "echo", {"app": "echo"})
    backend = await Backend(echo_ip, 7000, echo=True).start()
    try:
        svc = await make_service(mesh.client, "echo", [{"name": "tcp", "port": 7000, "targetPort": 7000}])
        await put_slice(mesh.client, "echo", [endpoint(echo_ip)], ports=[{"name": "tcp", "port": 7000}])
        await eventually(lambda: len(mesh.proxy.endpoints(cluster_ip(svc), 7000)) == 1 and echo_ip in mesh.proxy.pods)
        before = len(mesh.tls_relay.sent)
        assert await echo_once(cluster_ip(svc), mesh.caller_ip, b"tcp-plain-marker") == b"tcp-plain-marker"
        wire = bytes(mesh.tls_relay.sent[before:])
        assert wire[:1] == b"\x16" and b"tcp-plain-marker" not in wire
        # L4 authorisation on node B, by the certificate's principal.
        await apply(mesh.client, authz("echo-allow", {
            "selector": {"matchLabels": {"app": "echo"}}, "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}]}))
        await eventually(lambda: mesh.proxy.mesh.authz is not None and len(mesh.proxy.mesh.authz.policies) == 1)
        assert await echo_once(cluster_ip(svc), mesh.other_ip, b"nope") == b""
        assert mesh.node_b.stats.denied == 1
        assert await echo_once(cluster_ip(svc), mesh.caller_ip, b"again") == b"again"
    finally:
        await backend.stop()


async def test_destination_rule_tls_mode_steers_the_client_side(mesh: Mesh) -> None:
    from tests.traffic.mesh_helpers import dr
    await apply(mesh.client, dr("web", {"trafficPolicy": {"tls": {"mode": "DISABLE"}}}))
    fqdn = "web.default.svc.cluster.local"
    await eventually(lambda: (rule := mesh.proxy.mesh.dest_rule(fqdn)) is not None and rule.tls_mode == "DISABLE")
    async with mesh.http() as c:
        assert (await c.get("/")).status_code == 200
    assert mesh.plain_relay.connections == 1 and mesh.tls_relay.connections == 0
    # ISTIO_MUTUAL: TLS even to a workload whose own mode is DISABLE, which then resets it.
    await apply(mesh.client, dr("web", {"trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}))
    await configure_mode(mesh, peer_auth("off", {"mtls": {"mode": "DISABLE"}}), "DISABLE")
    await eventually(lambda: (rule := mesh.proxy.mesh.dest_rule(fqdn)) is not None
                     and rule.tls_mode == "ISTIO_MUTUAL")
    async with mesh.http() as c:
        assert (await c.get("/")).status_code == 503
    assert mesh.tls_relay.connections >= 1 and mesh.node_b.stats.rejected_tls >= 1


async def test_strict_on_one_node_resets_a_non_mesh_tcp_caller(mesh: Mesh) -> None:
    (echo_ip,) = pod_ips(1)
    await add_pod(mesh.client, "echo-a", echo_ip, "node-a", "echo", {"app": "echo"})
    backend = await Backend(echo_ip, 7000, echo=True).start()
    try:
        svc = await make_service(mesh.client, "echo", [{"name": "tcp", "port": 7000, "targetPort": 7000}])
        await put_slice(mesh.client, "echo", [endpoint(echo_ip)], ports=[{"name": "tcp", "port": 7000}])
        await eventually(lambda: len(mesh.proxy.endpoints(cluster_ip(svc), 7000)) == 1 and echo_ip in mesh.proxy.pods)
        await apply(mesh.client, peer_auth("default", {"mtls": {"mode": "STRICT"}}, "istio-system"))
        await eventually(lambda: mesh.proxy.mesh.peer_auth is not None and mesh.proxy.mesh.peer_auth.strict_anywhere)
        assert await echo_once(cluster_ip(svc), "127.0.0.1", b"who") == b""  # no mesh identity: reset
        assert await echo_once(cluster_ip(svc), mesh.caller_ip, b"pod") == b"pod"  # a pod of this node
        assert mesh.tls_relay.connections == 0 and mesh.plain_relay.connections == 0  # it never left node A
    finally:
        await backend.stop()


async def test_leaf_rotates_at_half_its_life(mesh: Mesh) -> None:
    leaves = mesh.node_b.leaves
    assert leaves is not None
    real_now = time.time()
    mesh.clock.now = real_now - TTL_S * 0.7  # issued in the past, so the rotated leaf is valid now
    first = leaves.for_workload("default", "web")
    assert first.uri == "spiffe://cluster.local/ns/default/sa/web"
    assert first.expires_at - first.issued_at == TTL_S
    mesh.clock.now = real_now - TTL_S * 0.25  # 45 % of its life
    assert leaves.for_workload("default", "web") is first
    mesh.clock.now = real_now  # 70 %: past half (Istio's SECRET_GRACE_PERIOD_RATIO 0.5)
    second = leaves.for_workload("default", "web")
    assert second.serial != first.serial and second.issued_at == mesh.clock.now
    # A new handshake with node B presents the new leaf, and the caller's rotated leaf is accepted.
    direct = mesh.node_b.address
    assert direct is not None and mesh.node_a.leaves is not None
    ctx = mesh.node_a.leaves.for_workload("default", "sleep").client_ctx
    sni = f"{mesh.web_ip.replace('.', '-')}.default.pod"
    _, w = await asyncio.open_connection(direct.host, direct.tls_port, ssl=ctx, server_hostname=sni)
    try:
        sslobj = w.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True)
        assert x509.load_der_x509_certificate(der).serial_number == second.serial
        assert peer_spiffe_id(sslobj) == "spiffe://cluster.local/ns/default/sa/web"
    finally:
        w.transport.abort()
    async with mesh.http() as c:
        assert (await c.get("/after-rotation")).status_code == 200


async def test_untrusted_certificate_is_refused(mesh: Mesh, tmp_path: Path) -> None:
    """A client leaf from another CA does not get through node B's TLS listener."""
    from pitwall.traffic.meshca import LeafCache, MeshCA
    rogue = LeafCache(MeshCA.generate(), TTL_S).for_workload("default", "sleep")
    ctx = rogue.client_ctx
    ctx.verify_mode = ssl.CERT_NONE  # even trusting anything on its side, the server refuses it
    direct = mesh.node_b.address
    assert direct is not None
    sni = f"{mesh.web_ip.replace('.', '-')}.default.pod"
    with pytest.raises((ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError)):
        r, w = await asyncio.open_connection(direct.host, direct.tls_port, ssl=ctx, server_hostname=sni)
        w.write(f"CONNECT {mesh.web_ip}:8080 HTTP/1.1\r\nx-pitwall-protocol: http\r\n\r\n".encode()
                + b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
        await w.drain()
        await asyncio.wait_for(r.readexactly(1), 10)
    assert mesh.app.requests == []


def test_peer_authentication_inheritance() -> None:
    web = PodInfo("web-1", "prod", "web", labels={"app": "web"})
    other = PodInfo("db-1", "prod", "db", labels={"app": "db"})
    elsewhere = PodInfo("x", "dev", "x")

    def pa(ns: str, name: str, spec: dict[str, Any], ts: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
        return {"metadata": {"namespace": ns, "name": name, "creationTimestamp": ts}, "spec": spec}

    assert compile_peer_auth([]).mode(web, 8080) == "PERMISSIVE"
    cfg = compile_peer_auth([
        pa("istio-system", "mesh", {"mtls": {"mode": "STRICT"}}),
        pa("prod", "ns", {"mtls": {"mode": "UNSET"}}),
        pa("prod", "web", {"selector": {"matchLabels": {"app": "web"}}, "mtls": {"mode": "PERMISSIVE"},
                           "portLevelMtls": {"9000": {"mode": "DISABLE"}, "9001": {"mode": "UNSET"}}}),
        pa("prod", "web-late", {"selector": {"matchLabels": {"app": "web"}}, "mtls": {"mode": "DISABLE"}},
           "2026-02-01T00:00:00Z"),
        pa("dev", "bad", {"mtls": {"mode": "SOMETIMES"}}),
    ])
    assert cfg.mode(web, 8080) == "PERMISSIVE"  # the workload policy; the younger one loses
    assert cfg.mode(web, 9000) == "DISABLE"  # port level
    assert cfg.mode(web, 9001) == "PERMISSIVE"  # port UNSET inherits the policy's workload mode
    assert cfg.mode(other, 8080) == "STRICT"  # namespace UNSET inherits the mesh's
    assert cfg.mode(elsewhere, 80) == "STRICT"  # the bad namespace policy is skipped, with its error
    assert cfg.errors == {"dev/bad": "spec.mtls.mode: unknown mode 'SOMETIMES' (one of UNSET, DISABLE, "
                                     "PERMISSIVE, STRICT)"}
    # portLevelMtls without a selector is ignored, as Istio does.
    cfg2 = compile_peer_auth([pa("prod", "ns", {"mtls": {"mode": "STRICT"},
                                                "portLevelMtls": {"8080": {"mode": "DISABLE"}}})])
    assert cfg2.mode(web, 8080) == "STRICT" and cfg2.mode(elsewhere, 8080) == "PERMISSIVE"


async def test_an_unreadable_ca_turns_mtls_off_without_failing(tmp_path: Path) -> None:
    """A CA Secret this server cannot use (e.g. sealed under another server's key) leaves the node up,
    advertising nothing, so hops stay direct; it keeps trying in the background."""
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    kube = build_kube(store)
    await kube.start()
    try:
        await kube.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}})
        await kube.client.create({"apiVersion": "v1", "kind": "Secret", "metadata": {
            "name": "istio-ca-secret", "namespace": "istio-system"}, "data": {"ca-cert.pem": "bm90IGEgY2VydA=="}})
        node = MeshNode(kube.client, "node-x")
        await node.start()
        try:
            assert node.ca is None and node.address is None and node.healthy
            dest = PodInfo("p", "default", "p", node="node-y")
            assert not node.remote(dest)
        finally:
            await node.stop()
    finally:
        await kube.stop()
        await store.stop()
