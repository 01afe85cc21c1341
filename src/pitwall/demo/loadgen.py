"""The demo's shoppers: visits to the frontend following the scenario's daily curve.

Visits arrive as a Poisson process whose rate is
:meth:`Scenario.visits_per_s`. A visit is a home page, one to three product
pages and, about a third of the time, a checkout, with a short think time
between pages. What a visit does is drawn from ``request_rng(seed, "visit",
n)``, so the n-th visit is the same in every run with the same seed; every
request carries a ``request.id`` in W3C baggage, which the services use to
seed their own per-request luck.

The generator exposes its own ``/metrics`` (target rate, simulated hour of
day, requests by page and status) so the traffic curve is visible next to
what the services saw. Concurrency is bounded: when every worker is busy a
visit is dropped and counted, never queued without limit.

Run as ``python -m pitwall.demo.loadgen --target http://127.0.0.1:PORT --port METRICS_PORT``.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from pitwall.demo.scenario import Scenario, epoch_arg, request_rng
from pitwall.demo.services import PRODUCTS

__all__ = ["LoadGenerator", "Page", "Visit", "plan_visit"]

TARGET_RATE = Gauge("loadgen_target_visits_per_second", "Visit rate the daily curve asks for now.")
SHOP_HOUR = Gauge("loadgen_shop_hour", "Simulated hour of the shop's day (0-24).")
OUTAGE = Gauge("loadgen_scenario_payment_outage", "1 while the scenario's payment outage is on.")
VISITS = Counter("loadgen_visits", "Visits started.")
DROPPED = Counter("loadgen_dropped_visits", "Visits not started because every worker was busy.")
REQUESTS = Counter("loadgen_requests", "Requests sent to the frontend.", ["page", "status"])
LATENCY = Histogram("loadgen_request_duration_seconds", "Frontend latency as shoppers see it.", ["page"],
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))

REQUEST_TIMEOUT_S = 8.0
SKUS = sorted(PRODUCTS)
CARDS = ("visa", "mastercard", "amex")


@dataclass(frozen=True)
class Page:
    """One request of a visit."""

    name: str  # home | product | checkout
    method: str
    path: str
    body: dict[str, object] | None = None
    think_s: float = 0.0  # pause before this page


@dataclass(frozen=True)
class Visit:
    number: int
    pages: tuple[Page, ...]


def plan_visit(seed: int, number: int) -> Visit:
    """What visit ``number`` does; a pure function of (seed, number)."""
    rng = request_rng(seed, "visit", str(number))
    pages = [Page("home", "GET", "/")]
    viewed = [rng.choice(SKUS) for _ in range(rng.randint(1, 3))]
    pages += [Page("product", "GET", f"/product/{sku}", think_s=rng.uniform(0.2, 0.8)) for sku in viewed]
    if rng.random() < 0.35:
        cart = sorted(set(viewed))
        body: dict[str, object] = {
            "order_id": f"ord-{seed}-{number}",
            "user": f"user-{rng.randint(1, 500)}",
            "items": [{"sku": sku, "qty": rng.randint(1, 2)} for sku in cart],
            "card": rng.choice(CARDS),
        }
        pages.append(Page("checkout", "POST", "/checkout", body, think_s=rng.uniform(0.3, 1.0)))
    return Visit(number, tuple(pages))


class LoadGenerator:
    """Starts visits on a bounded pool of workers until ``stop`` is set."""

    def __init__(self, target: str, scenario: Scenario, max_concurrency: int = 32) -> None:
        self.target = target.rstrip("/")
        self.scenario = scenario
        self.stop = threading.Event()
        self.slots = threading.BoundedSemaphore(max_concurrency)
        self.pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="visit")
        self.arrivals = random.Random(f"{scenario.seed}:arrivals")

    def run(self) -> None:
        number = 0
        try:
            while not self.stop.is_set():
                now = time.time()
                rate = self.scenario.visits_per_s(now)
                TARGET_RATE.set(rate)
                SHOP_HOUR.set(self.scenario.hour_of_day(now))
                OUTAGE.set(1 if self.scenario.payment_outage(now) else 0)
                # Thinning keeps arrivals Poisson while the rate changes: wait at most 1 s per draw.
                gap = self.arrivals.expovariate(rate)
                if self.stop.wait(min(gap, 1.0)) or gap > 1.0:
                    continue
                number += 1
                self._start(plan_visit(self.scenario.seed, number))
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _start(self, visit: Visit) -> None:
        if not self.slots.acquire(blocking=False):
            DROPPED.inc()
            return
        VISITS.inc()
        self.pool.submit(self._visit, visit)

    def _visit(self, visit: Visit) -> None:
        try:
            for i, page in enumerate(visit.pages):
                if self.stop.wait(page.think_s):
                    return
                self._request(page, f"v{visit.number}-{i}")
        finally:
            self.slots.release()

    def _request(self, page: Page, request_id: str) -> None:
        data = json.dumps(page.body).encode() if page.body is not None else None
        req = urllib.request.Request(
            self.target + page.path, data=data, method=page.method,
            headers={"Content-Type": "application/json", "baggage": f"request.id={request_id}",
                     "User-Agent": "pitwall-demo-loadgen"},
        )
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
                resp.read()
                status = str(resp.status)
        except urllib.error.HTTPError as e:
            status = str(e.code)
        except (OSError, TimeoutError):
            status = "error"
        REQUESTS.labels(page.name, status).inc()
        LATENCY.labels(page.name).observe(time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pitwall.demo.loadgen")
    p.add_argument("--target", required=True, help="frontend base URL")
    p.add_argument("--port", type=int, required=True, help="port of the generator's own /metrics")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epoch", type=epoch_arg, default=None)
    p.add_argument("--day", type=float, default=300.0, help="seconds per simulated day")
    p.add_argument("--max-concurrency", type=int, default=32)
    args = p.parse_args(argv)
    scenario = Scenario(epoch=args.epoch or time.time(), seed=args.seed, day_s=args.day)
    server, _thread = start_http_server(args.port, addr=args.host)
    gen = LoadGenerator(args.target, scenario, args.max_concurrency)

    def stop(signum: int, frame: FrameType | None) -> None:
        # Not gen.stop.set() here: the main thread may hold the Event's lock (deadlock).
        threading.Thread(target=gen.stop.set, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        gen.run()
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
