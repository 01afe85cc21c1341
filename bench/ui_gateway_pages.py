"""Server time of the API gateway pages with N consumers: an hour of Kong's series (each consumer on two of
five routes, codes 200/404/429/500, latency histograms, bandwidth) written by the gateway's own
``GatewayStats`` into a ``MetricStore`` (a flush a minute on a set clock), the consumers in a loaded
declarative config; then the median and worst time of ``/gateway`` and of a consumer's page, each requested
R times in process over ASGI.

    .venv/bin/python bench/ui_gateway_pages.py [--consumers 200] [--rounds 20]

No browser (``bench/ui_first_paint.py`` measures paint). Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
from fastapi import FastAPI

from pitwall.metrics import Engine, TargetsSnapshot, local_instant, local_range
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore
from pitwall.traffic.gateway.declarative import load_declarative
from pitwall.traffic.gateway.stats import UPSTREAM_LATENCY_BUCKETS, GatewayStats
from pitwall.ui.queries import MetricsView
from pitwall.ui.routes import ui_router
from pitwall.ui.settings import UISettings
from pitwall.ui.web import UIDeps

ROUTES = [f"r{i}" for i in range(5)]
WS = ("workspace", "default")


def _config(n: int) -> dict[str, Any]:
    return {"_format_version": "3.0",
            "services": [{"name": "api", "url": "http://127.0.0.1:9", "routes": [
                {"name": r, "paths": [f"/{r}"]} for r in ROUTES]}],
            "consumers": [{"username": f"c{i:04d}", "keyauth_credentials": [{"key": f"k{i}"}],
                           "acls": [{"group": f"g{i % 7}"}]} for i in range(n)]}


def _traffic(stats: GatewayStats, n: int, rng: random.Random) -> None:
    """A minute of requests: each consumer on its two routes."""
    for i in range(n):
        c = f"c{i:04d}"
        for r in (ROUTES[i % 5], ROUTES[(i + 1) % 5]):
            for code, k in (("200", 30), ("404", 2), ("429", 1 if i % 3 == 0 else 0), ("500", 1)):
                if k:
                    src = "kong" if code == "429" else "service"
                    stats.inc("kong_http_requests_total", (("code", code), ("consumer", c), ("route", r),
                                                           ("service", "api"), ("source", src), WS), k)
            lat = (("consumer", c), ("route", r), ("service", "api"), WS)
            for _ in range(4):
                stats.observe("kong_request_latency_ms", lat, rng.expovariate(1 / 40), UPSTREAM_LATENCY_BUCKETS)
            base = (("consumer", c), ("route", r), ("service", "api"))
            stats.inc("kong_bandwidth_bytes", (*base, ("direction", "ingress"), WS), 3000)
            stats.inc("kong_bandwidth_bytes", (*base, ("direction", "egress"), WS), 40_000)


async def _time(c: httpx.AsyncClient, path: str, rounds: int) -> tuple[float, float]:
    ms = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = await c.get(path)
        ms.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (path, r.status_code)
    return statistics.median(ms), max(ms)


async def main(n: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = MetricStore(TelemetryDB(root / "t.duckdb"), root / "wal", fsync=False)
        await store.start()
        try:
            now = [time.time() - 3600]
            stats = GatewayStats(store, clock=lambda: now[0])
            rng = random.Random(1)
            samples = 0
            t0 = time.perf_counter()
            for _ in range(61):
                _traffic(stats, n, rng)
                samples += await stats.flush()
                now[0] += 60
            print(f"seeded {samples} samples ({len(stats.counters) + len(stats.histograms)} series) in "
                  f"{time.perf_counter() - t0:.1f} s")
            engine = Engine()
            deps = UIDeps(settings=UISettings(), metrics=MetricsView(local_instant(engine, store),
                                                                     local_range(engine, store), store.querier),
                          targets=lambda: TargetsSnapshot([], [], {}), traces=None, logs=None, alerts=None,
                          dashboards=cast(Any, None),
                          gateway=cast(Any, SimpleNamespace(state=load_declarative(_config(n)))))
            app = FastAPI()
            app.include_router(ui_router(deps))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b",
                                         timeout=120) as c:
                print(f"{n} consumers, {len(ROUTES)} routes, {rounds} requests each (median / worst ms):")
                for label, path in (("/gateway (1h)", "/gateway?from=now-1h&to=now"),
                                    ("/gateway sorted by p99", "/gateway?from=now-1h&to=now&sort=-p99"),
                                    ("consumer page (1h)", "/gateway/consumers/c0042?from=now-1h&to=now")):
                    med, worst = await _time(c, path, rounds)
                    print(f"  {label:24} {med:7.1f} {worst:7.1f}")
        finally:
            await store.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--consumers", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    asyncio.run(main(a.consumers, a.rounds))
