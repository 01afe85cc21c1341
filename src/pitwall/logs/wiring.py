"""Builds the logs pillar from Settings: store, ingester, engine, listeners and routers.

``build_logs`` constructs; the returned ``LogsParts`` follows the wiring
contract of ``core.lifecycle.Part``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pitwall.core.body import Body
from pitwall.core.durations import NS_PER_MS
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.limits import InflightBudget, LimitsSettings
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.logs.api import LogsApiDeps, native_router, push_router, query_router, ready_router
from pitwall.logs.ingest.distributor import LogIngester
from pitwall.logs.ingest.elasticsearch import es_router
from pitwall.logs.ingest.loki_push import LabelCache
from pitwall.logs.ingest.otlp import OtlpLogsTranslator, otlp_export, otlp_logs_router
from pitwall.logs.ingest.syslog import SyslogServer
from pitwall.logs.logql import LogQLEngine, parse_expr, parse_stream_selector
from pitwall.logs.logql.errors import LogQLParseError
from pitwall.logs.model import Matcher
from pitwall.logs.remote_backend import LokiForwarder, RemoteLogSource, proxy_router
from pitwall.logs.settings import LogsSettings
from pitwall.logs.tail import TailHub, tail_router
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.logs_store import LogStore, OutOfOrderPolicy


@dataclass
class LogsParts:
    """The logs pillar's components, in start order, and what its routers need."""

    settings: LogsSettings
    store: LogStore
    ingester: LogIngester
    engine: LogQLEngine
    tail: TailHub
    syslog: SyslogServer | None
    deps: LogsApiDeps
    otlp: OtlpLogsTranslator
    extra: dict[str, Any] = field(default_factory=dict)
    remote: RemoteLogSource | None = None  # backends.logs: reads go to the engine
    forwarder: LokiForwarder | None = None  # ...and the WAL is forwarded to it

    name: str = "logs"

    def components(self) -> Sequence[Component]:
        comps: list[Component] = [self.store, self.tail]
        if self.forwarder is not None:
            comps.append(self.forwarder)
        if self.syslog is not None:
            comps.append(self.syslog)
        return comps

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        d = self.deps
        # Routes match in order: the engine's answers come before the embedded ones.
        proxy = [] if self.remote is None else [Mount(proxy_router(self.remote))]
        return [*proxy, *(Mount(r) for r in (push_router(d), query_router(d), ready_router(is_ready), native_router(d),
                                   otlp_logs_router(d, self.otlp), es_router(d, self.settings.elasticsearch),
                                   tail_router(self.tail)))]

    def problems(self) -> list[str]:
        """Why ``/-/ready`` fails on the logs side: a backend that is down."""
        return [] if self.forwarder is None else self.forwarder.problems()

    async def reload(self, settings: Any) -> None:
        """Nothing of ``logs`` applies live: its settings take effect at the next start."""

    @property
    def otlp_export(self) -> Callable[[str, Body, str], Awaitable[bytes]]:
        """OTLP logs export (tenant, body, content type -> response): OTLP/HTTP and OTLP/gRPC share it."""
        return otlp_export(self.deps, self.otlp)

    def register_metrics(self, metrics: SelfMetrics) -> None:
        """The logs store reports through its API (``/loki/api/v1/index/stats``); the forwarder as gauges."""
        fw = self.forwarder
        if fw is None:
            return
        metrics.add_gauges("pitwall_logs_forwarded_entries_total", "Log entries the logs backend acked.",
                           lambda: float(fw.sent))
        metrics.add_gauges("pitwall_logs_forward_dropped_entries_total", "Log entries the logs backend refused (4xx).",
                           lambda: float(fw.dropped))
        metrics.add_gauges("pitwall_logs_forward_failures_total", "Failed sends to the logs backend.",
                           lambda: float(fw.failures))
        metrics.add_gauges("pitwall_logs_forward_pending_segments", "WAL segments the logs forwarding queue has "
                           "not passed.", lambda: float(fw.pending_segments()))


def log_query_selector(expr: str) -> list[Matcher]:
    """The stream selector of a log query (``{app="x"} |= "y" | json`` -> ``app="x"``), for live tail."""
    node = parse_expr(expr)
    matchers = getattr(node, "matchers", None)
    if matchers is None:
        raise LogQLParseError("tail is only supported for log queries, not metric queries")
    return list(matchers)


def build_logs(settings: LogsSettings, *, db: TelemetryDB, data_dir: Path, limits: LimitsSettings,
               inflight: InflightBudget, fsync: bool = True, backend: Any = None) -> LogsParts:
    """Construct the logs pillar (no I/O beyond opening files)."""
    lim = settings.limits
    store = LogStore(
        db,
        data_dir / "wal" / "logs",
        block_ns=settings.block_duration * NS_PER_MS,
        retention_ns=settings.retention * NS_PER_MS,
        head_max_bytes=settings.head_max_bytes,
        head_max_age_s=settings.head_max_age / 1000,
        max_streams_per_tenant=lim.max_streams_per_tenant,
        out_of_order=OutOfOrderPolicy(lim.out_of_order, lim.out_of_order_window * NS_PER_MS),
        fsync=fsync,
    )
    ingester = LogIngester(store, lim)
    engine = LogQLEngine(max_entries_limit=lim.max_entries_limit_per_query, max_series=settings.max_query_series,
                         timeout_s=settings.query_timeout / 1000)
    deps = LogsApiDeps(store=store, ingester=ingester, engine=engine, parse_selector=parse_stream_selector,
                       settings=settings, limits=limits, inflight=inflight, labels=LabelCache())
    tail = TailHub(store, engine, log_query_selector, max_connections=lim.max_tail_connections)
    syslog = SyslogServer(ingester, settings.syslog) if settings.syslog.enabled else None
    remote, forwarder = None, None
    if backend is not None:  # pitwall.config.LogsBackendSettings
        remote = RemoteLogSource(backend.query_url, backend.headers, backend.timeout / 1000)
        forwarder = LokiForwarder(store.wal, store.labels_of, backend.push_url, backend.headers,
                                  backend.timeout / 1000, backend.batch_entries, remote=remote)
        store.wal_keep = forwarder.keep_from
        deps.remote = remote
    return LogsParts(settings=settings, store=store, ingester=ingester, engine=engine, tail=tail, syslog=syslog,
                     deps=deps, otlp=OtlpLogsTranslator(), remote=remote, forwarder=forwarder)
