"""How long an A/B report takes over HTTP (p50/p95 per request), on a live server with the seeded counts.

    .venv/bin/python bench/releases_abtest.py [--requests 200]

Three ways in: ``GET /api/releases/v1/abtest`` with two queries split by a label, ``POST`` of JSON with a query
pair per variant (four queries), and the page ``/releases/abtest`` (the split, rendered). The report's own
arithmetic is microseconds; the figures are the queries and the HTTP round trip. No peer computes the same
report over HTTP (R's ``prop.test`` is the reference for the numbers, not the speed). Not part of the tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for the live server and the seed

from tests.conftest import LiveServer
from tests.releases.test_abtest_cli import COUNTS, _push

from pitwall.config import load_settings

SPLIT = {"numerator": "sum by (variant) (shop_orders)", "denominator": "sum by (variant) (shop_visits)"}
PER_VARIANT = {"variants": [{"name": v, "successes": f'sum(shop_orders{{variant="{v}"}})',
                             "trials": f'sum(shop_visits{{variant="{v}"}})'} for v in COUNTS]}


def _measure(call: Callable[[], httpx.Response], n: int) -> tuple[float, float]:
    for _ in range(10):  # warm-up
        assert call().status_code == 200
    ms = []
    for _ in range(n):
        t = time.perf_counter()
        assert call().status_code == 200
        ms.append((time.perf_counter() - t) * 1000)
    ms.sort()
    return statistics.median(ms), ms[int(n * 0.95) - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    n = ap.parse_args().requests
    data = Path(tempfile.mkdtemp(prefix="abtest-bench-"))
    srv = LiveServer(load_settings(data_dir=data / "data", listen="127.0.0.1:0", storage={"fsync": False},
                                   kube={"enabled": False}))
    srv.start()
    try:
        _push(srv.url)
        with httpx.Client(base_url=srv.url) as h:
            ways = {"GET, split by label (2 queries)": lambda: h.get("/api/releases/v1/abtest", params=SPLIT),
                    "POST JSON, per variant (4 queries)": lambda: h.post("/api/releases/v1/abtest", json=PER_VARIANT),
                    "page /releases/abtest (2 queries)": lambda: h.get("/releases/abtest", params=SPLIT)}
            for name, call in ways.items():
                p50, p95 = _measure(call, n)
                print(f"{name:<40} p50 {p50:6.2f} ms   p95 {p95:6.2f} ms   ({n} requests)")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
