"""Logs and traces on a remote engine (``backends.logs``, ``backends.traces``): through pitwall vs direct.

    .venv/bin/python bench/backend_logs_traces.py [--requests 100] [--lines 100] [--traces 300] [--queries 30]

Starts two ``pitwall server`` subprocesses on loopback (fsync on): the remote one plays Loki and Tempo,
the front one has ``backends.logs`` (loki-api) and ``backends.traces`` (otlp+tempo) on it. Ingest:
``--requests`` Loki JSON pushes of ``--lines`` lines, and ``--traces`` OTLP/JSON exports of 5 spans, one
client, through the front (acknowledged at its WAL; then until the forwarding queue delivered all of it,
polled at the remote) and straight into the remote. Query: p50/p95 of LogQL and Tempo reads through the
front (relayed) and directly. Not part of the tests; figures in docs/status.md ("Beyond one machine").
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data: Path, cfg: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    data.mkdir(parents=True)
    (data / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "pitwall.cli.main", "server", "--data-dir", str(data / "d"),
                             "--listen", f"127.0.0.1:{port}", "--config", str(data / "cfg.yaml")],
                            stdout=subprocess.DEVNULL, stderr=open(data / "log", "wb"))  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def until(fn: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.1)


def log_count(url: str, job: str, t0: int) -> int:
    r = httpx.get(url + "/loki/api/v1/query", params={"query": f'sum(count_over_time({{job="{job}"}}[1h]))',
                                                      "time": str(t0 + 1800 * 10**9)}, timeout=60).json()
    res = r["data"]["result"]
    return int(res[0]["value"][1]) if res else 0


def logs_ingest(push: str, remote: str, job: str, args: argparse.Namespace, t0: int) -> tuple[float, float]:
    bodies = [{"streams": [{"stream": {"job": job, "w": str(i % 8)}, "values": [
        [str(t0 + (i * args.lines + k) * 1000), f"level=info req={i} n={k} msg=\"hello from {job}\""]
        for k in range(args.lines)]}]} for i in range(args.requests)]
    want = args.requests * args.lines
    t = time.perf_counter()
    with httpx.Client(timeout=60) as c:
        for b in bodies:
            c.post(push + "/loki/api/v1/push", json=b).raise_for_status()
    acked = time.perf_counter() - t
    until(lambda: log_count(remote, job, t0) >= want)
    return want / acked, want / (time.perf_counter() - t)


def trace_doc(tid: str, now: int) -> dict[str, Any]:
    spans = [{"traceId": tid, "spanId": f"{i + 1:016x}", "name": f"op{i}", "kind": 2,
              "startTimeUnixNano": str(now + i), "endTimeUnixNano": str(now + 10**6 + i)} for i in range(5)]
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {
        "stringValue": "bench"}}]}, "scopeSpans": [{"spans": spans}]}]}


def traces_ingest(front: str, remote: str, args: argparse.Namespace) -> tuple[float, float, list[str]]:
    now = time.time_ns()
    ids = [os.urandom(16).hex() for _ in range(args.traces)]
    t = time.perf_counter()
    with httpx.Client(timeout=60) as c:
        for tid in ids:
            c.post(front + "/v1/traces", json=trace_doc(tid, now)).raise_for_status()
    acked = time.perf_counter() - t
    with httpx.Client(timeout=60) as c:
        until(lambda: c.get(f"{remote}/api/v2/traces/{ids[-1]}").status_code == 200)
    return 5 * len(ids) / acked, 5 * len(ids) / (time.perf_counter() - t), ids


def latency(url: str, path: str, params: dict[str, str], n: int) -> tuple[float, float]:
    out = []
    with httpx.Client(timeout=60) as c:
        c.get(url + path, params=params).raise_for_status()  # warm: the first run fills caches on both sides
        for _ in range(n):
            t = time.perf_counter()
            c.get(url + path, params=params).raise_for_status()
            out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.95) - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--lines", type=int, default=100)
    ap.add_argument("--traces", type=int, default=300)
    ap.add_argument("--queries", type=int, default=30)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-"))
    base = {"kube": {"enabled": False}, "otlp_grpc": {"enabled": False}}
    remote, r_url = start(tmp / "remote", base)
    front, f_url = start(tmp / "front", {**base, "backends": {
        "logs": {"type": "loki-api", "push_url": r_url + "/loki/api/v1/push", "query_url": r_url},
        "traces": {"type": "otlp+tempo", "otlp_url": r_url + "/v1/traces", "query_url": r_url}}})
    try:
        t0 = time.time_ns() - 3600 * 10**9
        via = logs_ingest(f_url, r_url, "via", args, t0)
        direct = logs_ingest(r_url, r_url, "direct", args, t0)
        print(f"logs ingest, entries/s: through pitwall acked {via[0]:,.0f}, delivered {via[1]:,.0f}; "
              f"direct {direct[0]:,.0f}")
        tv = traces_ingest(f_url, r_url, args)
        td = traces_ingest(r_url, r_url, args)
        print(f"traces ingest, spans/s: through pitwall acked {tv[0]:,.0f}, delivered {tv[1]:,.0f}; "
              f"direct {td[0]:,.0f}")
        rng = {"start": str(t0), "end": str(t0 + 3600 * 10**9)}
        queries = [
            ("logs query_range (limit 100)", "/loki/api/v1/query_range", {**rng, "query": '{job="via"} |= "n=7"',
                                                                           "limit": "100"}),
            ("logs metric query", "/loki/api/v1/query_range", {**rng, "step": "60",
                                                               "query": 'sum by (w) (count_over_time({job="via"}[5m]))'}),
            ("logs labels", "/loki/api/v1/labels", rng),
            ("tempo trace by id", f"/api/v2/traces/{tv[2][0]}", {}),
            ("tempo search", "/api/search", {"q": '{ resource.service.name = "bench" }', "limit": "20"}),
        ]
        for name, path, params in queries:
            v, d = latency(f_url, path, params, args.queries), latency(r_url, path, params, args.queries)
            print(f"{name}: through pitwall p50 {v[0]:.1f} ms p95 {v[1]:.1f} ms; direct p50 {d[0]:.1f} ms "
                  f"p95 {d[1]:.1f} ms")
    finally:
        for p in (front, remote):
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)


if __name__ == "__main__":
    main()
