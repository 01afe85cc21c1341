"""Traces bench: OTLP protobuf ingest, trace by id and search at 1M and 10M spans, RSS, bytes/span.

No tracing backend is installable here to run beside pitwall, so figures are
printed beside the issue's bars (30,000 spans/s in one process; trace by id
p99 < 50 ms at 10M spans stored) as ratios.

1. ``--spans`` (1M) realistic spans go over HTTP (OTLP/HTTP protobuf, 1000
   spans a request, 15 span attributes, 5 resource attributes, an exception
   event on 30% of spans) from this process's threads into a separate
   ``pitwall server`` process; ingest rate = spans / wall time, and spans per
   server CPU-second (the figure that survives a loaded machine).
2. Trace by id (``/api/v2/trace/{id}``, Zipkin JSON) and search latencies.
3. The server stops; ``--total`` - ``--spans`` more spans are appended straight
   into its data directory with the server's own decoder and store
   (``TraceStore.append``: WAL, head, flushes; no HTTP, which would take too
   long), the server restarts on it, and step 2 runs again.

Usage: ``python bench/traces_ingest.py [--spans 1000000] [--total 10000000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Server, free_port, ratio, wait_ready

BAR_SPANS_PER_S = 30_000
BAR_P99_MS = 50.0
SPANS_PER_REQ = 1000
SPANS_PER_TRACE = 10
SERVICES = 5


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _kv(key: str, value: str | int | bool) -> bytes:
    if isinstance(value, bool):
        av = _varint(2 << 3) + _varint(int(value))
    elif isinstance(value, int):
        av = _varint(3 << 3) + _varint(value & (2**64 - 1))
    else:
        av = _ld(1, value.encode())
    return _ld(1, key.encode()) + _ld(2, av)


class Encoder:
    """Hand-rolled OTLP protobuf encoding: the constant parts of a span are encoded once."""

    def __init__(self) -> None:
        self.names = [_ld(5, f"op{i}".encode()) for i in range(20)]
        self.static = [[b"".join(_ld(9, _kv(k, v)) for k, v in (
            ("http.method", "GET"), ("http.route", f"/api/v1/items/{i}"), ("net.peer.name", "db"),
            ("http.scheme", "http"), ("http.target", f"/api/v1/items/{i}"), ("http.flavor", "1.1"),
            ("http.user_agent", "python-requests/2.31"), ("net.host.name", f"svc{s}"), ("thread.name", "worker-3"),
            ("code.function", "handle"), ("code.namespace", "app.views"), ("net.peer.port", 5432)))
            for i in range(SPANS_PER_TRACE)] for s in range(SERVICES)]
        self.urls = [[_ld(9, _kv("http.url", f"http://svc{s}:8080/api/v1/items/{n}")) for n in range(100)]
                     for s in range(SERVICES)]
        self.status = [_ld(9, _kv("http.status_code", c)) for c in (200, 500)]
        self.hit = [_ld(9, _kv("cache.hit", b)) for b in (False, True)]
        self.error = _ld(15, _ld(2, b"boom") + _varint(3 << 3) + _varint(2))
        ev_attrs = _ld(3, _kv("exception.type", "ValueError")) + _ld(3, _kv("exception.message", "bad value"))
        self.event_tail = _ld(2, b"exception") + ev_attrs
        self.resources = [_ld(1, b"".join(_ld(1, _kv(k, v)) for k, v in (
            ("service.name", f"svc{s}"), ("host.name", f"host-{s}"), ("deployment.environment", "prod"),
            ("telemetry.sdk.language", "python"), ("service.version", "1.2.3")))) for s in range(SERVICES)]
        self.scope = _ld(1, _ld(1, b"bench") + _ld(2, b"1.0"))

    def request(self, req_no: int, t0: int, span_ns: int) -> tuple[bytes, list[str]]:
        """One request of SPANS_PER_REQ spans in SPANS_PER_REQ // SPANS_PER_TRACE traces, and their ids."""
        rng = random.Random(req_no)
        ids: list[str] = []
        groups = []
        for s in range(SERVICES):
            spans = []
            for t in range(SPANS_PER_REQ // SPANS_PER_TRACE // SERVICES):
                tid = rng.getrandbits(128).to_bytes(16, "big")
                ids.append(tid.hex())
                start = t0 + (req_no * SPANS_PER_REQ + t * SPANS_PER_TRACE) * span_ns
                for i in range(SPANS_PER_TRACE):
                    st = start + i * 10_000
                    parts = [_ld(1, tid), _ld(2, struct.pack(">Q", rng.getrandbits(63) | 1))]
                    if i:
                        parts.append(_ld(4, struct.pack(">Q", i)))
                    err = rng.random() < 0.05
                    parts += [self.names[rng.randrange(20)], _varint(6 << 3) + _varint(2 if i == 0 else 3),
                              b"\x39" + struct.pack("<Q", st),
                              b"\x41" + struct.pack("<Q", st + rng.randrange(10**5, 10**8)),
                              self.static[s][i], self.urls[s][rng.randrange(100)], self.status[err],
                              self.hit[rng.random() < 0.5]]
                    if rng.random() < 0.3:
                        parts.append(_ld(11, b"\x09" + struct.pack("<Q", st + 5000) + self.event_tail))
                    if err:
                        parts.append(self.error)
                    spans.append(_ld(2, b"".join(parts)))
            groups.append(_ld(1, self.resources[s] + _ld(2, self.scope + b"".join(spans))))
        return b"".join(groups), ids


class _Reopened(Server):
    """``pitwall server`` on the data directory a previous run left (``Server`` starts afresh)."""

    def __init__(self, workdir: Path) -> None:
        self.kind = "pitwall"
        self.dir = workdir / "pitwall"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.dir / "server.log", "ab")  # noqa: SIM115 - lives as long as the server
        cmd = [sys.executable, "-m", "pitwall.cli.main", "server", "--data-dir", str(self.dir / "data"),
               "--listen", f"127.0.0.1:{self.port}", "--retention", "100y"]
        env = dict(os.environ, PITWALL_LOG_LEVEL="warning")
        env.setdefault("PITWALL_OTLP_GRPC__LISTEN", "127.0.0.1:0")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=env)
        wait_ready(self.url, self.proc, timeout=600)


