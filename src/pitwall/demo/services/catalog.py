"""catalog: the product list and product pages (with live stock from inventory).

``GET /products`` and ``GET /products/{sku}``. When inventory is slow the
product page is slow; when it fails the page degrades to "stock unknown".
"""

from __future__ import annotations

from prometheus_client import Counter

from pitwall.demo.services import PRODUCTS
from pitwall.demo.services._base import Reply, Request, Service, main

PRODUCT_VIEWS = Counter("catalog_product_views", "Product pages served.", ["sku"])
STOCK_UNKNOWN = Counter("catalog_stock_unknown", "Product pages served without stock (inventory failed).")


def setup(svc: Service) -> None:
    @svc.route("GET", "/products")
    def products(req: Request) -> Reply:
        svc.work(req.rng, 0.012)
        return Reply(200, {"products": [{"sku": sku, "name": name, "price": price}
                                        for sku, (name, price) in PRODUCTS.items()]})

    @svc.route("GET", "/products/{sku}")
    def product(req: Request) -> Reply:
        sku = req.params["sku"]
        if sku not in PRODUCTS:
            return Reply(404, {"error": f"unknown product {sku}"})
        svc.work(req.rng, 0.008)
        name, price = PRODUCTS[sku]
        stock = svc.call("inventory", "GET", f"/stock/{sku}")
        PRODUCT_VIEWS.labels(sku).inc()
        available = stock.body.get("available") if stock.status == 200 else None
        if available is None:
            STOCK_UNKNOWN.inc()
            svc.log.warning("inventory answered %d for %s; showing the page without stock", stock.status, sku)
        else:
            svc.log.info("product page %s served (%s in stock)", sku, available)
        return Reply(200, {"sku": sku, "name": name, "price": price, "available": available})


if __name__ == "__main__":
    main("catalog", setup)
