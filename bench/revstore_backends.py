"""The state store's three backends side by side: embedded SQLite, a real etcd (Debian's etcd-server)
and a real PostgreSQL (Debian's postgresql, a throwaway cluster started here), all on this machine.

    .venv/bin/python bench/revstore_backends.py [--n 1000] [--watchers 50]

Per backend, the measurements of bench/revstore.py (sequential put/get/CAS latency, 32 concurrent
writers, a paginated range, watch fan-out to ``--watchers`` watchers), plus the hop that only a shared
backend has: a put through one client (server A) reaching a watch of another client (server B) —
what a second pitwall server sees of the first one's writes. All three are durable: SQLite fsyncs
each group commit, etcd its WAL, PostgreSQL its WAL at commit (fsync and synchronous_commit on, the
defaults). As root, PostgreSQL runs as the ``postgres`` user. Not part of the tests; figures in
docs/scale.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from revstore import _free_port, _pct, bench, bench_store, etcd_version, running_etcd

from pitwall.storage.revstore import RevStore
from pitwall.storage.revstore.etcd import EtcdRevStore
from pitwall.storage.revstore.postgres import PostgresRevStore
from pitwall.storage.revstore.sqlite import SqliteRevStore


def start_postgres(root: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """initdb + postgres (durable defaults) under ``root``; returns the DSN and the process."""
    [initdb] = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))[-1:]
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run([*prefix, str(initdb), "-D", str(root / "data"), "-U", "postgres", "--auth=trust"],
                   check=True, stdout=subprocess.DEVNULL)
    proc = subprocess.Popen([*prefix, str(initdb.parent / "postgres"), "-D", str(root / "data"), "-p", str(port),
                             "-h", "127.0.0.1", "-k", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    for _ in range(300):
        with contextlib.suppress(psycopg.OperationalError), psycopg.connect(dsn, connect_timeout=1):
            return dsn, proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("postgres did not start")


async def cross_hop(a: RevStore, b: RevStore, n: int) -> str:
    """Put through ``a``, one at a time; latency until ``b``'s watch delivers it."""
    start = await a.revision() + 1
    it = b.watch("/hop/", start_revision=start)
    delays: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        await a.put(f"/hop/{i}", b"x" * 512)
        got = 0
        while got < 1:
            got += len(await asyncio.wait_for(anext(it), 30))
        delays.append(time.perf_counter() - t0)
    await it.aclose()  # type: ignore[attr-defined]
    return (f"p50 {statistics.median(delays) * 1000:6.2f} ms  p99 {_pct(delays, .99):6.2f} ms "
            f"(put on server A -> watch on server B)")


async def run_pair(make: Callable[[], RevStore], args: argparse.Namespace) -> dict[str, str]:
    """The bench on one client, then the hop between two clients of the same backend."""
    a, b = make(), make()
    await a.start()
    await b.start()
    try:
        out = await bench(a, args.n, args.watchers)
        out["cross-server watch hop"] = await cross_hop(a, b, max(100, args.n // 10))
        return out
    finally:
        await a.stop()
        await b.stop()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--watchers", type=int, default=50)
    args = ap.parse_args()
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = await bench_store(SqliteRevStore(Path(tmp) / "state.db", compact_interval_s=None),
                                              args.n, args.watchers)
        results["sqlite"]["cross-server watch hop"] = "- (one process per database)"
        with running_etcd(Path(tmp) / "etcd") as url:
            results["etcd"] = await run_pair(lambda: EtcdRevStore([url], compact_interval_s=None), args)
        pg_root = Path(tempfile.mkdtemp(prefix="pitwall-pg-bench-"))
        dsn, pproc = start_postgres(pg_root)
        try:
            results["postgres"] = await run_pair(lambda: PostgresRevStore(dsn, compact_interval_s=None), args)
        finally:
            pproc.terminate()
            pproc.wait()
            shutil.rmtree(pg_root, ignore_errors=True)
    pg_version = subprocess.run([str(sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))[-1]), "--version"],
                                capture_output=True, text=True).stdout.strip()
    print(f"revstore backends, n={args.n}, watchers={args.watchers}, python {sys.version.split()[0]}, "
          f"{etcd_version()}, {pg_version}, {os.cpu_count()} cores")
    for name in results["postgres"]:
        print(f"\n{name}")
        for backend, r in results.items():
            print(f"  {backend:8s} {r.get(name, '-')}")


if __name__ == "__main__":
    asyncio.run(main())
