"""Logs bench: Loki JSON push of the shared 1M-line dataset, then the shared LogQL query set.

Starts ``pitwall server`` on a free loopback port with a temporary data dir,
pushes ``../shared/bench/loki_datagen.py``'s lines with ``loki_push.py``
(data moved near now with BENCH_T0, so Loki-style age limits accept it),
measures lines/s, server CPU seconds, peak RSS and bytes per line on disk,
then runs ``query_bench.py --kind loki`` over the hour (step 60s, limit 1000,
backward) and prints every figure beside Grafana Loki 3.7's reference
figures from ``../shared/bench/README.md`` as a ratio.

    .venv/bin/python bench/logs_ingest.py [--lines 1000000] [--skip-queries]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "bench"
REF_LINES_PER_S = 139_000
REF_LINES_PER_CPU_S = 75_000
REF_PEAK_RSS_MIB = 353
REF_QUERY_MS = {"line_filter_error": 114, "regex_filter_5xx": 78, "json_label_filter": 361,
                "count_over_time_by_app": 775, "rate_sum_by_env": 3500, "json_count_by_level": 418,
                "quantile_latency_unwrap": 628}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start(data: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "pitwall.cli.main", "server", "--data-dir", str(data),
                             "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            env={"PITWALL_OTLP_GRPC__LISTEN": "127.0.0.1:0", **os.environ},
                            stderr=open(data.parent / "server.log", "ab"))  # noqa: SIM115
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("pitwall did not become ready")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)


def _ratio(ours: float, ref: float) -> str:
    return f"{ours / ref:.2f}x"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--skip-queries", action="store_true")
    a = ap.parse_args()
    t0 = (int(time.time()) - 3700) // 60 * 60
    env = dict(os.environ, BENCH_T0=str(t0))
    tmp = Path(tempfile.mkdtemp(prefix="pitwall-logs-bench-"))
    data = tmp / "data"
    data.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        proc = _start(data, port)
        cpu0 = _cpu_s(proc.pid)
        out = subprocess.run([sys.executable, str(SHARED / "loki_push.py"), "--url", url + "/loki/api/v1/push",
                              "--lines", str(a.lines), "--json"], env=env, capture_output=True, text=True,
                             check=False, cwd=SHARED)
        cpu = _cpu_s(proc.pid) - cpu0
        peak = _peak_rss_mib(proc.pid)
        push = json.loads(out.stdout.strip().splitlines()[-1])
        if not push.get("ok"):
            print("push failed:", push.get("errors"), out.stderr[-2000:])
            return 1
        _stop(proc)
        disk = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        rate = push["lines_per_s"]
        print(f"{'figure':34s} {'pitwall':>12s} {'Loki 3.7':>12s} {'ratio':>8s}")
        print(f"{'push lines/s':34s} {rate:12,.0f} {REF_LINES_PER_S:12,d} {_ratio(rate, REF_LINES_PER_S):>8s}")
        per_cpu = push["lines"] / cpu if cpu else float("nan")
        print(f"{'lines per server CPU-second':34s} {per_cpu:12,.0f} {REF_LINES_PER_CPU_S:12,d} "
              f"{_ratio(per_cpu, REF_LINES_PER_CPU_S):>8s}")
        print(f"{'peak RSS during push (MiB)':34s} {peak:12,.0f} {REF_PEAK_RSS_MIB:12,d} "
              f"{_ratio(peak, REF_PEAK_RSS_MIB):>8s}")
        print(f"{'bytes on disk per line':34s} {disk / push['lines']:12,.1f} {'-':>12s} "
              f"({push['line_bytes'] / push['lines']:.0f} raw bytes per line)")
        if a.skip_queries:
            return 0
        proc = _start(data, port)
        try:
            q = subprocess.run([sys.executable, str(SHARED / "query_bench.py"), "--kind", "loki", "--url", url,
                                "--queries", str(SHARED / "loki_queries.tsv"), "--start", f"{t0}000000000",
                                "--end", f"{t0 + 3600}000000000", "--step", "60s", "--limit", "1000",
                                "--reps", str(a.reps), "--json", "--timeout-s", "120"],
                               capture_output=True, text=True, check=False)
        finally:
            _stop(proc)
        rows = json.loads(q.stdout.strip().splitlines()[-1])
        print(f"\n{'query (median ms)':34s} {'pitwall':>12s} {'Loki 3.7':>12s} {'ratio':>8s}")
        for row in rows:
            ref = REF_QUERY_MS.get(row["name"], float("nan"))
            if "error" in row:
                print(f"{row['name']:34s} ERROR {row['error'][:80]}")
                continue
            print(f"{row['name']:34s} {row['median_ms']:12,.1f} {ref:12,.0f} {_ratio(row['median_ms'], ref):>8s}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
