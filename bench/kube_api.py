"""Kubernetes API latency at 1,000 pods (pitwall over SQLite), beside the upstream SLOs.

    .venv/bin/python bench/kube_api.py [--pods 1000] [--rounds 200] [--lists 50] [--watchers 100] [--no-watch-cache] [--server-process]

Starts the API in-process over the SQLite RevStore behind uvicorn (HTTP, no
TLS), creates N pods, then measures over real HTTP with httpx: get one pod,
patch one pod (merge patch of a label), list all pods in the namespace, and a
watch fan-out (W watchers; p99 from a patch being acknowledged to the event
reaching every watcher). Lists: L full lists, L with a label selector matching
a tenth of the pods, and L first pages of 500 (kubectl's chunk size), each
after a patch so every list must see a new revision; "in-process" times the
list handler's own work (``Resources.list_encoded``), without HTTP and this
client, which share the process and its one core; ``--server-process``
runs the server in a process of its own instead (then without that line). ``--no-watch-cache``
measures the store path (``kube.watch_cache: false``) in the same run
conditions. Upstream's API SLOs (sig-scalability): p99 <= 1 s
for mutating and single-object calls, <= 30 s for namespace-scoped lists.
Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from multiprocessing.process import BaseProcess
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from pitwall.kube import KubeAPI
from pitwall.kube.wiring import build_kube
from pitwall.storage.revstore.sqlite import SqliteRevStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def _line(name: str, xs: list[float], slo_s: float) -> str:
    p50, p99 = _pct(xs, 0.5) * 1000, _pct(xs, 0.99) * 1000
    return f"{name:<22} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms   upstream SLO p99 <= {slo_s * 1000:.0f} ms" \
           f"   ({slo_s * 1000 / max(p99, 1e-9):.0f}x under)"


def _app(data: Path, watch_cache: bool) -> tuple[FastAPI, KubeAPI]:
    store = SqliteRevStore(data / "state.db", compact_interval_s=None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.start()
        await kube.start()
        yield
        await kube.stop()
        await store.stop()

    kube = build_kube(store, watch_cache=watch_cache)
    app = FastAPI(lifespan=lifespan)
    kube.install(app)
    return app, kube


def _serve(data: str, port: int, watch_cache: bool) -> None:
    """The server alone in a child process (``--server-process``), as kubectl meets it."""
    app, _ = _app(Path(data), watch_cache)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


async def main(pods: int, rounds: int, watchers: int, nlists: int, watch_cache: bool, server_process: bool) -> None:
    data = Path(tempfile.mkdtemp())
    port = free_port()
    child: BaseProcess | None = None
    kube: KubeAPI | None = None
    if server_process:
        child = multiprocessing.get_context("spawn").Process(target=_serve, args=(str(data), port, watch_cache))
        child.start()
    else:
        app, kube = _app(data, watch_cache)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get("/readyz")).status_code == 200:
                    break
            await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(16)

        async def create(i: int) -> None:
            async with sem:
                r = await c.post("/api/v1/namespaces/default/pods", json={
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pod-{i}", "labels": {"app": "bench", "shard": str(i % 10)}},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 8080}]}]}})
                r.raise_for_status()

        await asyncio.gather(*(create(i) for i in range(pods)))
        print(f"created {pods} pods in {time.perf_counter() - t0:.2f} s")
        gets, patches, lists = [], [], []
        for i in range(rounds):
            t = time.perf_counter()
            (await c.get(f"/api/v1/namespaces/default/pods/pod-{i % pods}")).raise_for_status()
            gets.append(time.perf_counter() - t)
            t = time.perf_counter()
            (await c.patch(f"/api/v1/namespaces/default/pods/pod-{i % pods}",
                           json={"metadata": {"labels": {"round": str(i)}}},
                           headers={"Content-Type": "application/merge-patch+json"})).raise_for_status()
            patches.append(time.perf_counter() - t)
        sel: list[float] = []
        pages: list[float] = []
        inproc: list[float] = []  # the handler's own work (Resources.list_encoded), without HTTP or this client
        rt = kube.registry.get("", "v1", "pods") if kube is not None else None
        for i in range(nlists):
            for out, query in ((lists, ""), (sel, "?labelSelector=shard%3D3"), (pages, "?limit=500")):
                (await c.patch(f"/api/v1/namespaces/default/pods/pod-{i % pods}",
                               json={"metadata": {"labels": {"list": str(i)}}},
                               headers={"Content-Type": "application/merge-patch+json"})).raise_for_status()
                t = time.perf_counter()
                (await c.get(f"/api/v1/namespaces/default/pods{query}")).raise_for_status()
                out.append(time.perf_counter() - t)
            if kube is not None and rt is not None:
                t = time.perf_counter()
                await kube.resources.list_encoded(rt, "default")
                inproc.append(time.perf_counter() - t)
        print(_line("get pod", gets, 1.0))
        print(_line("patch pod", patches, 1.0))
        print(_line(f"list {pods} pods", lists, 30.0))
        print(_line(f"list, selector {pods // 10}", sel, 30.0))
        print(_line("list, page of 500", pages, 30.0))
        if inproc:
            print(_line("list, in-process", inproc, 30.0))
        if kube is not None and kube.watch_cache is not None:
            print("watch cache:", kube.watch_cache.stats())

        rv = (await c.get("/api/v1/namespaces/default/pods?limit=1")).json()["metadata"]["resourceVersion"]
        seen: list[asyncio.Queue[float]] = [asyncio.Queue() for _ in range(watchers)]

        async def watch(q: asyncio.Queue[float]) -> None:
            async with httpx.AsyncClient(base_url=base, timeout=None) as wc, wc.stream(
                    "GET", f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}") as r:
                async for _ in r.aiter_lines():
                    q.put_nowait(time.perf_counter())

        tasks = [asyncio.create_task(watch(q)) for q in seen]
        await asyncio.sleep(1)
        delays: list[float] = []
        for i in range(20):
            t = time.perf_counter()
            (await c.patch(f"/api/v1/namespaces/default/pods/pod-{i}", json={"metadata": {"labels": {"w": str(i)}}},
                           headers={"Content-Type": "application/merge-patch+json"})).raise_for_status()
            for q in seen:
                delays.append(await asyncio.wait_for(q.get(), 30) - t)
        print(_line(f"watch fan-out x{watchers}", delays, 1.0))
        for wt in tasks:
            wt.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if child is not None:
        child.terminate()
        child.join(10)
    else:
        server.should_exit = True
        await task


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--lists", type=int, default=50)
    ap.add_argument("--no-watch-cache", action="store_true")
    ap.add_argument("--server-process", action="store_true", help="run the server in its own process")
    a = ap.parse_args()
    asyncio.run(main(a.pods, a.rounds, a.watchers, a.lists, not a.no_watch_cache, a.server_process))
