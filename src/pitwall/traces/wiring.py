"""Builds the traces pillar from Settings: store, receiver, span metrics, routers.

``build_traces`` constructs; ``TracesParts`` follows the wiring contract of ``core.lifecycle.Part``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitwall.core.body import BodyLimits
from pitwall.core.durations import NS_PER_MS
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.limits import InflightBudget, LimitsSettings
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.metrics import Appender
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.traces_store import TraceStore
from pitwall.traces.api import OtlpExport, TracesApiDeps, otlp_export, otlp_router, zipkin_router
from pitwall.traces.ingest.common import IngestLimits
from pitwall.traces.ingest.receiver import SpanReceiver
from pitwall.traces.jaeger_api import jaeger_router
from pitwall.traces.native_api import native_router
from pitwall.traces.query import TraceQuery
from pitwall.traces.remote_backend import OtlpForwarder, RemoteTempo, proxy_router
from pitwall.traces.settings import TracesSettings
from pitwall.traces.spanmetrics import SpanMetrics
from pitwall.traces.tempo_api import tempo_router, tempo_trace_response


@dataclass
class TracesParts:
    store: TraceStore
    spanmetrics: SpanMetrics | None
    deps: TracesApiDeps
    remote: RemoteTempo | None = None  # backends.traces: Tempo reads go to the engine
    forwarder: OtlpForwarder | None = None  # ...and the WAL is forwarded to it

    name: str = "traces"

    def components(self) -> Sequence[Component]:
        """Start order: the store, the forwarder, then span metrics (which flush into the metrics store)."""
        fwd: list[Component] = [] if self.forwarder is None else [self.forwarder]
        return [self.store, *fwd, *([self.spanmetrics] if self.spanmetrics else [])]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        # Routes match in order: the engine's answers come before the embedded Tempo API.
        proxy = [] if self.remote is None else [Mount(proxy_router(self.remote))]
        relay = None if self.remote is None else self.remote.relay
        return [*proxy, Mount(otlp_router(self.deps)), Mount(zipkin_router(self.deps)),
                Mount(native_router(self.deps)), Mount(jaeger_router(self.deps, tempo_trace_response, relay)),
                Mount(tempo_router(self.deps))]

    def problems(self) -> list[str]:
        """Why ``/-/ready`` fails on the traces side: a backend that is down."""
        return [] if self.forwarder is None else self.forwarder.problems()

    async def reload(self, settings: Any) -> None:
        """Nothing of ``traces`` applies live: its settings take effect at the next start."""

    @property
    def otlp_export(self) -> OtlpExport:
        """OTLP traces export (tenant, body, content type -> response): OTLP/HTTP and OTLP/gRPC share it."""
        return otlp_export(self.deps)

    def register_metrics(self, metrics: SelfMetrics) -> None:
        """Span (RED) metrics go to the metrics store instead (``spanmetrics``); the forwarder as gauges."""
        fw = self.forwarder
        if fw is None:
            return
        metrics.add_gauges("pitwall_traces_forwarded_spans_total", "Spans the traces backend acked.",
                           lambda: float(fw.sent))
        metrics.add_gauges("pitwall_traces_forward_dropped_spans_total", "Spans the traces backend refused (4xx).",
                           lambda: float(fw.dropped))
        metrics.add_gauges("pitwall_traces_forward_failures_total", "Failed sends to the traces backend.",
                           lambda: float(fw.failures))
        metrics.add_gauges("pitwall_traces_forward_pending_segments", "WAL segments the traces forwarding queue "
                           "has not passed.", lambda: float(fw.pending_segments()))


def build_traces(
    ts: TracesSettings, limits: LimitsSettings, db: TelemetryDB, data_dir: Path, *,
    appender: Appender, inflight: InflightBudget, fsync: bool = True, backend: Any = None,
) -> TracesParts:
    """Construct (no I/O beyond opening files); start via ``lifecycle``."""
    store = TraceStore(
        db, data_dir / "wal" / "traces",
        block_ns=ts.block_duration * NS_PER_MS, retention_ns=ts.retention * NS_PER_MS,
        head_max_spans=ts.head_max_spans, head_max_age_s=ts.head_max_age / 1000,
        max_spans_per_trace=ts.max_spans_per_trace, fsync=fsync,
    )
    sm = ts.spanmetrics
    spanmetrics = SpanMetrics(appender, buckets_ms=sm.buckets_ms, flush_interval_s=sm.flush_interval / 1000,
                              max_series=sm.max_series) if sm.enabled else None
    store.derived = spanmetrics  # counted on commit and on WAL replay, snapshotted at each flush
    receiver = SpanReceiver(
        store=store,
        limits=IngestLimits(
            max_spans_per_request=ts.max_spans_per_request,
            max_attributes_per_span=ts.max_attributes_per_span,
            max_attribute_value_length=ts.max_attribute_value_length,
            max_events_per_span=ts.max_events_per_span,
        ),
        inflight=inflight,
        body_limits=BodyLimits.of(limits),
    )
    deps = TracesApiDeps(receiver=receiver, query=TraceQuery(store, ts.max_search_results),
                         default_lookback_ms=ts.default_lookback, autocomplete_keys=list(ts.autocomplete_keys))
    remote, forwarder = None, None
    if backend is not None:  # pitwall.config.TracesBackendSettings
        remote = RemoteTempo(backend.query_url, backend.headers, backend.timeout / 1000)
        forwarder = OtlpForwarder(store.wal, backend.otlp_url, backend.headers, backend.timeout / 1000,
                                  backend.batch_spans, remote=remote)
        store.wal_keep = forwarder.keep_from
    return TracesParts(store, spanmetrics, deps, remote, forwarder)
