"""Traces bench: attribute search in sealed blocks, and bytes per span on disk.

``--spans`` realistic spans (``traces_ingest.Encoder``: 15 span and 5 resource
attributes, 5% errors, 500 distinct URLs) are appended straight into a
``TraceStore`` (WAL, head, 200k-span flushes into 2 h blocks; no HTTP), the
store is closed (everything flushed and checkpointed), and the DuckDB file's
size gives bytes per span. The store is reopened and each search runs
through ``TraceQuery.find_trace_ids`` (the one path native search, Jaeger's
tag search, Tempo's ``/api/search`` and TraceQL's store filters share),
median of ``--repeat`` runs, with the attribute index and with it disabled
(``--no-index`` at load writes blocks without it; the search then scans).

Usage: ``python bench/traces_search.py [--spans 1000000] [--no-index]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from traces_ingest import SPANS_PER_REQ, Encoder

SEARCHES = {
    "service + http.status_code>=500": {"service": "svc3", "attrs": [("http.status_code", ">=", "500")]},
    "http.url=... alone": {"attrs": [("http.url", "=", "http://svc1:8080/api/v1/items/42")]},
    "service + operation + min duration": {"service": "svc3", "name": "op7", "min_duration_ns": 50_000_000},
}


async def _load(data_dir: Path, n_req: int, t0: int, span_ns: int, index: bool) -> float:
    from pitwall.storage.duckdb import TelemetryDB
    from pitwall.storage.traces_store import TraceStore
    from pitwall.traces.ingest import otlp  # first: pitwall.traces imports the store
    from pitwall.traces.ingest.common import IngestLimits

    enc = Encoder()
    db = TelemetryDB(data_dir / "telemetry.duckdb")
    store = TraceStore(db, data_dir / "wal", retention_ns=0, fsync=False)
    if not index and hasattr(store, "attr_index"):
        store.attr_index = False
    await store.start()
    limits = IngestLimits()
    s = time.perf_counter()
    try:
        for i in range(n_req):
            body, _ids = enc.request(i, t0, span_ns)
            await store.append("default", otlp.decode(body, otlp.PROTOBUF, limits).to_table("default"))
            if i % 250 == 249:
                print(f"  appended {(i + 1) * SPANS_PER_REQ:,} spans", flush=True)
    finally:
        await store.stop()
        db.execute("CHECKPOINT")
        db.close()
    return time.perf_counter() - s


def _search(data_dir: Path, repeat: int) -> None:
    from pitwall.storage.duckdb import TelemetryDB
    from pitwall.storage.traces_store import TraceStore
    from pitwall.traces.query import AttrFilter, SpanFilter, TraceQuery

    db = TelemetryDB(data_dir / "telemetry.duckdb")
    store = TraceStore(db, data_dir / "wal", retention_ns=0, fsync=False)
    asyncio.run(_start(store))
    q = TraceQuery(store)
    now = time.time_ns()
    (tbl,) = db.execute("SELECT tbl FROM traces_blocks ORDER BY block LIMIT 1").fetchone() or ("",)
    ids = [r[0] for r in db.execute(f"SELECT DISTINCT trace_id FROM {tbl} USING SAMPLE 200 ROWS").fetchall()]
    lat = []
    for tid in ids:
        s = time.perf_counter()
        q.trace("default", tid)
        lat.append((time.perf_counter() - s) * 1000)
    lat.sort()
    print(f"  trace by id ({len(ids)} lookups in the store)  p50 {statistics.median(lat):.1f} ms  "
          f"p99 {lat[int(len(lat) * 0.99)]:.1f} ms", flush=True)
    for label, spec in SEARCHES.items():
        attrs = tuple(AttrFilter(*a) for a in spec.get("attrs", []))  # type: ignore[misc]
        f = SpanFilter(start_ns=now - 4 * 3600 * 10**9, end_ns=now, service=str(spec.get("service", "")),
                       name=str(spec.get("name", "")), attrs=attrs,
                       min_duration_ns=spec.get("min_duration_ns"))  # type: ignore[arg-type]
        lat = []
        n = 0
        for _ in range(repeat):
            s = time.perf_counter()
            n = len(q.find_trace_ids("default", f, 20))
            lat.append((time.perf_counter() - s) * 1000)
        print(f"  search {label:36s} median {statistics.median(lat):8.1f} ms  min {min(lat):8.1f} ms "
              f"({n} traces)", flush=True)
    db.close()


async def _start(store: object) -> None:
    from pitwall.storage.traces_store import TraceStore

    assert isinstance(store, TraceStore)
    await asyncio.to_thread(store._open)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-index", action="store_true", help="write blocks without the attribute index")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pitwall-bench-traces-search"))
    ap.add_argument("--reuse", action="store_true", help="search the data a previous run left")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    data_dir = args.workdir / "data"
    if not args.reuse:
        shutil.rmtree(args.workdir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        n_req = args.spans // SPANS_PER_REQ
        span_ns = 3 * 3600 * 10**9 // max(1, args.spans)  # all spans start within the last 3 hours
        t0 = time.time_ns() - 3 * 3600 * 10**9
        took = asyncio.run(_load(data_dir, n_req, t0, span_ns, not args.no_index))
        size = (data_dir / "telemetry.duckdb").stat().st_size
        print(f"  loaded {args.spans:,} spans in {took:.0f} s ({args.spans / took:,.0f} spans/s); "
              f"bytes per span on disk {size / args.spans:.1f}", flush=True)
    _search(data_dir, args.repeat)


if __name__ == "__main__":
    main()
