"""The HTTP path's own cost per request: everything around a route's work (issues 16 and 24).

    PYTHONPATH=src .venv/bin/python bench/http_path.py [--n 3000] [--token] [--profile] [--socket]

In process (default): the real app (``server.create_app``, control plane on so
the Consul API is served, every middleware ``pitwall server`` installs)
driven straight through its ASGI interface with a minimal fake
``receive``/``send`` (no socket): µs per request (median of ``--n``, best of 5
rounds) for ``GET /-/healthy``, ``GET /api/v1/query?query=vector(1)``,
``PUT /v1/kv/x`` (256 B) and ``GET /v1/kv/x``. Then the same requests
entered below each layer of the app's ASGI stack in turn (the layer list is
read from the built stack, so it follows the wiring): a row's ``self`` is
the time with that layer minus the time without it, ``route`` is the
router and the route alone. ``--token`` configures a bearer token and sends
it (``BearerAuth`` installed, as a server with ``auth_tokens``).
``--profile`` prints a cProfile top list of the KV GET.

``--socket``: ``pitwall server`` in a subprocess and one keep-alive
``httpx`` connection: the latency p50 per endpoint and the server's CPU time
per request (its ``/proc`` user+system time over a round, divided by the
requests; its background work is in it too), best of 5 rounds of ``--n``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Server

from pitwall.config import load_settings
from pitwall.server import create_app

TOKEN = "http-path-bench-token-0123456789"
VALUE = b"v" * 256
Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
REQUESTS = [  # (name, method, path, query, body)
    ("GET /-/healthy", "GET", "/-/healthy", b"", b""),
    ("GET /api/v1/query vector(1)", "GET", "/api/v1/query", b"query=vector%281%29", b""),
    ("PUT /v1/kv/x 256 B", "PUT", "/v1/kv/x", b"", VALUE),
    ("GET /v1/kv/x", "GET", "/v1/kv/x", b"", b""),
]


def _scope(method: str, path: str, query: bytes, body: bytes, token: bool) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:9090"), (b"user-agent", b"bench/1"), (b"accept", b"*/*")]
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    if token:
        headers.append((b"authorization", b"Bearer " + TOKEN.encode()))
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 9090), "state": {}}


async def call(app: Asgi, scope: dict[str, Any], body: bytes) -> tuple[int, bytes]:
    """One request as uvicorn makes it: a fresh scope copy, one body message, the messages collected."""
    sent: list[dict[str, Any]] = []
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # as uvicorn: nothing more until the client leaves
        return {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    await app({**scope, "headers": list(scope["headers"]), "state": {}}, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def median_us(app: Asgi, scope: dict[str, Any], body: bytes, n: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(n // 5):  # warm up
        await call(app, scope, body)
    for _ in range(rounds):
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            await call(app, scope, body)
            ts.append(time.perf_counter() - t)
        best = min(best, statistics.median(ts))
    return best * 1e6


def layers(app: Any) -> list[tuple[str, Asgi]]:
    """The app's ASGI stack, outermost first, down to the router: (name, the callable entered there)."""
    out: list[tuple[str, Asgi]] = [("(whole app)", app)]
    edge = getattr(app, "edge", None)
    if edge is not None:  # pitwall's one layer in front of FastAPI: below it, FastAPI's own __call__
        out.append(("FastAPI (below core.edge)", edge.app))
    node = app.middleware_stack
    while node is not None and node is not app.router:
        out.append((type(node).__name__, node))
        node = getattr(node, "app", None)
    return out  # the router needs what the last one (FastAPI's exit stack) puts in the scope


async def in_process(n: int, token: bool, profile: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="pitwall-http-path-"))
    extra: dict[str, Any] = {}
    if token:
        extra["auth_tokens"] = [{"token": TOKEN, "name": "bench", "scopes": ["read", "write"]}]
    settings = load_settings(data_dir=work / "data", listen="127.0.0.1:9090", storage={"fsync": False},
                             otlp_grpc={"listen": "127.0.0.1:0"}, **extra)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            scopes = [(name, _scope(m, p, q, b, token), b) for name, m, p, q, b in REQUESTS]
            for name, scope, body in scopes:
                status, out = await call(app, scope, body)
                if status != 200:
                    raise RuntimeError(f"{name}: HTTP {status} {out[:200]!r}")
            stack = layers(app)
            print(f"in process, median µs of {n} requests, best of 5 rounds; token={token}")
            print(f"{'layer (entered below it)':28s}" + "".join(f"{name.split(' ')[0] + ' ' + name.split(' ')[1][:14]:>24s}"
                                                             for name, _, _ in scopes))
            totals = [[await median_us(layer, {**s, "app": app}, b, n) for _, s, b in scopes] for _, layer in stack]
            for i, (lname, _) in enumerate(stack):
                nxt = totals[i + 1] if i + 1 < len(totals) else [0.0] * len(scopes)
                cells = "".join(f"{t:12.1f} ({t - x:7.1f})" for t, x in zip(totals[i], nxt, strict=True))
                print(f"{lname:28s}{cells}")
            print("each cell: µs entering at that layer (that layer's own share)")
            if profile:
                _, scope, body = scopes[3]
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(n):
                    await call(app, scope, body)
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def through_socket(n: int) -> None:
    import httpx

    work = Path(tempfile.mkdtemp(prefix="pitwall-http-sock-"))
    srv = Server("pitwall", work)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            print(f"through a socket (pitwall server, one keep-alive connection), best of 5 rounds of {n}")
            print(f"{'request':30s}{'p50 ms':>10s}{'server CPU µs/req':>20s}")
            for name, method, path, query, body in REQUESTS:
                url = path + ("?" + query.decode() if query else "")
                for _ in range(50):  # warm up
                    c.request(method, url, content=body or None).raise_for_status()
                p50s, cpus = [], []
                for _ in range(5):  # the best of 5 rounds: the server's own timers and other processes add noise
                    lat = []
                    cpu0 = srv.cpu_seconds()
                    for _ in range(n):
                        t = time.perf_counter()
                        c.request(method, url, content=body or None).raise_for_status()
                        lat.append(time.perf_counter() - t)
                    cpus.append((srv.cpu_seconds() - cpu0) / n)
                    p50s.append(statistics.median(lat))
                print(f"{name:30s}{min(p50s) * 1e3:10.3f}{min(cpus) * 1e6:20.0f}")
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--token", action="store_true", help="configure a bearer token and send it")
    ap.add_argument("--profile", action="store_true", help="cProfile top list of the KV GET")
    ap.add_argument("--socket", action="store_true", help="through `pitwall server` and a socket instead")
    a = ap.parse_args()
    if a.socket:
        through_socket(a.n)
    else:
        asyncio.run(in_process(a.n, a.token, a.profile))


if __name__ == "__main__":
    main()
