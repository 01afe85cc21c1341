"""Server time of the UI's service map over a mesh of N services (default 50), in process.

Each service ``svc-i`` of namespace ``bench`` calls the next ``--fanout`` services (HTTP: 200s and 503s, the
duration histogram with Istio's buckets, under both reporters as pitwall's mesh writes them), callers from
outside the mesh send to ``svc-0``, and half the services also send spans; a sample every 10 s over the
page's ten minutes goes into a real ``MetricStore``, the spans into a real ``TraceStore``. Then the page
(``/services``) and its JSON (``/api/ui/v1/services/graph``) are fetched ``--runs`` times through the UI's
router: median and worst server time, per source mode. It measures; it never fails on a slow figure.

    .venv/bin/python bench/ui_service_map.py [--services 50] [--fanout 2] [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from tests.ui.app import ui_client  # noqa: E402

from pitwall.core.labels import labels_from_dict  # noqa: E402
from pitwall.metrics import Engine, SampleBatch, TargetsSnapshot, local_instant, local_range  # noqa: E402
from pitwall.storage.duckdb import TelemetryDB  # noqa: E402
from pitwall.storage.metrics import MetricStore  # noqa: E402
from pitwall.storage.traces_store import TraceStore  # noqa: E402
from pitwall.traces.model import SpanColumns, tkey_of  # noqa: E402
from pitwall.traces.query import TraceQuery  # noqa: E402
from pitwall.ui.queries import MetricsView  # noqa: E402
from pitwall.ui.settings import UISettings  # noqa: E402
from pitwall.ui.traces_view import TracesView  # noqa: E402
from pitwall.ui.web import UIDeps  # noqa: E402

END_MS = 1_780_000_000_000
SPAN_S = 600
BUCKETS = ("0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000", "30000",
           "60000", "300000", "600000", "1800000", "3600000", "+Inf")


def _peer(side: str, name: str) -> dict[str, str]:
    ns = "unknown" if name == "unknown" else "bench"
    return {f"{side}_workload": name, f"{side}_workload_namespace": ns, f"{side}_canonical_service": name}


def edges(n: int, fanout: int) -> list[tuple[str, str]]:
    out = [("unknown", "svc-0")]
    for i in range(n):
        out += [(f"svc-{i}", f"svc-{j}") for j in range(i + 1, min(i + 1 + fanout, n))]
    return out


def rows(n: int, fanout: int) -> list[Any]:
    out = []
    times = [END_MS - SPAN_S * 1000 + 5000 + 10_000 * k for k in range(SPAN_S // 10)]
    for src, dst in edges(n, fanout):
        for reporter in ("source", "destination"):
            for code, per_step in (("200", 50.0), ("503", 1.0)):
                lb = {**_peer("source", src), **_peer("destination", dst), "destination_service_name": dst,
                      "destination_service_namespace": "bench", "request_protocol": "http", "reporter": reporter,
                      "response_code": code, "grpc_response_status": "", "response_flags": "-"}
                for name, le in [("istio_requests_total", None)] + [
                        ("istio_request_duration_milliseconds_bucket", b) for b in BUCKETS]:
                    share = 1.0 if le is None else min(1.0, BUCKETS.index(le) / 8)
                    labels = labels_from_dict({**lb, "__name__": name, **({"le": le} if le else {})})
                    out += [(labels, t, 10 + per_step * share * k) for k, t in enumerate(times)]
    return out


def spans(n: int) -> SpanColumns:
    c = SpanColumns()
    traced = [f"svc-{i}" for i in range(0, n, 2)]
    for t in range(200):
        trace = f"{t + 1:032x}"
        start = (END_MS - 300_000 + t * 1000) * 1_000_000
        for d, svc in enumerate(traced[:8]):
            for col, v in (("tkey", tkey_of(trace)), ("trace_id", trace), ("span_id", f"{t:08x}{d:08x}"),
                           ("parent_id", f"{t:08x}{d - 1:08x}" if d else ""), ("service", svc), ("name", "op"),
                           ("kind", 2), ("start_ns", start + d * 1000), ("duration_ns", 1_000_000),
                           ("status_code", 0), ("status_message", ""), ("remote_service", ""), ("flags", 1),
                           ("attributes", "{}"), ("resource", json.dumps({"service.name": svc})), ("scope", "{}"),
                           ("events", "[]"), ("links", "[]")):
                getattr(c, col).append(v)
    return c


async def fetch(c: httpx.AsyncClient, path: str, params: dict[str, str], runs: int) -> list[float]:
    took = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = await c.get(path, params=params)
        took.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text[:300]
    return took


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        metrics = MetricStore(TelemetryDB(d / "m.duckdb"), d / "mwal", fsync=False, block_ms=60_000)
        tdb = TelemetryDB(d / "t.duckdb")
        store = TraceStore(tdb, d / "twal", retention_ns=0, fsync=False)
        await metrics.start()
        await store.start()
        try:
            batch = rows(args.services, args.fanout)
            await metrics.append("default", SampleBatch.from_rows(batch))
            await store.append("default", spans(args.services).to_table("default"))
            engine = Engine()
            mv = MetricsView(local_instant(engine, metrics), local_range(engine, metrics), metrics.querier)
            deps = UIDeps(settings=UISettings(), metrics=mv, targets=lambda: TargetsSnapshot([], [], {}),
                          traces=TracesView(TraceQuery(store)), logs=None, alerts=None,
                          dashboards=None)  # type: ignore[arg-type]
            rng = {"from": str(END_MS - SPAN_S * 1000), "to": str(END_MS)}
            print(f"{args.services} services, {len(edges(args.services, args.fanout))} edges, "
                  f"{len(batch) // (SPAN_S // 10)} series, {len(batch)} samples; {args.runs} runs each")
            async with ui_client(deps) as c:
                g = (await c.get("/api/ui/v1/services/graph", params=rng)).json()
                print(f"graph: {len(g['nodes'])} nodes, {len(g['edges'])} edges, hidden {g['hidden']}")
                for path in ("/services", "/api/ui/v1/services/graph"):
                    for mode in ("both", "mesh", "traces"):
                        took = await fetch(c, path, {**rng, "sources": mode}, args.runs)
                        print(f"{path:28} sources={mode:6}  median {statistics.median(took):7.1f} ms  "
                              f"worst {max(took):7.1f} ms")
        finally:
            await store.stop()
            await metrics.stop()
            tdb.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--fanout", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    asyncio.run(main(ap.parse_args()))
