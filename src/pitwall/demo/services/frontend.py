"""frontend: the shop's web tier: home page, product pages, checkout.

``GET /``, ``GET /product/{sku}``, ``POST /checkout``; every trace of the
demo starts here (the load generator plays the browsers).
"""

from __future__ import annotations

from prometheus_client import Counter

from pitwall.demo.services._base import Reply, Request, Service, main

PAGE_VIEWS = Counter("shop_page_views", "Pages rendered.", ["page"])


def setup(svc: Service) -> None:
    @svc.route("GET", "/")
    def home(req: Request) -> Reply:
        listing = svc.call("catalog", "GET", "/products")
        svc.work(req.rng, 0.006)
        if listing.status != 200:
            svc.log.error("home page failed: catalog answered %d", listing.status)
            return Reply(502, {"error": "catalog unavailable"})
        PAGE_VIEWS.labels("home").inc()
        return Reply(200, {"page": "home", "products": listing.body.get("products", [])})

    @svc.route("GET", "/product/{sku}")
    def product(req: Request) -> Reply:
        page = svc.call("catalog", "GET", f"/products/{req.params['sku']}")
        svc.work(req.rng, 0.005)
        if page.status >= 500:
            svc.log.error("product page %s failed: catalog answered %d", req.params["sku"], page.status)
            return Reply(502, {"error": "catalog unavailable"})
        PAGE_VIEWS.labels("product").inc()
        return Reply(page.status, {"page": "product", **page.body})

    @svc.route("POST", "/checkout")
    def checkout(req: Request) -> Reply:
        placed = svc.call("checkout", "POST", "/checkout", req.body)
        svc.work(req.rng, 0.005)
        PAGE_VIEWS.labels("checkout").inc()
        if placed.status >= 500:
            svc.log.error("checkout failed for user %s: %s", req.body.get("user", "?"),
                          placed.body.get("error", placed.status))
            return Reply(502, {"error": "we could not place your order, please retry"})
        svc.log.info("checkout for user %s answered %d", req.body.get("user", "?"), placed.status)
        return Reply(placed.status, placed.body)


if __name__ == "__main__":
    main("frontend", setup)
