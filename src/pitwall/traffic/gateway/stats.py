"""Kong's Prometheus metrics, aggregated in memory and flushed into pitwall's metric store.

The prometheus plugin's ``log`` phase only bumps counters in dicts here
(no I/O on the request path); ``GatewayStats.flush`` appends every series'
cumulative value as one sample each ``interval_s`` through the metrics
pillar's ``Appender``, so ``kong_http_requests_total``,
``kong_request_latency_ms``, ``kong_upstream_latency_ms``,
``kong_kong_latency_ms`` and ``kong_bandwidth_bytes`` are PromQL series in
the default tenant, with Kong's label names (``service``, ``route``,
``code``, ``source``, ``workspace``, ``consumer`` with ``per_consumer``,
``direction``) and Kong's latency buckets. Series carry ``job="kong"``, as
a Prometheus scraping Kong labels them. The number of series is bounded
(``MAX_SERIES``); past it new label sets are dropped and a warning is
logged once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Callable

from pitwall.core.labels import Labels, labels_from_dict
from pitwall.core.tenancy import DEFAULT_TENANT
from pitwall.metrics import Appender, SampleBatch

__all__ = ["KONG_LATENCY_BUCKETS", "UPSTREAM_LATENCY_BUCKETS", "Counter", "GatewayStats", "Histogram"]

log = logging.getLogger(__name__)
# Kong's buckets (kong/plugins/prometheus/exporter.lua), in milliseconds.
KONG_LATENCY_BUCKETS = (1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000, 6000)
UPSTREAM_LATENCY_BUCKETS = (25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000)
MAX_SERIES = 50_000
Key = tuple[tuple[str, str], ...]


class Counter:
    """One counter series' value; a caller may keep it and add to ``value`` directly."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class Histogram:
    """One histogram series: per-bucket counts (not cumulative), count and sum."""

    __slots__ = ("bounds", "buckets", "count", "sum")

    def __init__(self, bounds: tuple[int, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * len(bounds)
        self.count = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        i = bisect_left(self.bounds, v)  # the first bound >= v
        if i < len(self.buckets):
            self.buckets[i] += 1
        self.count += 1
        self.sum += v


class GatewayStats:
    """Counters and histograms of the gateway; ``flush`` writes them as samples."""

    def __init__(self, appender: Appender | None, *, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.appender = appender
        self.interval_s = interval_s
        self.clock = clock
        self.counters: dict[tuple[str, Key], Counter] = {}
        self.histograms: dict[tuple[str, Key], Histogram] = {}
        self._warned = False

    def _room(self) -> bool:
        if len(self.counters) + len(self.histograms) < MAX_SERIES:
            return True
        if not self._warned:
            log.warning("gateway metrics: series limit reached; new label sets are not recorded",
                        extra={"limit": MAX_SERIES})
            self._warned = True
        return False

    def counter(self, name: str, labels: Key) -> Counter | None:
        """The series ``name{labels}``, made on first use; None past ``MAX_SERIES``. Series are never
        dropped, so a caller may keep the handle (the prometheus plugin does, per label set)."""
        k = (name, labels)
        c = self.counters.get(k)
        if c is None:
            if not self._room():
                return None
            c = self.counters[k] = Counter()
        return c

    def histogram(self, name: str, labels: Key, bounds: tuple[int, ...]) -> Histogram | None:
        """As ``counter``, for a histogram with ``bounds``."""
        k = (name, labels)
        h = self.histograms.get(k)
        if h is None:
            if not self._room():
                return None
            h = self.histograms[k] = Histogram(bounds)
        return h

    def inc(self, name: str, labels: Key, v: float = 1.0) -> None:
        c = self.counter(name, labels)
        if c is not None:
            c.value += v

    def observe(self, name: str, labels: Key, v: float, bounds: tuple[int, ...]) -> None:
        h = self.histogram(name, labels, bounds)
        if h is not None:
            h.observe(v)

    def rows(self, ts_ms: int) -> list[tuple[Labels, int, float]]:
        """Every series' current cumulative value (histograms as _bucket/_sum/_count)."""
        out: list[tuple[Labels, int, float]] = []
        for (name, labels), c in self.counters.items():
            out.append((labels_from_dict({**dict(labels), "__name__": name, "job": "kong"}), ts_ms, c.value))
        for (name, labels), h in self.histograms.items():
            base = {**dict(labels), "job": "kong"}
            acc = 0
            for b, n in zip(h.bounds, h.buckets, strict=True):
                acc += n
                out.append((labels_from_dict({**base, "__name__": f"{name}_bucket", "le": f"{float(b)}"}), ts_ms,
                            float(acc)))
            out.append((labels_from_dict({**base, "__name__": f"{name}_bucket", "le": "+Inf"}), ts_ms,
                        float(h.count)))
            out.append((labels_from_dict({**base, "__name__": f"{name}_sum"}), ts_ms, h.sum))
            out.append((labels_from_dict({**base, "__name__": f"{name}_count"}), ts_ms, float(h.count)))
        return out

    async def flush(self) -> int:
        """Append the current values; returns how many samples were written."""
        if self.appender is None:
            return 0
        rows = self.rows(int(self.clock() * 1000))
        if rows:
            await self.appender.append(DEFAULT_TENANT, SampleBatch.from_rows(rows))
        return len(rows)

    async def run(self) -> None:
        """Flush every ``interval_s`` until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                try:
                    await self.flush()
                except Exception:
                    log.exception("gateway metrics flush failed")
        finally:
            if self.counters or self.histograms:
                try:
                    await asyncio.shield(self.flush())
                except Exception:
                    log.exception("gateway metrics final flush failed")
