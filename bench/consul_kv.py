"""Consul KV on pitwall beside Debian's etcd (v3 JSON gateway), same machine, same run.

    PYTHONPATH=src .venv/bin/python bench/consul_kv.py [--n 2000] [--concurrency 16] [--watchers 10000]
        [--watchers-only] [--watch-path /v1/health/service/web] [--rounds 10] [--round-n 500]

Per server: sequential PUT and GET (ops/s, p50/p99 ms; one keep-alive
connection; for pitwall also the server's CPU per operation, all threads,
the steadier figure on a shared machine, split between the event loop's
thread and the others with each side's sleeps per operation), concurrent PUTs (``--concurrency`` connections),
sequential PUTs again with the two servers taking turns (``--rounds`` of ``--round-n``: the steadier
ratio, as this machine's speed drifts by more than the difference between minutes), and for
pitwall also blocking queries: ``--watchers`` held ``?index=&wait=`` reads on
one key, the server's RSS before and while they are held, and the time from
the write to the last waiter answering; then as many held again and their
clients gone, and the time until the server holds none (a client that
disconnects frees its watcher); ``--watchers 0`` skips them. ``--watch-path`` holds another blocking
read instead of ``/v1/kv/watched`` (a catalog, health or session endpoint);
for those the watched change is an agent service registration (``web``, or
the service the path names) whose tags change. The bench lifts its own open-files soft limit
to the hard one (10,000 held queries are 10,000 sockets on each side;
``pitwall server`` lifts its own). ``--watchers-only`` skips etcd and the
KV throughput. pitwall runs as ``pitwall server``
(SQLite state store, fsync on each commit; each KV write also records its
history and a change event); etcd fsyncs its WAL before it answers. Not part
of the tests: run it and copy the figures into docs/status.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Server, ratio
from revstore import start_etcd

VALUE = b"x" * 256
SETTLE_S = 1.5


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _seq(n: int, op: Callable[[int], httpx.Response]) -> tuple[float, float, float]:
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        a = time.perf_counter()
        r = op(i)
        r.raise_for_status()
        lat.append(time.perf_counter() - a)
    total = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100)
    return n / total, q[49] * 1000, q[98] * 1000


async def _concurrent(n: int, workers: int, make: Callable[[httpx.AsyncClient, int], object]) -> float:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=workers)) as client:
        counter = iter(range(n))

        async def worker() -> None:
            for i in counter:
                r = await make(client, i)  # type: ignore[misc]
                r.raise_for_status()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return n / (time.perf_counter() - t0)


def _threads(pid: int) -> dict[str, tuple[float, int]]:
    """Per thread of ``pid``: (CPU seconds, voluntary context switches), the event loop's (the main thread's)
    under ``loop`` and the others summed under ``other``."""
    out = {"loop": (0.0, 0), "other": (0.0, 0)}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        switches = int(next(line.split()[1] for line in status.splitlines() if line.startswith("voluntary_ctxt")))
        which = "loop" if task.name == str(pid) else "other"
        out[which] = (out[which][0] + cpu, out[which][1] + switches)
    return out


def _per_op(before: dict[str, tuple[float, int]], after: dict[str, tuple[float, int]], n: int,
            out: dict[str, float], op: str) -> None:
    for which in ("loop", "other"):
        out[f"{op}_cpu_{which}_ms"] = (after[which][0] - before[which][0]) * 1000 / n
        out[f"{op}_switches_{which}"] = (after[which][1] - before[which][1]) / n


def bench_pitwall(server: Server, n: int, workers: int) -> dict[str, float]:
    """The rates, latencies and the server process's CPU (all its threads) per sequential PUT and GET, split
    between the event loop's thread and the others (the store's writer and readers, uvicorn's, the log
    store's), with each side's voluntary context switches (sleeps) per operation."""
    out: dict[str, float] = {}
    url = server.url
    pid = server.proc.pid
    with httpx.Client(base_url=url, timeout=60) as c:
        cpu, threads = server.cpu_seconds(), _threads(pid)
        out["put"], out["put_p50"], out["put_p99"] = _seq(n, lambda i: c.put(f"/v1/kv/bench/k{i}", content=VALUE))
        time.sleep(0.5)  # the writes' after-commit work counted with them
        _per_op(threads, threads := _threads(pid), n, out, "put")
        out["put_cpu_ms"], cpu = (server.cpu_seconds() - cpu) * 1000 / n, server.cpu_seconds()
        out["get"], out["get_p50"], out["get_p99"] = _seq(n, lambda i: c.get(f"/v1/kv/bench/k{i}"))
        out["get_cpu_ms"] = (server.cpu_seconds() - cpu) * 1000 / n
        _per_op(threads, _threads(pid), n, out, "get")
    out["put_conc"] = asyncio.run(_concurrent(n, workers, lambda c, i: c.put(f"{url}/v1/kv/bench/c{i}",
                                                                               content=VALUE)))
    return out


def bench_etcd(url: str, n: int, workers: int) -> dict[str, float]:
    out: dict[str, float] = {}
    v = _b64(VALUE)
    with httpx.Client(base_url=url, timeout=60) as c:
        out["put"], out["put_p50"], out["put_p99"] = _seq(
            n, lambda i: c.post("/v3/kv/put", json={"key": _b64(f"bench/k{i}"), "value": v}))
        out["get"], out["get_p50"], out["get_p99"] = _seq(
            n, lambda i: c.post("/v3/kv/range", json={"key": _b64(f"bench/k{i}")}))
    out["put_conc"] = asyncio.run(_concurrent(n, workers, lambda c, i: c.post(
        f"{url}/v3/kv/put", json={"key": _b64(f"bench/c{i}"), "value": v})))
    return out


def interleaved_puts(etcd_url: str, pit_url: str, rounds: int, n: int) -> tuple[float, float, list[float]]:
    """Sequential PUTs in ``rounds`` rounds of ``n``, the two servers taking turns (who goes first alternates):
    both see the same minutes of a machine whose speed drifts. (pitwall's rate, etcd's, each round's ratio.)"""
    v = _b64(VALUE)
    took = {"pitwall": 0.0, "etcd": 0.0}
    ratios = []
    with httpx.Client(base_url=pit_url, timeout=60) as pc, httpx.Client(base_url=etcd_url, timeout=60) as ec:
        ops: dict[str, Callable[[int, int], httpx.Response]] = {
            "pitwall": lambda r, i: pc.put(f"/v1/kv/bench/i{r}/{i}", content=VALUE),
            "etcd": lambda r, i: ec.post("/v3/kv/put", json={"key": _b64(f"bench/i{r}/{i}"), "value": v}),
        }
        for r in range(rounds):
            this = {}
            for name in ("etcd", "pitwall") if r % 2 == 0 else ("pitwall", "etcd"):
                t0 = time.perf_counter()
                for i in range(n):
                    ops[name](r, i).raise_for_status()
                this[name] = time.perf_counter() - t0
                took[name] += this[name]
            ratios.append(this["etcd"] / this["pitwall"])
    return rounds * n / took["pitwall"], rounds * n / took["etcd"], ratios


async def _held_query(host: str, port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A blocking GET on its own raw connection (an HTTP client's own pool would be what is measured)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    data = await reader.read()  # until the server closes: the whole answer
    writer.close()
    return data


async def _held(c: httpx.AsyncClient, url: str) -> float:
    """The server's own gauge of blocking queries held."""
    m = (await c.get(f"{url}/metrics")).text
    return next((float(x.split()[-1]) for x in m.splitlines() if x.startswith("pitwall_consul_blocking_queries ")),
                0.0)


def _with(path: str, query: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{query}"


async def _change(c: httpx.AsyncClient, url: str, path: str, n: int) -> None:
    """The change the held queries on ``path`` watch: the KV key's value, or the agent service's tags."""
    if path.startswith("/v1/kv/"):
        r = await c.put(url + path.split("?")[0], content=f"v{n}".encode())
    else:
        parts = path.split("?")[0].rstrip("/").split("/")
        name = parts[-1] if parts[-2] == "service" else "web"
        r = await c.put(f"{url}/v1/agent/service/register", json={"Name": name, "ID": f"{name}-1", "Port": 8080,
                                                                   "Tags": [f"v{n}"]})
    r.raise_for_status()


async def _hold(server: Server, c: httpx.AsyncClient, path: str, index: str, watchers: int,
                ) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``watchers`` blocking queries opened (in batches, within the listen backlog) and held."""
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for start in range(0, watchers, 500):
        conns += await asyncio.gather(*(_held_query("127.0.0.1", server.port,
                                                    _with(path, f"index={index}&wait=300s"))
                                        for _ in range(start, min(start + 500, watchers))))
    while await _held(c, server.url) < watchers:  # until every query is held (the server's gauge says so)
        await asyncio.sleep(0.2)
    return conns


async def bench_watchers(server: Server, watchers: int, path: str = "/v1/kv/watched") -> dict[str, float]:
    url = server.url
    async with httpx.AsyncClient(timeout=120) as c:
        await _change(c, url, path, 0)
        index = (await c.get(url + path)).headers["X-Consul-Index"]
        for _ in range(3):  # warm the request path so its one-off allocations are not counted per waiter
            await c.get(url + _with(path, f"index={index}&wait=10ms"))
        # The first write's after-commit work (its audit entry's batch into the log store, 50 ms later: ~9 MiB
        # the first time) lands before the baseline, not among the held queries.
        await asyncio.sleep(SETTLE_S)
        rss_before, _ = server.rss_mib()
        conns = await _hold(server, c, path, index, watchers)
        answers = [asyncio.create_task(_answer(r, w)) for r, w in conns]
        rss_held, _ = server.rss_mib()
        t0 = time.perf_counter()
        await _change(c, url, path, 1)
        done = await asyncio.gather(*answers)
        wake = time.perf_counter() - t0
        new_index = (await c.get(url + path)).headers["X-Consul-Index"]
        # held again, then every client goes away without an answer
        conns = await _hold(server, c, path, new_index, watchers)
        t0 = time.perf_counter()
        for _r, w in conns:
            w.transport.abort()
        while await _held(c, url) > 0:
            await asyncio.sleep(0.05)
        freed = time.perf_counter() - t0
        rss_after, _ = server.rss_mib()
    assert all(d.startswith(b"HTTP/1.1 200") and b"x-consul-index: " in d.lower()
               and b"x-consul-index: " + index.encode() + b"\r\n" not in d.lower() for d in done)
    return {"rss_before": rss_before, "rss_held": rss_held, "kib_per_waiter": (rss_held - rss_before) * 1024 / watchers,
            "wake_all_ms": wake * 1000, "freed_ms": freed * 1000, "rss_after": rss_after}


def _raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _print_watchers(w: dict[str, float], watchers: int, path: str) -> None:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{path}: blocking queries held: {watchers} (load average {load}); RSS {w['rss_before']:.0f} -> {w['rss_held']:.0f} MiB "
          f"({w['kib_per_waiter']:.1f} KiB per held query, connection included); "
          f"all woken {w['wake_all_ms']:.0f} ms after the write; {watchers} clients gone: none held "
          f"{w['freed_ms']:.0f} ms later (RSS then {w['rss_after']:.0f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--watchers", type=int, default=10_000)
    ap.add_argument("--watchers-only", action="store_true")
    ap.add_argument("--rounds", type=int, default=10,
                    help="sequential PUTs again, the two servers taking turns in this many rounds (0: skip)")
    ap.add_argument("--round-n", type=int, default=500, help="PUTs per server per round")
    ap.add_argument("--watch-path", default="/v1/kv/watched",
                    help="the blocking read held (e.g. /v1/health/service/web, /v1/catalog/services)")
    args = ap.parse_args()
    _raise_open_files()
    if args.watchers_only:
        with tempfile.TemporaryDirectory() as tmp:
            pit = Server("pitwall", Path(tmp))
            try:
                _print_watchers(asyncio.run(bench_watchers(pit, args.watchers, args.watch_path)), args.watchers,
                                args.watch_path)
            finally:
                pit.stop()
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        etcd_url, etcd = start_etcd(work / "etcd")
        pit = Server("pitwall", work)
        try:
            print("etcd ...", file=sys.stderr, flush=True)
            e = bench_etcd(etcd_url, args.n, args.concurrency)
            print("pitwall ...", file=sys.stderr, flush=True)
            p = bench_pitwall(pit, args.n, args.concurrency)
            inter = None
            if args.rounds > 0:
                print("interleaved PUTs ...", file=sys.stderr, flush=True)
                inter = interleaved_puts(etcd_url, pit.url, args.rounds, args.round_n)
            w = None
            if args.watchers > 0:
                print("blocking queries ...", file=sys.stderr, flush=True)
                w = asyncio.run(bench_watchers(pit, args.watchers, args.watch_path))
        finally:
            pit.stop()
            etcd.terminate()
            etcd.wait(30)
    print(f"{'':24}{'pitwall':>12}{'etcd':>12}{'ratio':>8}")
    for k, label in (("put", "PUT ops/s (sequential)"), ("get", "GET ops/s (sequential)"),
                     ("put_conc", f"PUT ops/s ({args.concurrency} conns)")):
        print(f"{label:24}{p[k]:12.0f}{e[k]:12.0f}{ratio(p[k], e[k]):>8}")
    if inter is not None:
        pr, er, rs = inter
        print(f"{'PUT ops/s (interleaved)':24}{pr:12.0f}{er:12.0f}{ratio(pr, er):>8}   "
              f"({args.rounds} rounds of {args.round_n}, taking turns; per round {min(rs):.2f}x-{max(rs):.2f}x, "
              f"median {statistics.median(rs):.2f}x)")
    for k in ("put_p50", "put_p99", "get_p50", "get_p99"):
        print(f"{k + ' ms':24}{p[k]:12.2f}{e[k]:12.2f}")
    print(f"pitwall server CPU per sequential PUT {p['put_cpu_ms']:.2f} ms, per GET {p['get_cpu_ms']:.2f} ms "
          "(all its threads)")
    for op in ("put", "get"):
        print(f"  {op.upper()}: event loop {p[f'{op}_cpu_loop_ms']:.2f} ms, {p[f'{op}_switches_loop']:.1f} sleeps; "
              f"other threads {p[f'{op}_cpu_other_ms']:.2f} ms, {p[f'{op}_switches_other']:.1f} sleeps (per op)")
    if w is not None:
        _print_watchers(w, args.watchers, args.watch_path)


if __name__ == "__main__":
    main()
