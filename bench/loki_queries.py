"""Loki query latency: ../shared/bench's LogQL query set against pitwall, beside Loki's figures.

Starts ``pitwall server`` (temporary data dir), pushes ``loki_datagen.py``'s 1M lines with the
shared ``loki_push.py`` (moved near now with BENCH_T0), restarts the server so every query
reads on-disk blocks as a restarted Loki reads chunks, then runs each query of
``loki_queries.tsv`` over the hour (step 60s, limit 1000, backward) once untimed (the first
queries after a start pay for cold caches) and ``--reps`` times timed, and prints
per query the median and fastest run, Grafana Loki 3.7's median from ../shared/bench/README.md,
the ratio and whether it meets issue 24's goal (<= 0.5x Loki). It also checks the answers'
shape: log query streams carry ``detected_level`` and ``service_name``.

With ``--cpu`` it then stops the server and evaluates each query in-process on the same
on-disk data, printing the median CPU time (``time.process_time``: all threads, so a shared
machine's load does not count) and a digest of the answer, to compare builds.

    .venv/bin/python bench/loki_queries.py [--lines 1000000] [--reps 7] [--cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import SHARED_BENCH, free_port, ratio, run_shared, wait_ready

LOKI_MEDIAN_MS = {"line_filter_error": 114, "regex_filter_5xx": 78, "json_label_filter": 361,
                  "count_over_time_by_app": 775, "rate_sum_by_env": 3500, "json_count_by_level": 418,
                  "quantile_latency_unwrap": 628}
GOAL = 0.5


def _queries() -> list[tuple[str, str]]:
    out = []
    for line in (SHARED_BENCH / "loki_queries.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, expr = line.split("\t", 1)
            out.append((name, expr.strip()))
    return out


def _time(url: str, expr: str, t0: int, reps: int) -> tuple[list[float], dict[str, Any]]:
    params = {"query": expr, "start": f"{t0}000000000", "end": f"{t0 + 3600}000000000", "step": "60s",
              "limit": "1000", "direction": "backward"}
    took: list[float] = []
    data: dict[str, Any] = {}
    with httpx.Client(timeout=300) as c:
        c.get(url + "/loki/api/v1/query_range", params=params).raise_for_status()  # warm-up, untimed
        for _ in range(reps):
            a = time.perf_counter()
            r = c.get(url + "/loki/api/v1/query_range", params=params)
            took.append((time.perf_counter() - a) * 1000)
            r.raise_for_status()
            data = r.json()["data"]
    return took, data


def _shape(data: dict[str, Any]) -> str:
    res = data["result"]
    if data["resultType"] != "streams":
        return f"{len(res)} series"
    with_level = sum("detected_level" in s["stream"] and "service_name" in s["stream"] for s in res)
    return f"{len(res)} streams, {with_level} with detected_level+service_name"


class _Pitwall:
    """``pitwall server`` on a data dir that outlives it (so a restart reads what was pushed)."""

    def __init__(self, data: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(data.parent / "server.log", "ab")  # noqa: SIM115 - lives as long as the server
        env = dict(os.environ, PITWALL_LOG_LEVEL="warning")
        env.setdefault("PITWALL_OTLP_GRPC__LISTEN", "127.0.0.1:0")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pitwall.cli.main", "server", "--data-dir", str(data), "--listen",
             f"127.0.0.1:{port}", "--retention", "100y"], stdout=self.log, stderr=self.log, env=env)
        wait_ready(self.url, self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=300)
        self.log.close()


def _relative(result: list[dict[str, Any]], t0: int) -> list[Any]:
    """The answer with times from ``t0`` (each run moves the data near now), so digests compare across runs."""
    out: list[Any] = []
    for r in result:
        if "values" in r and "stream" in r:  # log stream: [ns string, line]
            out.append([sorted(r["stream"].items()), [[int(ts) - t0 * 10**9, line] for ts, line in r["values"]]])
        else:  # matrix series: [seconds, value string]
            out.append([sorted(r["metric"].items()), [[float(t) - t0, v] for t, v in r["values"]]])
    return out


def _cpu_in_process(data: Path, t0: int, reps: int) -> None:
    """Each query through ``LogQLEngine`` on the store the server left: CPU ms and an answer digest."""
    import asyncio
    import hashlib
    import json

    from pitwall.logs.logql import LogQLEngine
    from pitwall.logs.model import Direction
    from pitwall.logs.settings import LogsSettings
    from pitwall.storage.duckdb import TelemetryDB
    from pitwall.storage.logs_store import LogStore

    async def run() -> None:
        block_ns = LogsSettings().block_duration * 10**6
        st = LogStore(TelemetryDB(data / "telemetry.duckdb"), data / "wal" / "logs", block_ns=block_ns,
                      retention_ns=0, fsync=False)
        await st.start()
        try:
            q, eng = st.querier(), LogQLEngine()
            print(f"{'in-process':26s} {'CPU ms':>10s} {'min ms':>8s}  answer digest")
            for name, expr in _queries():
                def once(expr: str = expr) -> Any:
                    return eng.query_range(q, expr, t0 * 10**9, (t0 + 3600) * 10**9, 60 * 10**9, limit=1000,
                                           direction=Direction.BACKWARD, align_step=True)
                res = once()  # warm-up, untimed
                cpu = []
                for _ in range(reps):
                    a = time.process_time()
                    once()
                    cpu.append((time.process_time() - a) * 1000)
                digest = hashlib.sha1(json.dumps(_relative(res.to_loki_data()["result"], t0)).encode())
                print(f"{name:26s} {statistics.median(cpu):10.1f} {min(cpu):8.1f}  {digest.hexdigest()[:12]}")
        finally:
            await st.stop()

    asyncio.run(run())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--cpu", action="store_true", help="also time each query in-process (CPU ms)")
    a = ap.parse_args()
    t0 = (int(time.time()) - 3700) // 60 * 60
    with tempfile.TemporaryDirectory(prefix="pitwall-loki-queries-") as tmp:
        data = Path(tmp) / "data"
        port = free_port()
        srv = _Pitwall(data, port)
        try:
            push = run_shared("loki_push.py", "--url", srv.url + "/loki/api/v1/push", "--lines", str(a.lines),
                              env={"BENCH_T0": str(t0)})
        finally:
            srv.stop()
        if not push.get("ok"):
            print("push failed:", push.get("errors"))
            return 1
        srv = _Pitwall(data, port)
        try:
            load = os.getloadavg()
            print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
                  f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {push['lines']:,} lines pushed "
                  f"at {push['lines_per_s']:,.0f}/s")
            print(f"{'query':26s} {'median ms':>10s} {'min ms':>8s} {'Loki ms':>8s} {'ratio':>7s} "
                  f"{'<=0.5x':>7s}  answer")
            for name, expr in _queries():
                took, res = _time(srv.url, expr, t0, a.reps)
                med = statistics.median(took)
                ref = LOKI_MEDIAN_MS[name]
                ok = "yes" if med <= GOAL * ref else "no"
                print(f"{name:26s} {med:10.1f} {min(took):8.1f} {ref:8d} {ratio(med, ref):>7s} {ok:>7s}  "
                      f"{_shape(res)}")
        finally:
            srv.stop()
        if a.cpu:
            _cpu_in_process(data, t0, a.reps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
