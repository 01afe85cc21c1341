"""Start-up time and idle RSS of ``pitwall server`` over N days of stored metrics.

Writes N days of samples (ending now) straight into a data directory through
``MetricStore`` (the shared workload's label sets from
``../shared/bench/prom_datagen.py``, the first ``--series`` of them; values a
seeded random walk, one sample per ``--step`` seconds; ``--days 0`` is an
empty data directory), stops the store, then:

* phases, in a fresh interpreter: importing ``pitwall.server`` (seconds,
  modules, RSS), building the parts (``create_app``), starting them (the
  lifespan, up to ready) and RSS after ``--idle`` seconds idle;
* ``pitwall server`` from exec to ``/-/ready`` answering 200, and its RSS
  once idle; then the same without the sealed blocks' index files (the server
  rebuilds them from the tables, as before they existed), and the store's open
  alone both ways (``--skip-index`` leaves those out).

Children run with ``PYTHONDONTWRITEBYTECODE`` unset, as an installed package
runs (its ``.pyc`` files are written once and reused); the phases run twice
and the second, with bytecode cached, is reported. ``--dont-write-bytecode``
keeps the variable as this environment sets it (each start compiles pitwall
from source). ``--profile`` also opens the store in this process under
cProfile and prints where the time goes.

    PYTHONPATH=src python bench/startup.py --days 0 1 15 --series 2000 --step 60
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_BENCH, free_port

from pitwall.core.labels import Labels
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore

BLOCK_MS = 2 * 3600 * 1000


def label_sets(n: int) -> list[Labels]:
    sys.path.insert(0, str(SHARED_BENCH))
    from prom_datagen import generate  # type: ignore[import-not-found]

    labels, _, _ = generate(n_samples=1)
    return [tuple(sorted(d.items())) for d in labels[:n]]


async def write_days(data: Path, days: int, series: list[Labels], step_s: int) -> int:
    """Write ``days`` of samples ending now, one block's worth per commit and flush; returns samples."""
    store = MetricStore(TelemetryDB(data / "telemetry.duckdb"), data / "wal" / "metrics", fsync=False,
                        retention_ms=0, head_max_samples=1 << 62, head_max_age_s=1e9)
    await store.start()
    rng = np.random.default_rng(7)
    now = int(time.time()) * 1000
    t0 = (now - days * 86_400_000) // BLOCK_MS * BLOCK_MS
    n = len(series)
    level = rng.uniform(0, 1000, n)
    new: list[tuple[int, Labels]] = list(enumerate(series))
    total = 0
    for b in range(t0, now, BLOCK_MS):
        ts = np.arange(b, min(b + BLOCK_MS, now), step_s * 1000, dtype=np.int64)
        k = len(ts)
        walk = level[:, None] + np.cumsum(rng.normal(0, 1, (n, k)), axis=1)
        level = walk[:, -1]
        sids = np.repeat(np.arange(n, dtype=np.int64), k)
        await store.commit("default", sids, np.tile(ts, n), walk.ravel(), new)
        new = []
        await store.flush()
        total += n * k
    # Sealed blocks are compacted/indexed by the maintenance pass; run it as the server would.
    await asyncio.to_thread(store.compact, now)
    await store.stop()
    store.db.close()
    return total


# Run in a fresh interpreter on the data dir argv[1]: each phase's seconds, module count and RSS, as JSON.
PHASES = """
import asyncio, json, sys, time
from pathlib import Path

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)

out = {"rss_python_mib": rss()}
t = time.monotonic()
from pitwall.config import load_settings
out.update(import_config_s=round(time.monotonic() - t, 3), rss_config_mib=rss())
import pitwall.server
out.update(import_s=round(time.monotonic() - t, 3), modules=len(sys.modules), rss_imported_mib=rss())
settings = load_settings(None, data_dir=Path(sys.argv[1]), listen="127.0.0.1:0")
t = time.monotonic()
app = pitwall.server.create_app(settings)
out.update(build_s=round(time.monotonic() - t, 3), rss_built_mib=rss())

async def run():
    t = time.monotonic()
    async with app.router.lifespan_context(app):
        out.update(start_s=round(time.monotonic() - t, 3), rss_started_mib=rss())
        await asyncio.sleep(float(sys.argv[2]))
        out.update(rss_idle_mib=rss(), modules_idle=len(sys.modules))

asyncio.run(run())
print(json.dumps(out))
"""


