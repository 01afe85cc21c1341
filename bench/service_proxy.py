"""Service proxy overhead: requests/s and p99 through a ClusterIP vs straight to the backend.

    .venv/bin/python bench/service_proxy.py [--duration 10] [--connections 50] [--close]

Starts a small HTTP backend (uvloop, fixed 200 answer, keep-alive) in a
subprocess on a pod address (127.42.x.y:8080), the Kubernetes API over
SQLite and the ServiceProxy in this process on uvloop, creates a Service and
an EndpointSlice for the backend, then runs the load generator twice, against
the backend and against ``clusterIP:80``, and prints both and the ratio.
The load generator is ``wrk`` (Debian's) when installed, else a Python client.
``--close`` sends ``Connection: close``: one TCP connection per request, so
each request pays the proxy's accept + upstream connect. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import uvloop

from pitwall.kube.wiring import build_kube
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traffic import ServiceProxy

BACKEND_IP, BACKEND_PORT = "127.42.254.10", 8080
_BODY = b"hello from the backend\n"
_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(_BODY)


class _Http(asyncio.Protocol):
    """Answers each request (headers only, no body) with a fixed 200; honours Connection: close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            close = b"connection: close" in head.lower()
            self.t.write(_ANSWER + (b"Connection: close\r\n\r\n" if close else b"\r\n") + _BODY)
            if close:
                self.t.close()
                return


def serve_backend(ip: str, port: int) -> None:
    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(_Http, ip, port, reuse_address=True, backlog=1024)
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(run())


def _ms(v: str, unit: str) -> float:
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def run_wrk(url: str, duration: int, connections: int, close: bool) -> tuple[float, float, int]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    p = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = (await p.communicate())[0].decode()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = (sum(int(x) for x in errors.groups()) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0)
    return rps, _ms(p99.group(1), p99.group(2)) if p99 else float("nan"), errs


async def run_python(ip: str, port: int, duration: int, connections: int, close: bool) -> tuple[float, float, int]:
    """A fallback load generator: ``connections`` concurrent clients, one request at a time each."""
    lat: list[float] = []
    errors = 0
    stop_at = time.monotonic() + duration
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n"

    async def client() -> None:
        nonlocal errors
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection(ip, port)
                r, w = conn
                w.write(req)
                await r.readuntil(b"\r\n\r\n")
                await r.readexactly(len(_BODY))
                if close:
                    w.close()
                    conn = None
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                conn = None
                continue
            lat.append(time.perf_counter() - t0)
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*[client() for _ in range(connections)])
    lat.sort()
    return len(lat) / duration, lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else float("nan"), errors


async def main(duration: int, connections: int, close: bool) -> None:
    backend = await asyncio.create_subprocess_exec(sys.executable, __file__, "--backend", stdout=subprocess.PIPE)
    assert backend.stdout is not None
    await asyncio.wait_for(backend.stdout.readline(), 10)
    data = Path(tempfile.mkdtemp())
    store = SqliteRevStore(data / "state.db", compact_interval_s=None)
    await store.start()
    kube = build_kube(store)
    await kube.start()
    proxy = ServiceProxy(kube.client)
    await proxy.start()
    try:
        svc = await kube.client.create({"apiVersion": "v1", "kind": "Service",
                                        "metadata": {"name": "bench", "namespace": "default"},
                                        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": BACKEND_PORT}]}})
        await kube.client.create({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "bench-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "bench"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": BACKEND_PORT}],
            "endpoints": [{"addresses": [BACKEND_IP], "conditions": {"ready": True}}]})
        cip = svc["spec"]["clusterIP"]
        for _ in range(500):
            if proxy.endpoints(cip, 80):
                break
            await asyncio.sleep(0.01)
        tool = "wrk" if shutil.which("wrk") else "python"
        results = {}
        for name, ip, port in (("direct", BACKEND_IP, BACKEND_PORT), ("via ClusterIP", cip, 80)):
            if tool == "wrk":
                results[name] = await run_wrk(f"http://{ip}:{port}/", duration, connections, close)
            else:
                results[name] = await run_python(ip, port, duration, connections, close)
        mode = "new connection per request" if close else "keep-alive"
        print(f"service proxy, {tool}, {connections} connections, {duration}s each, {mode}")
        for name, (rps, p99, errs) in results.items():
            print(f"  {name:<14} {rps:10.0f} req/s   p99 {p99:7.2f} ms   errors {errs}")
        (d_rps, d_p99, _), (p_rps, p_p99, _) = results["direct"], results["via ClusterIP"]
        print(f"  ratio          {p_rps / d_rps:10.2f}x req/s   added p99 {p_p99 - d_p99:+.2f} ms")
        stats = proxy.stats[("default", "bench")]
        print(f"  proxy counted  {stats.connections_total} connections, {stats.bytes_sent} B sent, "
              f"{stats.bytes_received} B received")
    finally:
        await proxy.stop()
        await kube.stop()
        await store.stop()
        backend.terminate()
        await backend.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--close", action="store_true", help="one connection per request")
    ap.add_argument("--backend", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.backend:
        serve_backend(BACKEND_IP, BACKEND_PORT)
    else:
        uvloop.run(main(a.duration, a.connections, a.close))
