"""Kong's prometheus plugin: each request counted into ``GatewayStats`` (Kong's metric and label names).

As in Kong 3.x, ``status_code_metrics`` gates ``kong_http_requests_total``,
``latency_metrics`` the three latency histograms and ``bandwidth_metrics``
``kong_bandwidth_bytes``; ``per_consumer`` adds the ``consumer`` label
(username, else custom_id, else id). Unlike Kong, ``per_consumer`` also labels
``kong_request_latency_ms`` by consumer, so latency quantiles per consumer are
PromQL (a ``sum by (le, service)`` over it is unchanged). ``source`` is ``service`` when the
upstream answered and ``kong`` when the gateway did.
"""

from __future__ import annotations

import time
from typing import Any

from pitwall.traffic.gateway.context import Ctx, ResponseHead
from pitwall.traffic.gateway.plugins.base import Plugin
from pitwall.traffic.gateway.stats import (
    KONG_LATENCY_BUCKETS,
    UPSTREAM_LATENCY_BUCKETS,
    Counter,
    GatewayStats,
    Histogram,
)

__all__ = ["Prometheus"]

MAX_CACHED = 10_000  # label sets whose series handles are kept; past this the cache starts again
_WS = ("workspace", "default")
SeriesKey = tuple[str, str, str, int, str]  # service, route, consumer, status, source


class _Series:
    """The series one label set counts into (None: that metric is off, or the series limit was hit)."""

    __slots__ = ("bw_in", "bw_out", "kong_latency", "latency", "request_latency", "requests", "upstream_latency")

    def __init__(self, stats: GatewayStats, conf: dict[str, Any], key: SeriesKey) -> None:
        service, route, consumer, status, source = key
        self.requests: Counter | None = None
        self.request_latency: Histogram | None = None
        self.upstream_latency: Histogram | None = None
        self.kong_latency: Histogram | None = None
        self.bw_in: Counter | None = None
        self.bw_out: Counter | None = None
        self.latency = bool(conf["latency_metrics"])
        if conf["status_code_metrics"]:
            self.requests = stats.counter("kong_http_requests_total", (
                ("code", str(status)), ("consumer", consumer), ("route", route), ("service", service),
                ("source", source), _WS))
        if conf["latency_metrics"]:
            lat = (("route", route), ("service", service), _WS)
            self.request_latency = stats.histogram("kong_request_latency_ms", (("consumer", consumer), *lat),
                                                   UPSTREAM_LATENCY_BUCKETS)
            if source == "service":
                self.upstream_latency = stats.histogram("kong_upstream_latency_ms", lat, UPSTREAM_LATENCY_BUCKETS)
            self.kong_latency = stats.histogram("kong_kong_latency_ms", lat, KONG_LATENCY_BUCKETS)
        if conf["bandwidth_metrics"]:
            base = (("consumer", consumer), ("route", route), ("service", service))
            self.bw_in = stats.counter("kong_bandwidth_bytes", (*base, ("direction", "ingress"), _WS))
            self.bw_out = stats.counter("kong_bandwidth_bytes", (*base, ("direction", "egress"), _WS))


class Prometheus(Plugin):
    name = "prometheus"
    priority = 13

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # Label tuples built, hashed and looked up once per label set, not once per request.
        self.series: dict[SeriesKey, _Series] = {}

    def log(self, ctx: Ctx, head: ResponseHead, bytes_in: int) -> None:
        stats: GatewayStats | None = self.env.stats
        if stats is None:
            return
        c = self.conf
        service = ctx.service.name if ctx.service is not None else ""
        route = ctx.route.name if ctx.route is not None else ""
        consumer = ""
        if c["per_consumer"] and ctx.consumer is not None:
            cons = ctx.consumer
            consumer = cons.get("username") or cons.get("custom_id") or cons["id"]
        upstream_ms = ctx.upstream_ms
        key = (service, route, consumer, head.status, "service" if upstream_ms >= 0 else "kong")
        s = self.series.get(key)
        if s is None:
            if len(self.series) >= MAX_CACHED:
                self.series.clear()
            s = self.series[key] = _Series(stats, c, key)
        if s.requests is not None:
            s.requests.value += 1
        if s.latency:
            total = (time.perf_counter() - ctx.start) * 1000.0
            if s.request_latency is not None:
                s.request_latency.observe(total)
            if s.upstream_latency is not None:
                s.upstream_latency.observe(upstream_ms)
            if s.kong_latency is not None:
                s.kong_latency.observe(max(0.0, total - max(upstream_ms, 0.0)))
        if s.bw_in is not None:
            s.bw_in.value += bytes_in
        if s.bw_out is not None:
            s.bw_out.value += len(head.body)
