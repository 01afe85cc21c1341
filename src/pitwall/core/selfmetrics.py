"""pitwall's own metrics, exposed at /metrics in Prometheus' text format."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import Scope


class SelfMetrics:
    """One registry per server (no module globals, so tests can build many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pitwall_http_requests", "HTTP requests by handler and status code.",
            ["handler", "code"], registry=self.registry,
        )
        self.duration = Histogram(
            "pitwall_http_request_duration_seconds", "HTTP request latency.", ["handler"],
            registry=self.registry, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        # children per label values: ``labels()`` validates and locks on every call (~3 µs a request)
        self._counted: dict[tuple[str, int], Any] = {}
        self._timed: dict[str, Any] = {}
        self.up_since = Gauge("pitwall_start_time_seconds", "Start time of the server.", registry=self.registry)
        self.up_since.set(time.time())

    def observe(self, scope: Scope, status: int, duration_s: float) -> None:
        """One answered request: counted by its route template (``other`` when no route matched) and code."""
        handler = getattr(scope.get("route"), "path", None) or "other"
        counted = self._counted.get((handler, status))
        if counted is None:
            counted = self._counted[(handler, status)] = self.requests.labels(handler, str(status))
        timed = self._timed.get(handler)
        if timed is None:
            timed = self._timed[handler] = self.duration.labels(handler)
        counted.inc()
        timed.observe(duration_s)

    def add_gauges(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """Register a gauge read at scrape time."""
        class _C(Collector):
            def collect(self):  # type: ignore[no-untyped-def]
                yield GaugeMetricFamily(name, doc, value=read())

        self.registry.register(_C())