def _percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


SEARCHES = {
    "service+op+duration+range": {"service": "svc3", "operation": "op7", "min_duration": "50ms"},
    "service+op+attr": {"service": "svc3", "operation": "op7", "attr": "http.status_code>=500"},
    "attr only": {"attr": "http.url=http://svc1:8080/api/v1/items/42"},
}


def _measure(url: str, ids: list[str], lookups: int, label: str) -> dict[str, float]:
    rng = random.Random(7)
    lat: list[float] = []
    out: dict[str, float] = {}
    with httpx.Client(timeout=120) as c:
        for tid in rng.sample(ids, min(lookups, len(ids))):
            s = time.perf_counter()
            r = c.get(f"{url}/api/v2/trace/{tid}")
            lat.append((time.perf_counter() - s) * 1000)
            assert r.status_code == 200 and len(r.json()) == SPANS_PER_TRACE, (tid, r.status_code)
        out["p50"], out["p99"] = statistics.median(lat), _percentile(lat, 0.99)
        for name, params in SEARCHES.items():
            slat = []
            n = 0
            for _ in range(5):
                s = time.perf_counter()
                r = c.get(f"{url}/api/traces/v1/search", params={**params, "since": "4h", "limit": "20"})
                slat.append((time.perf_counter() - s) * 1000)
                r.raise_for_status()
                n = len(r.json()["traces"])
            out[name] = statistics.median(slat)
            print(f"  [{label}] search {name:28s} median {out[name]:8.1f} ms ({n} traces)", flush=True)
    print(f"  [{label}] trace by id p50 {out['p50']:.1f} ms p99 {out['p99']:.1f} ms "
          f"(bar p99 {BAR_P99_MS} ms, ratio {ratio(out['p99'], BAR_P99_MS)})", flush=True)
    return out


async def _bulk_load(data_dir: Path, enc: Encoder, first_req: int, n_req: int, t0: int, span_ns: int,
                     ids: list[str]) -> None:
    from pitwall.storage.duckdb import TelemetryDB
    from pitwall.storage.traces_store import TraceStore
    from pitwall.traces.ingest import otlp  # first: pitwall.traces imports the store
    from pitwall.traces.ingest.common import IngestLimits

    db = TelemetryDB(data_dir / "telemetry.duckdb")
    store = TraceStore(db, data_dir / "wal" / "traces", retention_ns=0, fsync=False)
    await store.start()
    limits = IngestLimits()
    try:
        for i in range(first_req, first_req + n_req):
            body, got = enc.request(i, t0, span_ns)
            ids.extend(got[::10])
            await store.append("default", otlp.decode(body, otlp.PROTOBUF, limits).to_table("default"))
            if (i - first_req) % 500 == 499:
                print(f"  appended {(i - first_req + 1) * SPANS_PER_REQ:,} spans", flush=True)
    finally:
        await store.stop()
        db.close()


