"""The five demo services and how they call each other.

``TOPOLOGY`` maps each service to the peers it calls; each gets its peers'
URLs as ``--peer name=url`` (in ``manifests/shop.yaml``: the peers' Service
variables, ``http://$(NAME_SERVICE_HOST):$(NAME_SERVICE_PORT)``).
Each module runs as ``python -m pitwall.demo.services.<name> --host IP --port N``.
"""

from __future__ import annotations

__all__ = ["PRODUCTS", "SERVICES", "TOPOLOGY"]

TOPOLOGY: dict[str, tuple[str, ...]] = {
    "inventory": (),
    "payment": (),
    "catalog": ("inventory",),
    "checkout": ("inventory", "payment"),
    "frontend": ("catalog", "checkout"),
}

# Start order: every service after the peers it calls.
SERVICES: tuple[str, ...] = tuple(TOPOLOGY)

# The shop's catalogue: sku -> (name, price in dollars).
PRODUCTS: dict[str, tuple[str, float]] = {
    "OLJCESPC7Z": ("Vintage camera lens", 68.99),
    "66VCHSJNUP": ("Film roll (36 exp.)", 8.49),
    "1YMWWN1N4O": ("Home barista kit", 124.00),
    "L9ECAV7KIM": ("Terrarium", 36.45),
    "2ZYFJ3GM2N": ("Roof binoculars", 209.50),
    "0PUK6V6EV0": ("City bike", 349.99),
    "LS4PSXUNUM": ("Metal camping mug", 24.33),
    "9SIQT8TOJO": ("Bamboo glass jar", 5.49),
    "6E92ZMYYFZ": ("Candle holder", 18.99),
}
