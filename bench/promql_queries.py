"""PromQL query latency: pitwall vs Debian's Prometheus on ../shared/bench's workload.

Two variants, each on fresh servers loaded over remote write (10 samples per
series per request):

- ``30m``: prom_datagen's 10k series x 120 samples, the 10 queries of
  prom_queries.tsv over [T0, T0+1785 s] step 15 s (121 points), as in the
  reference figures;
- ``1d``: the same generator with 5,760 samples per series (one day at 15 s,
  57.6M samples), the same queries over [T0, T0+86400 s] step 60 s (1,441
  points per series).

Prints per-query median ms for both servers, the ratio pitwall/prometheus and
whether the result digests of query_bench.py agree; where they do not, how
many points differ by more than float rounding. Run with `make bench` (not
part of tests).

Known difference: Debian ships Prometheus 2.42, pitwall follows 3.x. In 3.x,
``rate``/``increase`` cap the extrapolation to the window start at half the
average sample interval *before* limiting it to the counter's zero point; 2.x
did it the other way round. Near the start of the data (counters starting
low), windows holding few samples then differ, so rate-based queries can
mismatch 2.42 at their first steps while matching 3.x. ``VARIANTS=30m`` (or ``1d``) runs one variant; ``REPS`` and
``REPS_1D`` set the timed repetitions (default 10 and 3).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import cramjam
import httpx
import numpy as np
from common import SHARED_BENCH, Server, progress, ratio, run_shared

OFFSET_MS = "1234"
DAY_SAMPLES = 5760
DAY_STEP_S = 60
SERIES_PER_REQUEST = 2000
SAMPLES_PER_SERIES_PER_REQUEST = 10
QUERIES = str(SHARED_BENCH / "prom_queries.tsv")


# -- remote write encoding (as prom_remote_write.py, vectorised over samples) --


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


def _ld(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _encode_labels(lab: dict[str, str]) -> bytes:
    return b"".join(_ld(b"\x0a", _ld(b"\x0a", k.encode()) + _ld(b"\x12", lab[k].encode())) for k in sorted(lab))


def _sample_bytes(ts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(series, samples) encoded ``Sample`` messages, each field 0x12 + len + body.

    Every timestamp must have the same varint length (true for any day near now).
    """
    tsv = [_varint(int(t)) for t in ts]
    if len({len(x) for x in tsv}) != 1:
        raise ValueError("timestamps with different varint lengths")
    body_len = 1 + 8 + 1 + len(tsv[0])
    n_series, n_samp = values.shape
    out = np.empty((n_series, n_samp, 2 + body_len), dtype=np.uint8)
    out[:, :, 0] = 0x12
    out[:, :, 1] = body_len
    out[:, :, 2] = 0x09
    out[:, :, 3:11] = values.astype("<f8").view(np.uint8).reshape(n_series, n_samp, 8)
    out[:, :, 11] = 0x10
    out[:, :, 12:] = np.frombuffer(b"".join(tsv), dtype=np.uint8).reshape(n_samp, len(tsv[0]))[None, :, :]
    return out


def build_day_requests(t0: int) -> tuple[list[list[bytes]], int]:
    """Snappy bodies of one day of prom_datagen data: bodies[time chunk][series group]."""
    sys.path.insert(0, str(SHARED_BENCH))
    import prom_datagen  # type: ignore[import-not-found]

    labels, ts, values = prom_datagen.generate(n_samples=DAY_SAMPLES, t0_s=t0)
    lab_bytes = [_encode_labels(lb) for lb in labels]
    n_series, n_samp = values.shape
    spr = SAMPLES_PER_SERIES_PER_REQUEST
    chunks: list[list[bytes]] = []
    for c0 in range(0, n_samp, spr):
        enc = _sample_bytes(ts[c0 : c0 + spr], values[:, c0 : c0 + spr])
        per_series = enc.reshape(n_series, -1)
        groups = []
        for g0 in range(0, n_series, SERIES_PER_REQUEST):
            raw = b"".join(
                _ld(b"\x0a", lab_bytes[s] + per_series[s].tobytes())
                for s in range(g0, min(g0 + SERIES_PER_REQUEST, n_series))
            )
            groups.append(bytes(cramjam.snappy.compress_raw(raw)))
        chunks.append(groups)
    return chunks, int(values.size)


