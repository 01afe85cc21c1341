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
from collections.abc import Callable

from pitwall.core.labels import Labels, labels_from_dict
from pitwall.core.tenancy import DEFAULT_TENANT
from pitwall.metrics import Appender, SampleBatch

__all__ = ["KONG_LATENCY_BUCKETS", "UPSTREAM_LATENCY_BUCKETS", "GatewayStats"]

log = logging.getLogger(__name__)
# Kong's buckets (kong/plugins/prometheus/exporter.lua), in milliseconds.
KONG_LATENCY_BUCKETS = (1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000, 6000)
UPSTREAM_LATENCY_BUCKETS = (25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000)
MAX_SERIES = 50_000
Key = tuple[tuple[str, str], ...]


class _Histogram:
    __slots__ = ("bounds", "buckets", "count", "sum")

    def __init__(self, bounds: tuple[int, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * len(bounds)
        self.count = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.bounds):
            if v <= b:
                self.buckets[i] += 1
                break
        self.count += 1
        self.sum += v


class GatewayStats:
    """Counters and histograms of the gateway; ``flush`` writes them as samples."""

    def __init__(self, appender: Appender | None, *, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.appender = appender
        self.interval_s = interval_s
        self.clock = clock
        self.counters: dict[tuple[str, Key], float] = {}
        self.histograms: dict[tuple[str, Key], _Histogram] = {}
        self._warned = False

    def _room(self) -> bool:
        if len(self.counters) + len(self.histograms) < MAX_SERIES:
            return True
        if not self._warned:
            log.warning("gateway metrics: series limit reached; new label sets are not recorded",
                        extra={"limit": MAX_SERIES})
            self._warned = True
        return False

    def inc(self, name: str, labels: Key, v: float = 1.0) -> None:
        k = (name, labels)
        cur = self.counters.get(k)
        if cur is None and not self._room():
            return
        self.counters[k] = (cur or 0.0) + v

    def observe(self, name: str, labels: Key, v: float, bounds: tuple[int, ...]) -> None:
        k = (name, labels)
        h = self.histograms.get(k)
        if h is None:
            if not self._room():
                return
            h = self.histograms[k] = _Histogram(bounds)
        h.observe(v)

    def rows(self, ts_ms: int) -> list[tuple[Labels, int, float]]:
        """Every series' current cumulative value (histograms as _bucket/_sum/_count)."""
        out: list[tuple[Labels, int, float]] = []
        for (name, labels), v in self.counters.items():
            out.append((labels_from_dict({**dict(labels), "__name__": name, "job": "kong"}), ts_ms, v))
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
