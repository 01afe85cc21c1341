"""inventory: stock levels and reservations; now and then a slow lock wait slows its callers.

Routes: ``GET /stock/{sku}``, ``POST /reserve`` (``{"order_id", "items": [{"sku", "qty"}]}``
-> 200 or 409 out of stock), ``POST /release`` (``{"reservation_id"}``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from pitwall.demo.services import PRODUCTS
from pitwall.demo.services._base import Reply, Request, Service, main

STOCK_LEVEL = Gauge("inventory_stock_level", "Units in stock.", ["sku"])
RESERVATIONS = Counter("inventory_reservations", "Reservation attempts by result.", ["result"])
RESTOCKS = Counter("inventory_restocks", "Deliveries received.", ["sku"])
LOCK_WAIT = Histogram("inventory_lock_wait_seconds", "Time spent waiting for the stock table lock.",
                      buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0))

SLOW_LOCK_PROBABILITY = 0.05  # a periodic stock sync holds the lock
INITIAL_STOCK = 60
RESTOCK_BELOW = 5
RESTOCK_UNITS = 50


class Stock:
    """The stock table; a lock because the service's threads share it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.units = dict.fromkeys(PRODUCTS, INITIAL_STOCK)
        self.reservations: dict[str, list[tuple[str, int]]] = {}
        for sku, n in self.units.items():
            STOCK_LEVEL.labels(sku).set(n)

    def reserve(self, order_id: str, items: list[tuple[str, int]]) -> bool:
        with self.lock:
            if any(self.units.get(sku, 0) < qty for sku, qty in items):
                return False
            for sku, qty in items:
                self.units[sku] -= qty
                STOCK_LEVEL.labels(sku).set(self.units[sku])
            self.reservations[order_id] = items
            return True

    def release(self, order_id: str) -> bool:
        with self.lock:
            items = self.reservations.pop(order_id, None)
            for sku, qty in items or []:
                self.units[sku] += qty
                STOCK_LEVEL.labels(sku).set(self.units[sku])
            return items is not None

    def restock_low(self) -> list[str]:
        with self.lock:
            low = [sku for sku, n in self.units.items() if n < RESTOCK_BELOW]
            for sku in low:
                self.units[sku] += RESTOCK_UNITS
                STOCK_LEVEL.labels(sku).set(self.units[sku])
                RESTOCKS.labels(sku).inc()
            return low


def setup(svc: Service) -> None:
    stock = Stock()

    def wait_for_lock(req: Request) -> None:
        """Usually instant; sometimes a stock sync holds the table and the caller waits."""
        if req.rng.random() < SLOW_LOCK_PROBABILITY:
            wait = req.rng.uniform(0.25, 0.9)
            svc.log.warning("slow stock lookup: waited %.0f ms for the stock table lock", wait * 1000)
        else:
            wait = req.rng.uniform(0.0005, 0.004)
        LOCK_WAIT.observe(wait)
        time.sleep(wait)

    @svc.route("GET", "/stock/{sku}")
    def get_stock(req: Request) -> Reply:
        sku = req.params["sku"]
        if sku not in PRODUCTS:
            return Reply(404, {"error": f"unknown sku {sku}"})
        wait_for_lock(req)
        svc.work(req.rng, 0.004)
        return Reply(200, {"sku": sku, "available": stock.units[sku]})

    @svc.route("POST", "/reserve")
    def reserve(req: Request) -> Reply:
        order_id = str(req.body.get("order_id", ""))
        items = _items(req.body)
        if not order_id or items is None:
            return Reply(400, {"error": "order_id and items [{sku, qty}] required"})
        wait_for_lock(req)
        svc.work(req.rng, 0.006)
        if not stock.reserve(order_id, items):
            RESERVATIONS.labels("out_of_stock").inc()
            svc.log.info("reservation refused for order %s: out of stock", order_id)
            restocked = stock.restock_low()
            if restocked:
                svc.log.info("restock ordered for %s", ", ".join(restocked))
            return Reply(409, {"error": "out of stock"})
        RESERVATIONS.labels("reserved").inc()
        svc.log.info("reserved %d items for order %s", sum(q for _, q in items), order_id)
        return Reply(200, {"reservation_id": order_id})

    @svc.route("POST", "/release")
    def release(req: Request) -> Reply:
        order_id = str(req.body.get("reservation_id", ""))
        svc.work(req.rng, 0.003)
        if not stock.release(order_id):
            return Reply(404, {"error": f"no reservation {order_id}"})
        RESERVATIONS.labels("released").inc()
        svc.log.info("released reservation for order %s", order_id)
        return Reply(200, {"released": order_id})


def _items(body: dict[str, Any]) -> list[tuple[str, int]] | None:
    raw = body.get("items")
    if not isinstance(raw, list) or not raw:
        return None
    items = []
    for it in raw:
        if not isinstance(it, dict) or it.get("sku") not in PRODUCTS or not isinstance(it.get("qty"), int):
            return None
        items.append((str(it["sku"]), int(it["qty"])))
    return items


if __name__ == "__main__":
    main("inventory", setup)
