"""Egress listener cost: per-request latency through a pod's egress listener (HTTP_PROXY) vs straight to the
Service's cluster IP.

    .venv/bin/python bench/mesh_egress.py [--requests 2000]

The mesh world of ``bench/mesh_hop.py`` (backend in its own process, a KubeAPI with the bench Service, a
VirtualService and a DestinationRule, the service proxy counting Istio's metrics) plus one pod's egress
listener. A client process sends ``--requests`` requests one after another, alternating the two ways in
blocks so drifting machine load hits both alike: Python's urllib (a new connection per request, as most
scripts do), then one keep-alive connection in proxy form vs origin form. Both ways run the same HTTP
path; the difference is the listener, the name resolution and the proxy-form rewrite. A third keep-alive
way asks for ``api.bench.test``, a ServiceEntry (STATIC, MESH_EXTERNAL) whose endpoint is the same backend.
Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from mesh_hop import BACKEND_IP, BACKEND_PORT, mesh_world

from pitwall.traffic.egress import EgressListeners
from pitwall.traffic.telemetry import MeshTelemetry

POD_IP = "127.42.254.30"
BLOCK = 100


def _keepalive(sock: socket.socket, request: bytes) -> None:
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(ln.split(b":", 1)[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)


def client(cip: str, proxy: str, n: int) -> dict[str, Any]:
    """Run in its own process: per-request milliseconds for each way."""
    direct_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    proxy_opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    ways: dict[str, list[float]] = {k: [] for k in ("urllib direct", "urllib egress", "keep-alive direct",
                                                   "keep-alive egress", "keep-alive entry")}
    phost, pport = proxy.removeprefix("http://").split(":")
    direct_sock = socket.create_connection((cip, 80))
    proxy_sock = socket.create_connection((phost, int(pport)))
    entry_sock = socket.create_connection((phost, int(pport)))
    to_entry = b"GET http://api.bench.test/api/items HTTP/1.1\r\nHost: api.bench.test\r\n\r\n"
    plain = b"GET /api/items HTTP/1.1\r\nHost: bench\r\n\r\n"
    proxied = b"GET http://bench/api/items HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(max(1, n // BLOCK)):
        for name, call in (("urllib direct", lambda: direct_opener.open(f"http://{cip}/api/items").read()),
                           ("urllib egress", lambda: proxy_opener.open(f"http://{cip}/api/items").read()),
                           ("keep-alive direct", lambda: _keepalive(direct_sock, plain)),
                           ("keep-alive egress", lambda: _keepalive(proxy_sock, proxied)),
                           ("keep-alive entry", lambda: _keepalive(entry_sock, to_entry))):
            for _ in range(BLOCK):
                t0 = time.perf_counter()
                call()
                ways[name].append((time.perf_counter() - t0) * 1000.0)
    out: dict[str, Any] = {}
    for name, lat in ways.items():
        lat.sort()
        out[name] = {"n": len(lat), "p50": lat[len(lat) // 2], "p90": lat[int(len(lat) * 0.9)],
                     "mean": statistics.fmean(lat)}
    return out


async def main(a: argparse.Namespace) -> None:
    telemetry = MeshTelemetry(None)
    async with mesh_world(telemetry) as (proxy, cip):
        egress = EgressListeners(proxy)
        pod = {"metadata": {"name": "bench-client", "namespace": "default", "labels": {"app": "bench-client"}},
               "spec": {"serviceAccountName": "bench-client"}}
        url = await egress.open(pod, POD_IP)
        assert url is not None, "the egress port is taken"
        await proxy.client.create({
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": "api", "namespace": "default"},
            "spec": {"hosts": ["api.bench.test"], "resolution": "STATIC", "location": "MESH_EXTERNAL",
                     "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                     "endpoints": [{"address": BACKEND_IP, "ports": {"http": BACKEND_PORT}}]}})
        for _ in range(500):
            if proxy.mesh.entries.lookup("api.bench.test"):
                break
            await asyncio.sleep(0.01)
        try:
            p = await asyncio.create_subprocess_exec(sys.executable, __file__, "--client", cip, url, str(a.requests),
                                                     stdout=subprocess.PIPE)
            out, _ = await p.communicate()
        finally:
            await egress.stop()
        r = json.loads(out)
        print(f"egress listener vs cluster IP, {a.requests} sequential requests per way (blocks of {BLOCK})")
        for name, s in r.items():
            print(f"  {name:<18} p50 {s['p50']:6.2f} ms  p90 {s['p90']:6.2f} ms  mean {s['mean']:6.2f} ms")
        for kind, way in (("urllib", "egress"), ("keep-alive", "egress"), ("keep-alive", "entry")):
            d, e = r[f"{kind} direct"], r[f"{kind} {way}"]
            print(f"  added ({kind:<10} {way:<6}) p50 {e['p50'] - d['p50']:+6.2f} ms  "
                  f"p90 {e['p90'] - d['p90']:+6.2f} ms  mean {e['mean'] - d['mean']:+6.2f} ms")
        by_source = {k[0] for k in telemetry.series()}
        print(f"  source_workload values counted: {sorted(by_source)}; egress stats {egress.stats}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--client", nargs=3, metavar=("CLUSTER_IP", "PROXY", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        print(json.dumps(client(args.client[0], args.client[1], int(args.client[2]))))
    else:
        uvloop.run(main(args))
