"""Builds the metrics pillar from Settings: store, PromQL engine, ingest paths, scraping, routers.

``build_metrics`` constructs (no I/O beyond opening files); the returned
``MetricsPart`` follows the wiring contract of ``core.lifecycle.Part``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pitwall.core.body import Body
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.limits import InflightBudget
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.metrics.api import MetricsApiDeps, ingest_router, otlp_export, otlp_router, query_router
from pitwall.metrics.ingest.otlp import OtlpMetricsTranslator
from pitwall.metrics.ingest.remote_write import RemoteWriteIngester
from pitwall.metrics.promql import Engine
from pitwall.metrics.query import InstantQuery, RangeQuery, local_instant, local_range
from pitwall.metrics.remote_backend import RemoteEngine, WalForwarder, proxy_router
from pitwall.metrics.scrape.config import GlobalScrapeDefaults, ScrapeConfig, parse_scrape_configs
from pitwall.metrics.scrape.manager import ScrapeManager
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore, StoreLimits

__all__ = ["MetricsPart", "build_metrics", "scrape_configs_of"]


def scrape_configs_of(settings: Any) -> list[ScrapeConfig]:
    """``scrape_configs`` of ``pitwall.config.Settings`` with the ``global`` defaults applied."""
    g = settings.global_
    defaults = GlobalScrapeDefaults(scrape_interval=g.scrape_interval, scrape_timeout=g.scrape_timeout)
    return parse_scrape_configs(settings.scrape_configs, defaults)


def _flags(settings: Any) -> dict[str, str]:
    """What ``/api/v1/status/flags`` shows, under Prometheus' flag names."""
    return {
        "config.file": str(settings.config_file or ""),
        "storage.tsdb.path": str(settings.data_dir),
        "storage.tsdb.retention.time": f"{settings.storage.retention // 1000}s",
        "web.listen-address": settings.listen,
        "query.lookback-delta": f"{settings.query.lookback_delta // 1000}s",
        "query.max-samples": str(settings.query.max_samples),
        "query.timeout": f"{settings.query.timeout // 1000}s",
    }


@dataclass
class MetricsPart:
    """The metrics pillar: the store starts first (everything appends to it), scraping last."""

    store: MetricStore
    engine: Engine
    scrape: ScrapeManager
    deps: MetricsApiDeps
    remote: RemoteEngine | None = None  # backends.metrics: reads go to the engine
    forwarder: WalForwarder | None = None  # ...and the WAL is forwarded to it
    name: str = "metrics"

    def components(self) -> Sequence[Component]:
        fwd: list[Component] = [] if self.forwarder is None else [self.forwarder]
        return [self.store, *fwd, self.scrape]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        # Routes match in order: the engine's answers come before the embedded ones.
        proxy = [] if self.remote is None else [Mount(proxy_router(self.remote))]
        return [*proxy, Mount(query_router(self.deps)), Mount(ingest_router(self.deps)),
                Mount(otlp_router(self.deps))]

    def problems(self) -> list[str]:
        """Why ``/-/ready`` fails on the metrics side: a backend that is down."""
        return [] if self.forwarder is None else self.forwarder.problems()

    async def reload(self, settings: Any) -> None:
        await self.scrape.reload(scrape_configs_of(settings))

    def register_metrics(self, metrics: SelfMetrics) -> None:
        st = self.store
        metrics.add_gauges("pitwall_metrics_series", "Series in the metrics store.", lambda: float(st.num_series()))
        metrics.add_gauges("pitwall_metrics_head_samples", "Samples in the in-memory head.",
                           lambda: float(st.head_samples))
        metrics.add_gauges("pitwall_metrics_samples_appended_total", "Samples appended since start.",
                           lambda: float(st.samples_appended))
        fw = self.forwarder
        if fw is not None:
            metrics.add_gauges("pitwall_metrics_forwarded_samples_total", "Samples the metrics backend acked.",
                               lambda: float(fw.sent_samples))
            metrics.add_gauges("pitwall_metrics_forward_dropped_samples_total",
                               "Samples the metrics backend refused (4xx).", lambda: float(fw.dropped_samples))
            metrics.add_gauges("pitwall_metrics_forward_failures_total", "Failed sends to the metrics backend.",
                               lambda: float(fw.failures))
            metrics.add_gauges("pitwall_metrics_forward_pending_segments",
                               "WAL segments the forwarding queue has not passed.",
                               lambda: float(fw.pending_segments()))

    @property
    def otlp_export(self) -> Callable[[str, Body, str], Awaitable[bytes]]:
        """OTLP metrics export (tenant, body, content type -> response): OTLP/HTTP and OTLP/gRPC share it."""
        return otlp_export(self.deps)

    @property
    def instant(self) -> InstantQuery:
        """PromQL at one instant (rules, SLOs, canaries, the HPA, the UI): the engine's, else the embedded."""
        return self.remote.instant if self.remote is not None else local_instant(self.engine, self.store)

    @property
    def range(self) -> RangeQuery:
        return self.remote.range if self.remote is not None else local_range(self.engine, self.store)


def build_metrics(settings: Any, db: TelemetryDB, inflight: InflightBudget) -> MetricsPart:
    """The metrics pillar for ``pitwall.config.Settings``."""
    st, q = settings.storage, settings.query
    store = MetricStore(
        db,
        settings.data_dir / "wal" / "metrics",
        block_ms=st.block_duration,
        retention_ms=st.retention,
        head_max_samples=st.head_max_samples,
        head_max_age_s=st.head_max_age / 1000,
        limits=StoreLimits(max_series_per_tenant=settings.limits.max_series_per_tenant),
        fsync=st.fsync,
    )
    engine = Engine(lookback_delta_ms=q.lookback_delta, max_samples=q.max_samples, timeout_s=q.timeout / 1000)
    scrape = ScrapeManager(store, configs=scrape_configs_of(settings))
    deps = MetricsApiDeps(
        store=store,
        engine=engine,
        remote_write=RemoteWriteIngester(store, settings.limits),
        otlp=OtlpMetricsTranslator(max_label_value_length=settings.limits.max_label_value_length),
        inflight=inflight,
        max_points_per_series=q.max_points_per_series,
        started_at=time.time(),
        flags=_flags(settings),
        targets=scrape,
    )
    remote, forwarder = None, None
    if (b := settings.backends.metrics) is not None:
        remote = RemoteEngine(b.query_url, b.headers, b.timeout / 1000)
        forwarder = WalForwarder(store.wal, store.labels_of, b.write_url, b.headers, b.timeout / 1000,
                                 b.batch_samples, engine=remote)
        store.wal_keep = forwarder.keep_from
    return MetricsPart(store, engine, scrape, deps, remote, forwarder)