def _reopen(args: argparse.Namespace) -> None:
    import duckdb

    db = duckdb.connect(str(args.workdir / "pitwall" / "data" / "telemetry.duckdb"), read_only=True)
    tables = [r[0] for r in db.execute("SELECT tbl FROM traces_blocks").fetchall()]
    n = sum(db.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables)
    ids = [r[0] for t in tables for r in db.execute(
        f"SELECT DISTINCT trace_id FROM {t} USING SAMPLE {args.lookups} ROWS").fetchall()]
    db.close()
    _measure_restarted(args.workdir, ids, args.lookups, n)


def _measure_restarted(workdir: Path, ids: list[str], lookups: int, n: int) -> _Reopened:
    """Restart the server on the stored ``n`` spans, then time lookups and search; returns it stopped."""
    s = time.perf_counter()
    srv = _Reopened(workdir)
    print(f"  server restarted on {n / 1e6:g}M spans in {time.perf_counter() - s:.1f} s", flush=True)
    try:
        _measure(srv.url, ids, lookups, f"{n / 1e6:g}M")
        rss, peak = srv.rss_mib()
        print(f"  [{n / 1e6:g}M] RSS {rss:.0f} MiB, peak {peak:.0f} MiB", flush=True)
    finally:
        srv.stop()
    return srv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=1_000_000, help="spans sent over HTTP")
    ap.add_argument("--total", type=int, default=10_000_000, help="spans stored for the second round")
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--lookups", type=int, default=300)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pitwall-bench-traces"))
    ap.add_argument("--reopen", action="store_true",
                    help="only measure lookups and search again on the data a previous run left")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    if args.reopen:
        _reopen(args)
        return
    enc = Encoder()
    n_req, total_req = args.spans // SPANS_PER_REQ, args.total // SPANS_PER_REQ
    span_ns = 3 * 3600 * 10**9 // max(1, args.total)  # all spans start within the last 3 hours
    t0 = time.time_ns() - 3 * 3600 * 10**9
    print(f"encoding {n_req} requests of {SPANS_PER_REQ} spans ...", flush=True)
    bodies = [enc.request(i, t0, span_ns) for i in range(n_req)]
    ids = [t for _, got in bodies for t in got]
    srv = Server("pitwall", args.workdir)
    try:
        cpu0 = srv.cpu_seconds()
        nxt = iter(range(n_req))
        lock = threading.Lock()

        def worker() -> None:
            with httpx.Client(timeout=120) as c:
                while True:
                    with lock:
                        i = next(nxt, None)
                    if i is None:
                        return
                    r = c.post(srv.url + "/v1/traces", content=bodies[i][0],
                               headers={"content-type": "application/x-protobuf"})
                    r.raise_for_status()

        start = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        cpu = srv.cpu_seconds() - cpu0
        rate = args.spans / wall
        print(f"OTLP protobuf ingest  {rate:,.0f} spans/s ({args.spans / max(cpu, 1e-9):,.0f} per server "
              f"CPU-second)   bar {BAR_SPANS_PER_S:,}  ratio {ratio(rate, BAR_SPANS_PER_S)}", flush=True)
        bodies.clear()
        time.sleep(2)
        _measure(srv.url, ids, args.lookups, f"{args.spans / 1e6:g}M")
        rss, peak = srv.rss_mib()
        print(f"  [{args.spans / 1e6:g}M] RSS {rss:.0f} MiB, peak {peak:.0f} MiB", flush=True)
    finally:
        srv.stop()
    data_dir = srv.dir / "data"
    print(f"  [{args.spans / 1e6:g}M] bytes per span on disk {srv.disk_bytes() / args.spans:.1f}", flush=True)
    if total_req <= n_req:
        return
    print(f"appending {args.total - args.spans:,} more spans straight into the store ...", flush=True)
    s = time.perf_counter()
    asyncio.run(_bulk_load(data_dir, enc, n_req, total_req - n_req, t0, span_ns, ids))
    print(f"  done in {time.perf_counter() - s:.0f} s", flush=True)
    srv = _measure_restarted(args.workdir, ids, args.lookups, args.total)
    print(f"  [{args.total / 1e6:g}M] bytes per span on disk {srv.disk_bytes() / args.total:.1f}", flush=True)


if __name__ == "__main__":
    main()