def child_env(bytecode: bool) -> dict[str, str]:
    """The server's environment: as installed (``.pyc`` written and reused) unless ``bytecode`` is False."""
    env = dict(os.environ, PITWALL_LOG_LEVEL="warning", PITWALL_OTLP_GRPC__LISTEN="127.0.0.1:0")
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def time_phases(data: Path, idle_s: float, bytecode: bool) -> dict[str, float]:
    """Import, build, start and idle RSS in-process; the second of two runs (the first writes bytecode)."""
    got: dict[str, float] = {}
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", PHASES, str(data), str(idle_s)], capture_output=True, text=True,
                             env=child_env(bytecode), timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"phases failed: {out.stderr[-2000:]}")
        got = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def time_server(data: Path, bytecode: bool = True, idle_s: float = 10) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = child_env(bytecode)
    log = open(data / "server.log", "ab")  # noqa: SIM115 - closed below
    t = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pitwall.cli.main", "server", "--data-dir", str(data),
                             "--listen", f"127.0.0.1:{port}", "--retention", "100y"],
                            stdout=log, stderr=log, env=env)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}; see {data / 'server.log'}")
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        ready = time.monotonic() - t
        time.sleep(idle_s)  # idle: let start-up work settle
        rss = 0.0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
        return {"ready_s": round(ready, 2), "rss_idle_mib": round(rss, 1)}
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        log.close()


async def time_open(data: Path) -> float:
    """Seconds to open the metrics store alone (catalog, block indexes, WAL replay)."""
    store = MetricStore(TelemetryDB(data / "telemetry.duckdb"), data / "wal" / "metrics", fsync=False,
                        retention_ms=0)
    t = time.monotonic()
    store._open()
    took = time.monotonic() - t
    store.db.close()
    return round(took, 3)


async def profile_open(data: Path) -> str:
    store = MetricStore(TelemetryDB(data / "telemetry.duckdb"), data / "wal" / "metrics", fsync=False,
                        retention_ms=0)
    prof = cProfile.Profile()
    prof.enable()
    store._open()
    prof.disable()
    store.db.close()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(18)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, nargs="+", default=[0, 1, 15], help="0: an empty data dir")
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--step", type=int, default=60, help="seconds between samples")
    ap.add_argument("--idle", type=float, default=10, help="seconds idle before reading RSS")
    ap.add_argument("--skip-index", action="store_true", help="leave out the runs without block index files")
    ap.add_argument("--dont-write-bytecode", action="store_true",
                    help="keep PYTHONDONTWRITEBYTECODE as set (compile from source on every start)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--keep", type=Path, help="write the data dirs here and keep them")
    args = ap.parse_args()
    bytecode = not args.dont_write_bytecode
    series = label_sets(args.series)
    root = args.keep or Path(tempfile.mkdtemp(prefix="pitwall-startup-"))
    try:
        for days in args.days:
            data = root / f"{days}d"
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(parents=True)
            t = time.monotonic()
            samples = asyncio.run(write_days(data, days, series, args.step)) if days else 0
            wrote = time.monotonic() - t
            res: dict[str, object] = {
                "days": days, "series": len(series) if days else 0, "samples": samples, "write_s": round(wrote, 1),
                "disk_mib": round(sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) / 2**20, 1),
                "bytecode": "written and reused" if bytecode else "compiled on every start"}
            res["phases"] = time_phases(data, args.idle, bytecode)
            res.update(time_server(data, bytecode, args.idle))
            res["ready_again_s"] = time_server(data, bytecode, args.idle)["ready_s"]
            if days and not args.skip_index:
                # Without the sealed blocks' index files, start-up reads every block (the previous behaviour).
                res["open_store_s"] = asyncio.run(time_open(data))
                shutil.rmtree(data / "telemetry.duckdb.metrics-index")
                res["open_store_no_index_s"] = asyncio.run(time_open(data))
                res["ready_no_index_s"] = time_server(data, bytecode, args.idle)["ready_s"]
            print(json.dumps(res), flush=True)
            if args.profile and days:
                print(asyncio.run(profile_open(data)), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
