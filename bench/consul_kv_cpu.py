"""CPU per Consul KV PUT and GET inside one process, and WAL frames per PUT, with a cProfile top list.

    PYTHONPATH=src .venv/bin/python bench/consul_kv_cpu.py [--n 2000] [--level route|kv|store] [--profile 25]
        [--keys 10]

Builds what ``pitwall server`` builds (``create_app`` with the SQLite state
store, fsync on each commit, no auth) and runs its lifespan, then drives
``--n`` sequential PUTs (256-byte values, distinct keys) and as many GETs:

- ``route``: through the whole ASGI app (middlewares, router, handler),
  called directly: no socket, no uvicorn, no client library;
- ``kv``: through ``KVStore.put``/``get`` (the handler's engine: the value,
  its history record and its change event in one store transaction);
- ``store``: through ``SqliteRevStore.put``/``get`` (one key, one revision).

With ``--keys K`` the PUTs rewrite K keys instead, each first brought to
its history limit (100 records), so each write also retires the oldest.

CPU is ``time.process_time()`` (every thread of the process, the SQLite
writer and readers included) divided by the operations, with the event
loop's thread's own share (``time.thread_time()``) beside it; the wall rate is
printed beside it. WAL frames per PUT: the WAL is checkpointed and truncated,
20 PUTs run, and ``PRAGMA wal_checkpoint`` reports the frames they appended.
A second pass runs under cProfile (``--profile N`` lines, 0: none); the
profiler covers the event loop's thread only. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

VALUE = b"x" * 256
WAL_PUTS = 20  # below SQLite's 1,000-page autocheckpoint even at two commits of ~15 frames each

Op = Callable[[int], Awaitable[Any]]


async def _run(n: int, op: Op) -> tuple[float, float, float, float]:
    """(CPU ms per op, of it the event loop's thread, ops/s wall, p50 ms)."""
    lat = []
    cpu0, loop0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
    for i in range(n):
        a = time.perf_counter()
        await op(i)
        lat.append(time.perf_counter() - a)
    cpu, loop, wall = time.process_time() - cpu0, time.thread_time() - loop0, time.perf_counter() - t0
    return cpu * 1000 / n, loop * 1000 / n, n / wall, statistics.median(lat) * 1000


def _wal_frames(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        conn.close()


def _truncate_wal(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def _ops(level: str, app: Any, tag: str, keys: int = 0) -> tuple[Op, Op]:
    """The PUT and GET of ``level``, op ``i`` on key ``bench/<tag><i>`` (``i`` modulo ``keys`` on
    ``bench/same<i>`` when given), each PUT's value its own (a rewrite of the same value writes nothing)."""
    def key(i: int) -> str:
        return f"bench/same{i % keys}" if keys else f"bench/{tag}{i}"

    def value(i: int) -> bytes:
        return VALUE[:-10] + b"%010d" % i

    if level == "route":
        async def put(i: int) -> None:
            await _asgi(app, "PUT", f"/v1/kv/{key(i)}", value(i))

        async def get(i: int) -> None:
            await _asgi(app, "GET", f"/v1/kv/{key(i)}")
        return put, get
    kv = _find_kv(app)
    if level == "kv":
        async def kput(i: int) -> None:
            await kv.put(key(i), value(i), who="bench")

        async def kget(i: int) -> None:
            await kv.get(key(i))
        return kput, kget
    store = kv.store

    async def sput(i: int) -> None:
        await store.put(f"/{key(i)}", value(i))

    async def sget(i: int) -> None:
        await store.get(f"/{key(i)}")
    return sput, sget


async def _asgi(app: Any, method: str, path: str, body: bytes = b"") -> None:
    """One HTTP/1.1 request straight into the ASGI app (no client library, no socket), 200 expected."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80)}
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        return {}

    async def send(msg: dict[str, Any]) -> None:
        nonlocal status
        if msg["type"] == "http.response.start":
            status = msg["status"]

    await app(scope, receive, send)
    if status != 200:
        raise RuntimeError(f"{method} {path}: {status}")


def _find_kv(app: Any) -> Any:
    """The ``KVStore`` of the app's registry part (the one its Consul routes use)."""
    from pitwall.registry import RegistryPart

    for part in app.state.components.parts:
        if isinstance(part, RegistryPart):
            return part.kv
    raise RuntimeError("the app has no registry part")


async def bench(data: Path, n: int, level: str, profile: int, keys: int = 0) -> None:
    from pitwall.config import load_settings
    from pitwall.server import create_app

    settings = load_settings(data_dir=data, listen="127.0.0.1:0", state={"backend": "sqlite"})
    app = create_app(settings)
    db = data / "revstore.db"
    async with app.router.lifespan_context(app):
        put, get = await _ops(level, app, "w")
        for i in range(50):  # warm-up: first-use imports, statement caches
            await put(i)
            await get(i)
        if keys:  # every key at its history limit (100 records), as a long-lived config key is
            put, get = await _ops(level, app, "", keys)
            for i in range(keys * 101):
                await put(i)
        await asyncio.sleep(0.2)  # after-commit work of the warm-up (history pruning) done
        _truncate_wal(db)
        put, get = await _ops(level, app, "f", keys)
        for i in range(WAL_PUTS):
            await put(i)
        await asyncio.sleep(0.2)
        frames = _wal_frames(db) / WAL_PUTS
        put, get = await _ops(level, app, "k", keys)
        pc, pl, pr, p50 = await _run(n, put)
        await asyncio.sleep(0.2)
        gc_, gl, gr, g50 = await _run(n, get)
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"level {level}, n {n}, {f'{keys} keys rewritten' if keys else 'new keys'}, load average {load}")
        print(f"PUT: {pc:.3f} ms CPU per op ({pl:.3f} the event loop's thread), {pr:.0f} ops/s, p50 {p50:.2f} ms; "
              f"{frames:.1f} WAL frames per PUT")
        print(f"GET: {gc_:.3f} ms CPU per op ({gl:.3f} the event loop's thread), {gr:.0f} ops/s, p50 {g50:.2f} ms")
        if profile:
            put, get = await _ops(level, app, "p", keys)
            for name, op in (("PUT", put), ("GET", get)):
                with _threads_profiled() as threads:
                    prof = cProfile.Profile()
                    prof.enable()
                    await _run(n, op)
                    prof.disable()
                _print_profile(f"{name}, event loop thread", prof, profile)
                _print_profile(f"{name}, store writer and reader threads", threads, profile)


def _print_profile(title: str, prof: cProfile.Profile, lines: int) -> None:
    out = io.StringIO()
    try:
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(lines)
    except TypeError:  # nothing was recorded
        return
    print(f"--- {title} (tottime) ---")
    print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))


@contextlib.contextmanager
def _threads_profiled() -> Iterator[cProfile.Profile]:
    """One profile over the SQLite store's writer batches and reader calls (they run in its own threads)."""
    from pitwall.storage.revstore.sqlite import SqliteRevStore

    prof = cProfile.Profile()
    lock = threading.Lock()  # a Profile records one thread at a time
    originals = {name: getattr(SqliteRevStore, name) for name in ("_run_batch", "_r_range")}

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def profiled(*args: Any) -> Any:
            with lock:
                return prof.runcall(fn, *args)
        return profiled
    for name, fn in originals.items():
        setattr(SqliteRevStore, name, wrap(fn))
    try:
        yield prof
    finally:
        for name, fn in originals.items():
            setattr(SqliteRevStore, name, fn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--level", choices=("route", "kv", "store"), default="route")
    ap.add_argument("--profile", type=int, default=0, help="cProfile lines per op (0: no profile pass)")
    ap.add_argument("--keys", type=int, default=0,
                    help="rewrite this many keys, each at its history limit, instead of new keys")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(Path(tmp) / "data", args.n, args.level, args.profile, args.keys))


if __name__ == "__main__":
    main()
