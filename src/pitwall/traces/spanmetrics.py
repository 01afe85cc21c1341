"""RED metrics from spans, named as OpenTelemetry's spanmetrics connector names them.

Every accepted span counts into ``traces_span_metrics_calls_total`` and the
``traces_span_metrics_duration_milliseconds`` histogram, keyed by
``service_name``, ``span_name``, ``span_kind`` and ``status_code`` (values as
``SPAN_KIND_SERVER``, ``STATUS_CODE_ERROR``). Counts are cumulative and are
appended to the metrics store every ``flush_interval`` through the metrics
pillar's ``Appender`` (so each series gets strictly increasing timestamps),
with an exemplar (``trace_id``, ``span_id``) on the bucket of a recent span.
Spans over the series limit count into one overflow series
(``otel_metric_overflow="true"``), as the connector does.

``SpanMetrics`` is the span store's ``Derived`` observer: the store calls
``observe`` for every committed batch and for every batch replayed from its
WAL after a crash, and writes ``snapshot()`` into the WAL at each flush, so a
restart restores the cumulative counts and re-counts exactly the spans
committed after the snapshot: no span is lost from, or counted twice in, the
metrics, and the counters carry on without a reset.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pitwall.core.labels import Labels
from pitwall.core.tasks import Supervisor
from pitwall.metrics import Appender, Exemplar, MetricMetadata, SampleBatch
from pitwall.traces.model import KIND_NAMES, STATUS_NAMES

log = logging.getLogger(__name__)

CALLS = "traces_span_metrics_calls_total"
DURATION = "traces_span_metrics_duration_milliseconds"

_Key = tuple[str, str, int, int]  # service, span name, kind, status
_OVERFLOW: _Key = ("", "", -1, -1)


@dataclass
class _Series:
    buckets: np.ndarray  # per-bucket (non-cumulative) counts, last = +Inf
    sum_ms: float = 0.0
    count: int = 0
    exemplar: tuple[str, str, float, int] | None = None  # trace id, span id, ms, bucket


@dataclass
class _TenantState:
    series: dict[_Key, _Series] = field(default_factory=dict)
    dirty: bool = False


def _fmt_le(b: float) -> str:
    return str(int(b)) if float(b).is_integer() else repr(float(b))


class SpanMetrics:
    """Aggregates spans into cumulative RED metrics; a Component that flushes periodically."""

    name = "traces-spanmetrics"

    def __init__(self, appender: Appender, *, buckets_ms: list[float], flush_interval_s: float = 15.0,
                 max_series: int = 50_000) -> None:
        self.appender = appender
        self.bounds = np.asarray(buckets_ms, dtype=np.float64)
        self.le = [_fmt_le(b) for b in buckets_ms] + ["+Inf"]
        self.flush_interval_s = flush_interval_s
        self.max_series = max_series
        self._tenants: dict[str, _TenantState] = {}
        self.tasks = Supervisor("spanmetrics")
        self._last_ts = 0

    async def start(self) -> None:
        self.tasks.spawn(self._loop(), name="flush")

    async def stop(self) -> None:
        await self.tasks.stop()
        await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:
                log.exception("span metrics flush failed")

    def observe(self, tenant: str, table: pa.Table) -> None:
        """Count a batch of accepted spans (vectorised; one Python step per group)."""
        n = table.num_rows
        if not n:
            return
        dur_ms = np.asarray(table.column("duration_ns").to_numpy(), dtype=np.float64) / 1e6
        bucket = np.searchsorted(self.bounds, dur_ms, side="left")
        t = pa.table({
            "service": table.column("service"), "name": table.column("name"),
            "kind": table.column("kind"), "status": table.column("status_code"),
            "bucket": pa.array(bucket.astype(np.int32)), "dur": pa.array(dur_ms),
            "idx": pa.array(np.arange(n, dtype=np.int64)),
        })
        g = t.group_by(["service", "name", "kind", "status", "bucket"]).aggregate(
            [("dur", "sum"), ("dur", "count"), ("idx", "max")])
        st = self._tenants.setdefault(tenant, _TenantState())
        cols = [g.column(c).to_pylist() for c in ("service", "name", "kind", "status", "bucket",
                                                  "dur_sum", "dur_count", "idx_max")]
        latest: dict[_Key, tuple[int, int]] = {}  # series -> (row of its latest span, bucket)
        for svc, name, kind, status, b, s, c, last in zip(*cols, strict=True):
            key: _Key = (svc, name, int(kind), int(status))
            ser = st.series.get(key)
            if ser is None:
                if len(st.series) >= self.max_series:
                    key = _OVERFLOW
                    ser = st.series.get(key)
                if ser is None:
                    ser = st.series[key] = _Series(np.zeros(len(self.le), dtype=np.int64))
            ser.buckets[b] += c
            ser.sum_ms += s
            ser.count += c
            if last >= latest.get(key, (-1, 0))[0]:
                latest[key] = (last, b)
        trace_ids = table.column("trace_id")
        span_ids = table.column("span_id")
        for key, (last, b) in latest.items():
            st.series[key].exemplar = (trace_ids[last].as_py(), span_ids[last].as_py(), float(dur_ms[last]), int(b))
        st.dirty = True

    def snapshot(self) -> bytes:
        """The cumulative state of every series (exemplars left out), for the span store's WAL."""
        return json.dumps({
            "buckets_ms": self.bounds.tolist(),
            "tenants": {tenant: [[*key, ser.buckets.tolist(), ser.sum_ms, ser.count]
                                 for key, ser in st.series.items()]
                        for tenant, st in self._tenants.items()},
        }, separators=(",", ":")).encode()

    def restore(self, payload: bytes) -> None:
        """Replace the state with a snapshot (spans replayed after it are then observed again)."""
        doc = json.loads(payload)
        self._tenants = {}
        if doc.get("buckets_ms") != self.bounds.tolist():
            log.warning("span metrics buckets changed since the snapshot; counters restart from zero")
            return
        for tenant, rows in doc["tenants"].items():
            st = self._tenants[tenant] = _TenantState(dirty=True)
            for svc, name, kind, status, buckets, sum_ms, count in rows:
                st.series[(svc, name, int(kind), int(status))] = _Series(
                    np.asarray(buckets, dtype=np.int64), float(sum_ms), int(count))

    async def flush(self) -> None:
        """Append the cumulative values of every series of every tenant that saw spans."""
        now = max(int(time.time() * 1000), self._last_ts + 1)
        self._last_ts = now
        for tenant, st in list(self._tenants.items()):
            if not st.dirty:
                continue
            st.dirty = False
            batch, exemplars = self._render(st, now)
            await self.appender.append(tenant, batch)
            await self.appender.append_metadata(tenant, [
                MetricMetadata(CALLS.removesuffix("_total"), "counter", "Number of spans.", ""),
                MetricMetadata(DURATION, "histogram", "Span durations.", "ms"),
            ])
            if exemplars:
                await self.appender.append_exemplars(tenant, exemplars)

    def _render(self, st: _TenantState, now: int) -> tuple[SampleBatch, list[Exemplar]]:
        rows: list[tuple[Labels, int, float]] = []
        exemplars: list[Exemplar] = []
        for key, ser in st.series.items():
            base = _labels(key)
            rows.append(((("__name__", CALLS), *base), now, float(ser.count)))
            cum = np.cumsum(ser.buckets)
            for le, v in zip(self.le, cum.tolist(), strict=True):
                rows.append((_sorted((("__name__", f"{DURATION}_bucket"), ("le", le), *base)), now, float(v)))
            rows.append(((("__name__", f"{DURATION}_count"), *base), now, float(ser.count)))
            rows.append(((("__name__", f"{DURATION}_sum"), *base), now, ser.sum_ms))
            if ser.exemplar is not None:
                tid, sid, ms, b = ser.exemplar
                lbl = _sorted((("__name__", f"{DURATION}_bucket"), ("le", self.le[b]), *base))
                exemplars.append(Exemplar(lbl, (("span_id", sid), ("trace_id", tid)), now, ms))
                ser.exemplar = None
        return SampleBatch.from_rows([(_sorted(lbl), ts, v) for lbl, ts, v in rows]), exemplars


def _labels(key: _Key) -> Labels:
    if key == _OVERFLOW:
        return (("otel_metric_overflow", "true"),)
    svc, name, kind, status = key
    return (("service_name", svc), ("span_kind", KIND_NAMES.get(kind, "SPAN_KIND_UNSPECIFIED")),
            ("span_name", name), ("status_code", STATUS_NAMES.get(status, "STATUS_CODE_UNSET")))


def _sorted(labels: Labels) -> Labels:
    return tuple(sorted((k, v) for k, v in labels if v != ""))
