"""The gateway's Python cost per request, in process: the real client protocol, router, plugins, pools and
upstream parser, with both sockets faked (no system calls), so only the interpreter's work is measured.

    .venv/bin/python bench/gateway_inprocess.py [--requests 200000] [--connections 50] [--profile]

The same declarative file as ``bench/gateway_wrk.py`` (``/auth`` with key-auth + rate-limiting,
``/bare`` with none). Each of ``--connections`` fake clients sends wrk's request again as soon as
its previous answer is written; each fake upstream answers nginx's response on the next loop
iteration, as a socket would. Prints CPU microseconds per request (process time, median of
``--rounds``) per route; ``--profile`` prints cProfile's top functions for the plugin route. On
uvloop, as ``pitwall server`` runs. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_wrk import kong_file

from pitwall.traffic.gateway import upstream
from pitwall.traffic.gateway.declarative import load_declarative
from pitwall.traffic.gateway.proxy import GatewayServer, _ClientConn
from pitwall.traffic.gateway.runtime import compile_state

UP_PORT = 18080
UPSTREAM_REPLY = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 09:00:00 GMT\r\n"
                  b"Content-Type: application/octet-stream\r\nContent-Length: 24\r\nConnection: keep-alive\r\n\r\n"
                  b"hello from the upstream\n")


def wrk_request(path: str, headers: dict[str, str]) -> bytes:
    """What wrk sends: request line, Host, then the ``-H`` headers."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n{extra}\r\n".encode()


class _UpstreamTransport:
    """Answers each request written with nginx's response, on the next loop iteration."""

    def __init__(self, loop: asyncio.AbstractEventLoop, conn: Any) -> None:
        self.loop, self.conn = loop, conn

    def write(self, data: bytes) -> None:
        self.loop.call_soon(self.conn.data_received, UPSTREAM_REPLY)

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass

    abort = close


class _ClientTransport:
    """A client that sends its request again once the answer is written, until ``left`` runs out."""

    def __init__(self, run: _Run, conn: _ClientConn) -> None:
        self.run, self.conn = run, conn

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def write(self, data: bytes) -> None:
        run = self.run
        if not data.startswith(b"HTTP/1.1 200 "):
            run.bad += 1
        run.left -= 1
        if run.left > 0:
            run.loop.call_soon(self.conn.data_received, run.request)
        elif not run.done.done():
            run.done.set_result(None)

    def pause_reading(self) -> None:
        pass

    resume_reading = pause_reading

    def close(self) -> None:
        pass


class _Run:
    def __init__(self, loop: asyncio.AbstractEventLoop, request: bytes, n: int) -> None:
        self.loop, self.request, self.left, self.bad = loop, request, n, 0
        self.done: asyncio.Future[None] = loop.create_future()


async def _fake_connect(self: upstream.Pools, host: str, port: int, timeout_s: float) -> upstream._Conn:
    loop = asyncio.get_running_loop()
    if self.deadlines is None:
        self.deadlines = upstream.Deadlines(loop)
    conn = upstream._Conn(self.deadlines, (host, port))
    conn.connection_made(_UpstreamTransport(loop, conn))  # type: ignore[arg-type]
    return conn


async def measure(gw: GatewayServer, request: bytes, n: int, connections: int) -> float:
    """CPU microseconds per request over ``n`` requests on ``connections`` fake clients."""
    loop = asyncio.get_running_loop()
    run = _Run(loop, request, n + connections)  # the first ``connections`` answers only warm up
    conns = []
    for _ in range(connections):
        c = _ClientConn(gw)
        c.connection_made(_ClientTransport(run, c))  # type: ignore[arg-type]
        conns.append(c)
    for c in conns:
        c.data_received(request)
    while run.left > n:
        await asyncio.sleep(0)
    t0 = time.process_time()
    await run.done
    cpu = time.process_time() - t0
    for c in conns:
        c.connection_lost(None)
    await asyncio.sleep(0)
    if run.bad:
        raise SystemExit(f"{run.bad} answers were not 200")
    return cpu / n * 1e6


async def main_async(a: argparse.Namespace) -> None:
    upstream.Pools._connect = _fake_connect  # type: ignore[method-assign]
    gw = GatewayServer(compile_state(load_declarative(kong_file(UP_PORT))))
    gw.port = 8000
    gc.collect()
    gc.freeze()  # as ``pitwall server`` does after its start
    routes = {"key-auth + rate-limiting": wrk_request("/auth/", {"apikey": "bench-key"}),
              "no plugins": wrk_request("/bare/", {})}
    if a.profile:
        prof = cProfile.Profile()
        prof.enable()
        await measure(gw, routes["key-auth + rate-limiting"], a.requests, a.connections)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return
    results: dict[str, list[float]] = {name: [] for name in routes}
    for _ in range(a.rounds):
        for name, req in routes.items():
            results[name].append(await measure(gw, req, a.requests, a.connections))
    print(f"in process, faked sockets, {a.requests} requests x {a.rounds} rounds, {a.connections} connections")
    for name, rs in results.items():
        rs.sort()
        print(f"{name:28} {rs[len(rs) // 2]:6.1f} us/request (min {rs[0]:.1f}, max {rs[-1]:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    uvloop.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
