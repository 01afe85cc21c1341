"""Cost of the mutual-TLS hop between nodes: one HTTP hop to a pod on this node vs on another node.

    .venv/bin/python bench/mesh_mtls.py [--requests 3000] [--connections 8]

Two mesh nodes share one Kubernetes API in this process (as two servers share one etcd); the caller is a
pod of node A. The same closed loop (keep-alive connections from the caller's pod IP, each sending its
next request when the answer came) runs against a Service whose pod is on node A (plaintext, the proxy
plays both sidecars) and one whose pod is on node B (mutual TLS to node B's inbound listener, policy
checked there). Reported: requests/s and p50/p90/p99 latency of each, and the time to issue a leaf (a
key pair, a signature and two TLS contexts). Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import cast

from pitwall.kube import KubeClient
from pitwall.kube.wiring import build_kube
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traffic import ServiceProxy
from pitwall.traffic.istio_crds import istio_crds
from pitwall.traffic.meshca import LeafCache, MeshCA
from pitwall.traffic.meshtls import MeshNode

CALLER = "127.42.253.10"
PODS = {"local": ("127.42.253.20", "node-a"), "remote": ("127.42.253.30", "node-b")}
_BODY = b"hello\n"
_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)


class _Backend(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = cast(asyncio.Transport, transport)
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            self.buf = self.buf[end + 4:]
            self.t.write(_ANSWER)


async def _pod(client: KubeClient, name: str, ip: str, node: str) -> None:
    pod = await client.create({"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
                               "spec": {"serviceAccountName": name, "nodeName": node,
                                        "containers": [{"name": "c", "image": "app"}]}})
    pod["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    await client.update_status(pod)


async def _service(client: KubeClient, name: str, ip: str) -> str:
    svc = await client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                               "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    await client.create({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                         "metadata": {"name": f"{name}-1", "namespace": "default",
                                      "labels": {"kubernetes.io/service-name": name}},
                         "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                         "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}]})
    return str(svc["spec"]["clusterIP"])


async def _loop(ip: str, n: int, lat: list[float]) -> None:
    r, w = await asyncio.open_connection(ip, 80, local_addr=(CALLER, 0))
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(n):
        t0 = time.perf_counter()
        w.write(req)
        await r.readuntil(b"\r\n\r\n")
        await r.readexactly(len(_BODY))
        lat.append(time.perf_counter() - t0)
    w.close()


async def _measure(ip: str, requests: int, conns: int) -> str:
    await asyncio.gather(*(_loop(ip, 20, []) for _ in range(conns)))  # warm: pools, leaves, handshakes
    lat: list[float] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(_loop(ip, requests // conns, lat) for _ in range(conns)))
    took = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100)
    return f"{len(lat) / took:7.0f} req/s  p50 {q[49] * 1e3:6.2f} ms  p90 {q[89] * 1e3:6.2f} ms  p99 {q[98] * 1e3:6.2f} ms"


async def main(requests: int, conns: int) -> None:
    leaves = LeafCache(MeshCA.generate())
    t0 = time.perf_counter()
    for i in range(50):
        leaves.for_workload("default", f"sa-{i}")
    print(f"leaf issue (key, signature, 2 TLS contexts): {(time.perf_counter() - t0) / 50 * 1e3:.2f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteRevStore(Path(tmp) / "state.db", compact_interval_s=None)
        await store.start()
        kube = build_kube(store)
        kube.add_builtin_crds(istio_crds())
        await kube.start()
        client = kube.client
        for n in ("node-a", "node-b"):
            await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}})
        node_a, node_b = MeshNode(client, "node-a"), MeshNode(client, "node-b")
        proxy = ServiceProxy(client, mesh_node=node_a)
        node_b.view = proxy
        for c in (node_a, node_b, proxy):
            await c.start()
        servers = [await asyncio.get_running_loop().create_server(_Backend, ip, 8080, reuse_address=True)
                   for ip, _ in PODS.values()]
        await _pod(client, "caller", CALLER, "node-a")
        ips = {}
        for name, (ip, node) in PODS.items():
            await _pod(client, name, ip, node)
            ips[name] = await _service(client, name, ip)
        while not (all(proxy.endpoints(ip, 80) for ip in ips.values()) and len(proxy.pods) == 3
                   and "node-b" in node_a.peers):
            await asyncio.sleep(0.05)
        for name, ip in ips.items():
            label = "same node, plaintext" if name == "local" else "other node, mutual TLS"
            print(f"{label:24s} {await _measure(ip, requests, conns)}")
        print(f"TLS hops opened: {node_a.stats.outbound_tls}, accepted: {node_b.stats.inbound_tls}")
        for s in servers:
            s.close()
        for c in (proxy, node_b, node_a):
            await c.stop()
        await kube.stop()
        await store.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--connections", type=int, default=8)
    a = ap.parse_args()
    asyncio.run(main(a.requests, a.connections))