def push(url: str, chunks: list[list[bytes]]) -> float:
    """Send time chunk after time chunk (groups of one chunk in parallel); returns seconds."""
    u = urllib.parse.urlparse(url)
    host, port = u.hostname, u.port
    assert host is not None and port is not None
    n_groups = len(chunks[0])
    errors: list[str] = []
    barrier = threading.Barrier(n_groups)

    def sender(g: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        try:
            for bodies in chunks:
                conn.request("POST", u.path, body=bodies[g], headers={
                    "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                    "X-Prometheus-Remote-Write-Version": "0.1.0"})
                r = conn.getresponse()
                txt = r.read()
                if r.status >= 300 and len(errors) < 5:
                    errors.append(f"{r.status} {txt[:200]!r}")
                # Keep all groups within one time chunk of each other (Prometheus'
                # head rejects samples far behind its newest one).
                barrier.wait()
        finally:
            conn.close()

    t = time.perf_counter()
    threads = [threading.Thread(target=sender, args=(g,)) for g in range(n_groups)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise RuntimeError(f"push to {url} failed: {errors}")
    return time.perf_counter() - t


# -- running the queries ---------------------------------------------------------


def run_queries(srv: Server, start: int, end: int, step: int, reps: int) -> dict[str, dict[str, Any]]:
    res: Any = run_shared("query_bench.py", "--kind", "prom", "--url", srv.url, "--queries", QUERIES,
                          "--start", str(start), "--end", str(end), "--step", str(step), "--reps", str(reps),
                          "--timeout-s", "600")
    rows: list[dict[str, Any]] = res
    return {r["name"]: r for r in rows}


def bench_pair(servers: dict[str, Server], start: int, end: int, step: int, reps: int,
               rounds: int) -> dict[str, dict[str, dict[str, Any]]]:
    """query_bench.py against both servers, alternating ``rounds`` times.

    The machine is shared, so each query keeps its best median over the
    rounds: load that comes and goes then biases neither server.
    """
    best: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in servers}
    for kind, srv in progress([kv for _ in range(rounds) for kv in servers.items()], "query rounds"):
        for name, row in run_queries(srv, start, end, step, reps).items():
            old = best[kind].get(name)
            if old is None or ("median_ms" in row and row["median_ms"] < old.get("median_ms", math.inf)):
                best[kind][name] = row
    # Keep the answers, to explain digest mismatches point by point.
    for kind, srv in servers.items():
        for row in best[kind].values():
            if "error" not in row:
                r = httpx.get(srv.url + "/api/v1/query_range", timeout=600,
                              params={"query": row["query"], "start": start, "end": end, "step": step})
                row["result"] = {json.dumps(x["metric"], sort_keys=True): dict(x["values"])
                                 for x in r.json()["data"]["result"]}
    return best


def compare(p: dict[str, Any], q: dict[str, Any]) -> str:
    """'match', or how many points differ beyond float rounding (rel. 1e-9)."""
    if p["digest"] == q["digest"]:
        return "match"
    a, b = p["result"], q["result"]
    if set(a) != set(b):
        return f"DIFFERENT SERIES ({len(set(a) ^ set(b))} not in both)"
    total = differ = 0
    for key, pts in b.items():
        mine = a[key]
        total += len(pts)
        for t, v in pts.items():
            x, y = float(mine.get(t, "nan")), float(v)
            if t not in mine or not (x == y or (math.isnan(x) and math.isnan(y))
                                     or abs(x - y) <= 1e-9 * max(abs(x), abs(y))):
                differ += 1
    if not differ:
        return "match within 1e-9 (digest differs only by rounding)"
    return f"DIFFER at {differ}/{total} points"


def report(title: str, pit: dict[str, dict[str, Any]], prom: dict[str, dict[str, Any]]) -> None:
    print(f"\n== {title} ==")
    print(f"{'query':28s} {'pitwall ms':>11s} {'prom ms':>9s} {'ratio':>7s} {'series':>7s} {'points':>8s}  digest")
    tot_p = tot_q = 0.0
    for name, q in prom.items():
        p = pit.get(name, {})
        if "error" in p or "error" in q:
            print(f"{name:28s} ERROR pitwall={p.get('error', '-')!s:.100} prometheus={q.get('error', '-')!s:.100}")
            continue
        tot_p += p["median_ms"]
        tot_q += q["median_ms"]
        same = compare(p, q)
        print(f"{name:28s} {p['median_ms']:11.1f} {q['median_ms']:9.1f} {ratio(p['median_ms'], q['median_ms']):>7s}"
              f" {p['series']:7d} {p['points']:8d}  {same}")
    print(f"{'SUM_OF_MEDIANS':28s} {tot_p:11.1f} {tot_q:9.1f} {ratio(tot_p, tot_q):>7s}")


def variant_30m(work: Path, reps: int, rounds: int) -> None:
    t0 = int(time.time()) // 60 * 60 - 3600
    env = {"BENCH_T0": str(t0), "BENCH_OFFSET_MS": OFFSET_MS}
    servers: dict[str, Server] = {}
    try:
        for kind in ("pitwall", "prometheus"):
            srv = servers[kind] = Server(kind, work)
            res = run_shared("prom_remote_write.py", "--url", srv.url + "/api/v1/write",
                             "--samples-per-series-per-req", str(SAMPLES_PER_SERIES_PER_REQUEST), env=env)
            if not res["ok"]:
                raise RuntimeError(f"{kind}: push failed: {res['errors']}")
        results = bench_pair(servers, t0, t0 + 1785, 15, reps, rounds)
    finally:
        for srv in servers.values():
            srv.stop()
    report(f"30 min: 10k series x 120 samples, [T0, T0+1785s] step 15s, best median of {rounds} rounds "
           f"x {reps} reps (BENCH_T0={t0})", results["pitwall"], results["prometheus"])


def variant_1d(work: Path, reps: int, rounds: int) -> None:
    t0 = int(time.time()) // 60 * 60 - 25 * 3600
    os.environ["BENCH_OFFSET_MS"] = OFFSET_MS  # read by prom_datagen.generate
    t = time.perf_counter()
    chunks, n_samples = build_day_requests(t0)
    print(f"\n1d: encoded {n_samples:,} samples in {sum(len(c) for c in chunks)} requests "
          f"({time.perf_counter() - t:.1f} s)")
    servers: dict[str, Server] = {}
    try:
        for kind in ("pitwall", "prometheus"):
            srv = servers[kind] = Server(kind, work)
            secs = push(srv.url + "/api/v1/write", chunks)
            print(f"1d: {kind} ingested in {secs:.1f} s ({n_samples / secs:,.0f} samples/s)")
        del chunks
        results = bench_pair(servers, t0, t0 + 86400, DAY_STEP_S, reps, rounds)
    finally:
        for srv in servers.values():
            srv.stop()
    report(f"1 day: 10k series x {DAY_SAMPLES} samples, [T0, T0+86400s] step {DAY_STEP_S}s "
           f"(1441 points), best median of {rounds} rounds x {reps} reps (BENCH_T0={t0})",
           results["pitwall"], results["prometheus"])


def main() -> None:
    variants = os.environ.get("VARIANTS", "30m,1d").split(",")
    work = Path(tempfile.mkdtemp(prefix="pitwall-qbench-"))
    print(f"workload: ../shared/bench/prom_datagen.py + prom_queries.tsv, BENCH_OFFSET_MS={OFFSET_MS}, work={work}")
    t = time.perf_counter()
    try:
        if "30m" in variants:
            variant_30m(work, int(os.environ.get("REPS", "10")), int(os.environ.get("ROUNDS", "3")))
        if "1d" in variants:
            variant_1d(work, int(os.environ.get("REPS_1D", "3")), int(os.environ.get("ROUNDS_1D", "2")))
    finally:
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal bench time {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
