"""Mesh hop overhead: p50/p90/p99 latency added by one proxied HTTP hop at a fixed request rate.

    .venv/bin/python bench/mesh_hop.py [--rps 1000] [--duration 10] [--connections 16]

Istio publishes its sidecar overhead as added latency at 1,000 requests/s
(+2.65 ms p90 for two sidecars, istio.io "Performance and Scalability"), so
this measures the same shape: an open-loop client (its own process, uvloop)
sends ``--rps`` requests/s spread over ``--connections`` keep-alive
connections, first straight to the backend, then through the Service's
cluster IP, where the mesh routes it (a VirtualService with a header match
and retries, a DestinationRule with a subset and outlier detection, the
Istio metrics counted). Latency is taken from each request's scheduled send
time, so a stall is not hidden by the client waiting (no coordinated
omission). The backend is a fixed-answer uvloop server in a third process.
Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import uvloop

from pitwall.kube.wiring import build_kube
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traffic import ServiceProxy
from pitwall.traffic.istio_crds import istio_crds
from pitwall.traffic.telemetry import MeshTelemetry

BACKEND_IP, BACKEND_PORT = "127.42.254.20", 8080
_BODY = b"hello from the backend\n"
_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
_REQUEST = b"GET /api/items HTTP/1.1\r\nHost: bench\r\nUser-Agent: mesh-hop\r\n\r\n"


class _Backend(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = cast(asyncio.Transport, transport)
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            self.buf = self.buf[end + 4:]
            self.t.write(_ANSWER)


def serve_backend() -> None:
    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(_Backend, BACKEND_IP, BACKEND_PORT,
                                                                reuse_address=True, backlog=1024)
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(run())


async def _read_answer(r: asyncio.StreamReader) -> None:
    head = await r.readuntil(b"\r\n\r\n")
    length = next(int(ln.split(b":", 1)[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
    await r.readexactly(length)


async def loadgen(ip: str, port: int, rps: int, duration: float, connections: int) -> dict[str, Any]:
    """Open loop: request i is due at start + i/rps on the next idle connection."""
    conns = [await asyncio.open_connection(ip, port) for _ in range(connections)]
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for c in conns:
        idle.put_nowait(c)
    lat: list[float] = []
    errors = 0
    total = int(rps * duration)
    start = time.perf_counter() + 0.1

    async def one(due: float) -> None:
        nonlocal errors
        r, w = await idle.get()
        try:
            w.write(_REQUEST)
            await _read_answer(r)
            lat.append(time.perf_counter() - due)
            idle.put_nowait((r, w))
        except (OSError, asyncio.IncompleteReadError, StopIteration):
            errors += 1

    tasks = []
    for i in range(total):
        due = start + i / rps
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    for _, w in conns:
        w.close()
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000.0

    return {"n": len(lat), "errors": errors, "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99),
            "achieved_rps": len(lat) / (time.perf_counter() - start)}


async def _run_loadgen(ip: str, port: int, a: argparse.Namespace) -> dict[str, Any]:
    p = await asyncio.create_subprocess_exec(sys.executable, __file__, "--loadgen", ip, str(port), "--rps",
                                             str(a.rps), "--duration", str(a.duration), "--connections",
                                             str(a.connections), stdout=subprocess.PIPE)
    out, _ = await p.communicate()
    result: dict[str, Any] = json.loads(out)
    return result


async def _configure(kube: Any) -> str:
    c = kube.client
    svc = await c.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench", "namespace": "default"},
                          "spec": {"ports": [{"name": "http", "port": 80, "targetPort": BACKEND_PORT}]}})
    pod = await c.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "bench-v1", "namespace": "default", "labels": {"app": "bench", "version": "v1"}},
        "spec": {"containers": [{"name": "c", "image": "bench"}]}})
    pod["status"] = {"phase": "Running", "podIP": BACKEND_IP}
    await c.update_status(pod)
    await c.create({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {
        "name": "bench-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "bench"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": BACKEND_PORT}],
        "endpoints": [{"addresses": [BACKEND_IP], "conditions": {"ready": True}}]})
    await c.create({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                    "metadata": {"name": "bench", "namespace": "default"},
                    "spec": {"host": "bench", "subsets": [{"name": "v1", "labels": {"version": "v1"}}],
                             "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 5}}}})
    await c.create({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                    "metadata": {"name": "bench", "namespace": "default"},
                    "spec": {"hosts": ["bench"], "http": [
                        {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
                         "route": [{"destination": {"host": "bench", "subset": "v1"}}]},
                        {"match": [{"uri": {"prefix": "/api"}}], "retries": {"attempts": 2, "retryOn": "5xx"},
                         "route": [{"destination": {"host": "bench", "subset": "v1"}}]}]}})
    return str(svc["spec"]["clusterIP"])


@contextlib.asynccontextmanager
async def mesh_world(telemetry: MeshTelemetry | None = None) -> AsyncIterator[tuple[ServiceProxy, str]]:
    """The backend (its own process), a KubeAPI over SQLite with Istio's CRDs and the bench Service routed to
    it, and a started ServiceProxy: (the proxy, the Service's cluster IP) once the proxy has its endpoints,
    routes and destination rule. Everything is stopped on exit."""
    backend = await asyncio.create_subprocess_exec(sys.executable, __file__, "--backend", stdout=subprocess.PIPE)
    assert backend.stdout is not None
    if await asyncio.wait_for(backend.stdout.readline(), 10) != b"ready\n":
        raise SystemExit(f"the backend did not start on {BACKEND_IP}:{BACKEND_PORT}")
    data = Path(tempfile.mkdtemp())
    store = SqliteRevStore(data / "state.db", compact_interval_s=None)
    await store.start()
    kube = build_kube(store)
    kube.add_builtin_crds(istio_crds())
    await kube.start()
    proxy = ServiceProxy(kube.client, telemetry=telemetry)
    await proxy.start()
    try:
        cip = await _configure(kube)
        fqdn = "bench.default.svc.cluster.local"
        for _ in range(500):
            if proxy.endpoints(cip, 80) and proxy.mesh.routes_for(fqdn) and proxy.mesh.dest_rule(fqdn):
                break
            await asyncio.sleep(0.01)
        yield proxy, cip
    finally:
        await proxy.stop()
        await kube.stop()
        await store.stop()
        with contextlib.suppress(ProcessLookupError):
            backend.terminate()
        await backend.wait()


async def main(a: argparse.Namespace) -> None:
    telemetry = MeshTelemetry(None)
    async with mesh_world(telemetry) as (_, cip):
        direct = await _run_loadgen(BACKEND_IP, BACKEND_PORT, a)
        hop = await _run_loadgen(cip, 80, a)
        counted = sum(acc.count for acc in telemetry.series().values())
        print(f"mesh hop, open loop at {a.rps} req/s for {a.duration:g}s over {a.connections} keep-alive connections")
        for name, r in (("direct", direct), ("via the mesh", hop)):
            print(f"  {name:<13} p50 {r['p50']:6.2f} ms  p90 {r['p90']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
                  f"({r['n']} ok, {r['errors']} errors, {r['achieved_rps']:.0f} req/s)")
        print(f"  added         p50 {hop['p50'] - direct['p50']:+6.2f} ms  p90 {hop['p90'] - direct['p90']:+6.2f} ms"
              f"  p99 {hop['p99'] - direct['p99']:+6.2f} ms")
        print(f"  istio_requests_total counted {counted} requests")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rps", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--backend", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--loadgen", nargs=2, metavar=("IP", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.backend:
        serve_backend()
    elif args.loadgen:
        print(json.dumps(uvloop.run(loadgen(args.loadgen[0], int(args.loadgen[1]), args.rps, args.duration,
                                            args.connections))))
    else:
        uvloop.run(main(args))
