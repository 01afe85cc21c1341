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

from pitwall.traffic.gateway.context import Ctx, ResponseHead
from pitwall.traffic.gateway.plugins.base import Plugin
from pitwall.traffic.gateway.stats import KONG_LATENCY_BUCKETS, UPSTREAM_LATENCY_BUCKETS, GatewayStats

__all__ = ["Prometheus"]


class Prometheus(Plugin):
    name = "prometheus"
    priority = 13

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
        ws = ("workspace", "default")
        if c["status_code_metrics"]:
            source = "service" if ctx.upstream_ms >= 0 else "kong"
            stats.inc("kong_http_requests_total", (("code", str(head.status)), ("consumer", consumer),
                                                   ("route", route), ("service", service), ("source", source), ws))
        if c["latency_metrics"]:
            total = (time.perf_counter() - ctx.start) * 1000.0
            lat = (("route", route), ("service", service), ws)
            stats.observe("kong_request_latency_ms", (("consumer", consumer), *lat), total, UPSTREAM_LATENCY_BUCKETS)
            if ctx.upstream_ms >= 0:
                stats.observe("kong_upstream_latency_ms", lat, ctx.upstream_ms, UPSTREAM_LATENCY_BUCKETS)
            stats.observe("kong_kong_latency_ms", lat, max(0.0, total - max(ctx.upstream_ms, 0.0)),
                          KONG_LATENCY_BUCKETS)
        if c["bandwidth_metrics"]:
            base = (("consumer", consumer), ("route", route), ("service", service))
            stats.inc("kong_bandwidth_bytes", (*base, ("direction", "ingress"), ws), float(bytes_in))
            stats.inc("kong_bandwidth_bytes", (*base, ("direction", "egress"), ws), float(len(head.body)))
