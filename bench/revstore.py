"""The revisioned state store, SQLite backend beside a real etcd (Debian's etcd-server) on this machine.

    .venv/bin/python bench/revstore.py [--n 2000] [--watchers 100]

Measures, per backend: sequential put / get / CAS txn (ops/s and p50/p99
latency), concurrent puts (32 writers: group commit on SQLite, pipelining
on etcd), a paginated range over 1,000 keys, and watch fan-out (100 watchers
on one prefix, 8 writers; events delivered per second and p99 from the
put being sent to the event reaching a watcher). Both backends are durable: SQLite fsyncs each
commit (WAL, synchronous=FULL), etcd fsyncs its WAL before it answers.
Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx

from pitwall.storage.revstore import Compare, Event, Op, RevStore
from pitwall.storage.revstore.etcd import EtcdRevStore
from pitwall.storage.revstore.sqlite import SqliteRevStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_etcd(data: Path) -> tuple[str, subprocess.Popen[bytes]]:
    binary = shutil.which("etcd") or "/usr/bin/etcd"
    client, peer = _free_port(), _free_port()
    url = f"http://127.0.0.1:{client}"
    proc = subprocess.Popen(
        [binary, "--name", "b", "--data-dir", str(data), "--listen-client-urls", url,
         "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"b=http://127.0.0.1:{peer}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        with contextlib.suppress(httpx.HTTPError):
            if httpx.post(f"{url}/v3/kv/range", json={"key": "AA=="}, timeout=1).status_code == 200:
                return url, proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("etcd did not start")


@contextlib.contextmanager
def running_etcd(data: Path) -> Iterator[str]:
    """Debian's etcd on free ports with its data in ``data``: its client URL; terminated on exit."""
    url, proc = start_etcd(data)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait()


def etcd_version() -> str:
    return subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.split("\n")[0]


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000


async def _timed(n: int, op: Callable[[int], Awaitable[object]]) -> tuple[float, float, float]:
    lat: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        a = time.perf_counter()
        await op(i)
        lat.append(time.perf_counter() - a)
    total = time.perf_counter() - t0
    return n / total, _pct(lat, 0.5), _pct(lat, 0.99)


async def bench(store: RevStore, n: int, watchers: int) -> dict[str, str]:
    out: dict[str, str] = {}
    value = b"x" * 512  # about a small Kubernetes object's size

    def fmt(r: tuple[float, float, float]) -> str:
        return f"{r[0]:8.0f}/s  p50 {r[1]:6.2f} ms  p99 {r[2]:6.2f} ms"

    out["put (sequential)"] = fmt(await _timed(n, lambda i: store.put(f"/b/put/{i:06d}", value)))
    out["get (sequential)"] = fmt(await _timed(n * 2, lambda i: store.get(f"/b/put/{i % n:06d}")))

    async def cas(i: int) -> None:
        kv = await store.get("/b/counter")
        mod = kv.mod_revision if kv else 0
        r = await store.txn([Compare("/b/counter", "mod", "=", mod)], [Op.put("/b/counter", str(i).encode())])
        assert r.succeeded

    out["get+CAS txn (sequential)"] = fmt(await _timed(n, cas))

    writers, per = 32, max(1, n // 8)
    lat: list[float] = []

    async def writer(w: int) -> None:
        for i in range(per):
            a = time.perf_counter()
            await store.put(f"/b/conc/{w}/{i}", value)
            lat.append(time.perf_counter() - a)

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    total = writers * per
    out[f"put ({writers} concurrent writers)"] = fmt((total / (time.perf_counter() - t0), _pct(lat, .5),
                                                      _pct(lat, .99)))

    async def page(_: int) -> None:
        start: str | None = None
        for _i in range(100):
            r = await store.range("/b/put/", start=start, limit=500)
            if not r.more:
                return
            start = r.kvs[-1].key + "\0"

    out[f"range {min(n, 1000)} keys (pages of 500)"] = fmt(await _timed(20, page)) if n >= 1000 else "-"

    # Watch fan-out: every watcher sees every event; latency from the writer's ack to delivery.
    events_per_watcher = max(100, n // 4)
    sent_at: dict[str, float] = {}
    delays: list[float] = []
    start_rev = await store.revision() + 1
    done = 0

    async def watcher() -> None:
        nonlocal done
        seen = 0
        it = store.watch("/b/watch/", start_revision=start_rev)
        async for batch in it:
            now = time.perf_counter()
            ev: Event
            for ev in batch:
                delays.append(now - sent_at[ev.kv.key])
            seen += len(batch)
            if seen >= events_per_watcher:
                break
        await it.aclose()  # type: ignore[attr-defined]
        done += 1

    tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
    await asyncio.sleep(0.5)  # let every watch be established (they start from start_rev anyway)

    async def wwriter(w: int) -> None:
        for i in range(w, events_per_watcher, 8):
            sent_at[f"/b/watch/{i}"] = time.perf_counter()
            await store.put(f"/b/watch/{i}", value)

    t0 = time.perf_counter()
    await asyncio.gather(*(wwriter(w) for w in range(8)))
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    el = time.perf_counter() - t0
    out[f"watch fan-out ({watchers} watchers)"] = (
        f"{events_per_watcher * watchers / el:8.0f} events/s delivered  "
        f"p50 {statistics.median(delays) * 1000:6.2f} ms  p99 {_pct(delays, .99):6.2f} ms (put sent -> delivered)")
    return out


async def bench_store(store: RevStore, n: int, watchers: int) -> dict[str, str]:
    """Start ``store``, run the bench on it and stop it."""
    await store.start()
    try:
        return await bench(store, n, watchers)
    finally:
        await store.stop()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--watchers", type=int, default=100)
    args = ap.parse_args()
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = await bench_store(SqliteRevStore(Path(tmp) / "state.db", compact_interval_s=None),
                                              args.n, args.watchers)
        with running_etcd(Path(tmp) / "etcd") as url:
            results["etcd"] = await bench_store(EtcdRevStore([url], compact_interval_s=None), args.n, args.watchers)
    print(f"revstore bench, n={args.n}, python {sys.version.split()[0]}, {etcd_version()}")
    for name in results["sqlite"]:
        print(f"\n{name}")
        for backend, r in results.items():
            print(f"  {backend:7s} {r[name]}")


if __name__ == "__main__":
    asyncio.run(main())
