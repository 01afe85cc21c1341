"""checkout: places orders: reserve stock at inventory, then charge at payment.

``POST /checkout`` (``{"order_id", "user", "items": [{"sku", "qty"}], "card"}``)
-> 201 placed, 409 out of stock, 402 declined, 502 when payment fails (the
reservation is released again). Business KPIs go to ``prometheus_client``;
items sold also go out as an OpenTelemetry counter over OTLP.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

from pitwall.demo.services import PRODUCTS
from pitwall.demo.services._base import Reply, Request, Service, main

ORDERS = Counter("shop_orders", "Checkout attempts by outcome.", ["status"])
REVENUE = Counter("shop_revenue_dollars", "Revenue of placed orders.")
ORDER_VALUE = Histogram("shop_order_value_dollars", "Value of placed orders.",
                        buckets=(10, 25, 50, 100, 200, 400, 800))
CART_ITEMS = Histogram("shop_cart_items", "Items per checkout attempt.", buckets=(1, 2, 3, 4, 6, 8))


def setup(svc: Service) -> None:
    items_sold = svc.otel.meter.create_counter("shop.items.sold", unit="{item}",
                                               description="Items in placed orders, by sku.")

    @svc.route("POST", "/checkout")
    def checkout(req: Request) -> Reply:
        order_id = str(req.body.get("order_id", ""))
        items = _items(req.body.get("items"))
        if not order_id or items is None:
            return Reply(400, {"error": "order_id and items [{sku, qty}] required"})
        n_items = sum(q for _, q in items)
        CART_ITEMS.observe(n_items)
        total = round(sum(PRODUCTS[sku][1] * q for sku, q in items), 2)
        svc.work(req.rng, 0.01)
        reserved = svc.call("inventory", "POST", "/reserve",
                            {"order_id": order_id, "items": [{"sku": s, "qty": q} for s, q in items]})
        if reserved.status != 200:
            status = "out_of_stock" if reserved.status == 409 else "failed"
            ORDERS.labels(status).inc()
            svc.log.warning("order %s not placed: inventory answered %d", order_id, reserved.status)
            return Reply(409 if reserved.status == 409 else 502, {"error": f"inventory: {reserved.body}"})
        charged = svc.call("payment", "POST", "/charge",
                           {"order_id": order_id, "amount": total, "card": req.body.get("card", "visa")})
        if charged.status != 200:
            svc.call("inventory", "POST", "/release", {"reservation_id": order_id})
            if charged.status == 402:
                ORDERS.labels("declined").inc()
                svc.log.info("order %s declined by payment", order_id)
                return Reply(402, {"error": "card declined"})
            ORDERS.labels("failed").inc()
            svc.log.error("order %s failed: payment answered %d (%s)", order_id, charged.status,
                          charged.body.get("error", ""))
            return Reply(502, {"error": "payment failed, please retry"})
        ORDERS.labels("placed").inc()
        REVENUE.inc(total)
        ORDER_VALUE.observe(total)
        for sku, q in items:
            items_sold.add(q, {"sku": sku})
        svc.log.info("order %s placed: %d items, %.2f USD", order_id, n_items, total)
        return Reply(201, {"order_id": order_id, "total": total})


def _items(raw: Any) -> list[tuple[str, int]] | None:
    if not isinstance(raw, list) or not raw:
        return None
    out = []
    for it in raw:
        if not isinstance(it, dict) or it.get("sku") not in PRODUCTS or not isinstance(it.get("qty"), int):
            return None
        out.append((str(it["sku"]), int(it["qty"])))
    return out


if __name__ == "__main__":
    main("checkout", setup)
