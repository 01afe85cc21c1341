"""Metrics on VictoriaMetrics (``backends.metrics``): through pitwall vs straight into the engine.

    .venv/bin/python bench/backend_metrics.py [--requests 200] [--series 100] [--points 10] [--queries 50]

Starts Debian's victoria-metrics and a ``pitwall server`` (subprocess, fsync on) configured with
``backends.metrics`` on it, both on loopback. Ingest: ``--requests`` remote-write requests of
``--series`` x ``--points`` samples, sent one after another (one client), through pitwall (acknowledged
at pitwall's WAL; then the time until the forwarding queue has delivered all of it, polled at the
engine) and straight into VictoriaMetrics (acknowledged by it; then until searchable). Query: p50/p95
latency of a few PromQL queries through pitwall's ``/api/v1/query(_range)`` (relayed) and directly.
Not part of the tests; figures in docs/status.md ("Beyond one machine").
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cramjam
import httpx
import yaml

from pitwall.metrics.ingest import prompb

HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(url: str, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def body(name: str, req: int, series: int, points: int, t0: int) -> bytes:
    w = prompb.WriteRequest()
    for s in range(series):
        ts = w.timeseries.add()
        for k, v in (("__name__", name), ("req", str(req)), ("s", str(s))):
            ts.labels.add(name=k, value=v)
        for p in range(points):
            ts.samples.add(timestamp=t0 + p * 1000, value=float(req + p))
    return bytes(cramjam.snappy.compress_raw(w.SerializeToString()))


def count_at_engine(vm: str, name: str, t0: int) -> int:
    r = httpx.get(vm + "/api/v1/query", params={"query": f"count(count_over_time({name}[1h]))",
                                                  "time": str(t0 / 1000 + 1800)}, timeout=30).json()
    res = r["data"]["result"]
    return int(res[0]["value"][1]) if res else 0


def ingest(write_url: str, vm: str, name: str, args: argparse.Namespace, t0: int) -> tuple[float, float]:
    """(acked samples/s, delivered-and-searchable samples/s)."""
    bodies = [body(name, i, args.series, args.points, t0) for i in range(args.requests)]
    want = args.requests * args.series
    start = time.perf_counter()
    with httpx.Client(timeout=60) as c:
        for b in bodies:
            c.post(write_url, content=b, headers=HEADERS).raise_for_status()
    acked = time.perf_counter() - start
    while count_at_engine(vm, name, t0) < want:
        time.sleep(0.05)
    done = time.perf_counter() - start
    n = want * args.points
    return n / acked, n / done


def latency(url: str, n: int, t0: int) -> dict[str, tuple[float, float]]:
    at = str(t0 / 1000 + 30)
    cases = {
        "instant sum by": ("/api/v1/query", {"query": "sum by (s) (bk_direct)", "time": at}),
        "instant rate": ("/api/v1/query", {"query": "sum(rate(bk_direct[1m]))", "time": at}),
        "range 60 steps": ("/api/v1/query_range", {"query": "sum(bk_direct)", "start": str(t0 / 1000),
                                                   "end": str(t0 / 1000 + 59), "step": "1"}),
    }
    out = {}
    with httpx.Client(timeout=60) as c:
        for label, (path, params) in cases.items():
            ts = []
            for _ in range(n):
                s = time.perf_counter()
                r = c.get(url + path, params=params)
                ts.append((time.perf_counter() - s) * 1000)
                assert r.status_code == 200 and r.json()["data"]["result"], r.text
            ts.sort()
            out[label] = (statistics.median(ts), ts[int(len(ts) * 0.95) - 1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--queries", type=int, default=50)
    args = ap.parse_args()
    vm_bin = shutil.which("victoria-metrics")
    if vm_bin is None:
        sys.exit("victoria-metrics is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="bench-backend-"))
    vport, pport = free_port(), free_port()
    vm, pw = f"http://127.0.0.1:{vport}", f"http://127.0.0.1:{pport}"
    procs = [subprocess.Popen([vm_bin, f"-storageDataPath={tmp / 'vm'}", f"-httpListenAddr=127.0.0.1:{vport}",
                               "-retentionPeriod=100y", "-search.latencyOffset=0s", "-loggerLevel=ERROR"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    cfg = tmp / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({"kube": {"enabled": False}, "backends": {"metrics": {
        "type": "prometheus-api", "write_url": vm + "/api/v1/write", "query_url": vm}}}))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "pitwall.cli.main", "server", "--data-dir", str(tmp / "pw"), "--listen",
         f"127.0.0.1:{pport}", "--config", str(cfg)],
        env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        wait(vm, "/health")
        wait(pw, "/-/ready")
        t0 = (int(time.time()) - 7200) * 1000
        n = args.requests * args.series * args.points
        print(f"ingest: {args.requests} requests x {args.series} series x {args.points} points = {n:,} samples")
        p_acked, p_done = ingest(pw + "/api/v1/write", vm, "bk_pitwall", args, t0)
        print(f"  through pitwall: acked {p_acked:,.0f} samples/s, delivered+searchable {p_done:,.0f} samples/s")
        d_acked, d_done = ingest(vm + "/api/v1/write", vm, "bk_direct", args, t0)
        print(f"  straight into VM: acked {d_acked:,.0f} samples/s, searchable {d_done:,.0f} samples/s")
        print(f"  ratio through pitwall / direct: acked {p_acked / d_acked:.2f}x, searchable {p_done / d_done:.2f}x")
        via, direct = latency(pw, args.queries, t0), latency(vm, args.queries, t0)
        print(f"query latency over {args.requests * args.series:,} series, {args.queries} runs (p50 / p95 ms):")
        for k in via:
            print(f"  {k:16} through pitwall {via[k][0]:6.1f} / {via[k][1]:6.1f}   "
                  f"direct {direct[k][0]:6.1f} / {direct[k][1]:6.1f}")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
