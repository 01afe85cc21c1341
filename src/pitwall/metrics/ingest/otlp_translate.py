"""Translate a decoded OTLP metrics request into Prometheus series, as Prometheus 3.x does.

Mirrors ``storage/remote/otlptranslator/prometheusremotewrite`` with the
receiver's default settings: resource ``service.name`` (with
``service.namespace``) becomes ``job``, ``service.instance.id`` becomes
``instance``, the other resource attributes go to ``target_info``; scope
metadata is not promoted unless asked (``promote_scope_metadata``, off by
default in Prometheus); data point attributes become labels, colliding names
joined with ``;``. Exponential histograms would need native histograms, which
pitwall does not store: they are rejected and reported as a partial success.

Prometheus itself rejects DELTA temporality unless its delta-to-cumulative
feature (``--enable-feature=otlp-deltatocumulative``) is on; pitwall always
converts, keeping a running total per series in ``DeltaState``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate
from typing import Any

import numpy as np

from pitwall.core.errors import TooLarge
from pitwall.core.labels import METRIC_NAME, Labels
from pitwall.metrics.ingest.otlp_naming import (
    InvalidNameError,
    MetricKind,
    any_value_to_str,
    attribute_labels,
    attribute_pairs,
    build_label_name,
    build_metric_name,
    build_unit,
    exemplar_labels,
    format_float_f,
    set_label,
)
from pitwall.metrics.model import STALE_NAN, Exemplar, MetricMetadata, SampleBatch

__all__ = ["DeltaState", "OtlpMetricsResult", "OtlpTooLarge", "TranslateSettings", "translate_request"]

_NO_RECORDED_VALUE = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_DELTA = 1  # AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_CUMULATIVE = 2
_IDENTIFYING = ("service.namespace", "service.name", "service.instance.id")
_MAX_ERRORS_REPORTED = 10

# Bucket bounds and quantiles repeat across series and requests; format each once.
_format_le = lru_cache(maxsize=4096)(format_float_f)


class OtlpTooLarge(TooLarge):
    """An OTLP request exceeds a configured limit (points or label value length)."""


@dataclass
class OtlpMetricsResult:
    """What one OTLP request translates to."""

    batch: SampleBatch
    metadata: list[MetricMetadata]
    exemplars: list[Exemplar]
    rejected_points: int
    error_message: str  # for OTLP partial success; "" when none


@dataclass(frozen=True)
class TranslateSettings:
    promote_resource_attributes: frozenset[str] = frozenset()
    promote_scope_metadata: bool = False
    max_points: int = 1_000_000
    max_label_value_length: int = 16_384
    lookback_delta_ms: int = 300_000


@dataclass
class _NumberState:
    total: float
    ts_ns: int
    seen_ms: int


@dataclass
class _HistState:
    bounds: tuple[float, ...]
    counts: list[int]
    count: int
    total: float | None
    ts_ns: int
    seen_ms: int


_State = _NumberState | _HistState
_DeltaKey = tuple[str, Labels]


class DeltaState:
    """Running totals that turn DELTA points into cumulative series, across requests.

    At most ``max_series`` series are tracked; when full, series not updated for
    ``max_stale_ms`` are evicted (a later point restarts from its own delta,
    which PromQL sees as a counter reset) and points of further new series are
    rejected. A translation stages its updates and commits them only when it
    succeeds, so a request refused for a limit leaves the totals untouched.
    """

    def __init__(self, max_series: int, max_stale_ms: int = 300_000) -> None:
        self.max_series = max_series
        self.max_stale_ms = max_stale_ms
        self.entries: dict[_DeltaKey, _State] = {}
        self.lock = threading.Lock()

    def evict_stale(self, now_ms: int) -> None:
        cutoff = now_ms - self.max_stale_ms
        for key in [k for k, s in self.entries.items() if s.seen_ms < cutoff]:
            del self.entries[key]

    def commit(self, staged: dict[_DeltaKey, _State]) -> None:
        self.entries.update(staged)


@dataclass
class _ResourceCtx:
    job: str
    instance: str
    promoted: dict[str, str]
    earliest_ns: int = -1
    latest_ns: int = -1

    def see(self, ts_ns: int) -> None:
        if self.earliest_ns < 0 or ts_ns < self.earliest_ns:
            self.earliest_ns = ts_ns
        if ts_ns > self.latest_ns:
            self.latest_ns = ts_ns


@dataclass
class _Base:
    """Labels shared by every series of one data point, without ``__name__``."""

    items: dict[str, str]
    key: Labels  # sorted items, stable across requests (delta state key)
    series: dict[tuple[str, str, str], int] = field(default_factory=dict)
    buckets: dict[tuple[str, tuple[float, ...]], list[int]] = field(default_factory=dict)


class _Translation:
    """One request's translation; accumulates samples column-wise."""

    def __init__(self, settings: TranslateSettings, delta: DeltaState, now_ms: int) -> None:
        self.s = settings
        self.delta = delta
        self.now_ms = now_ms
        self.staged: dict[_DeltaKey, _State] = {}
        self.new_delta_series = 0
        self.swept = False
        self.series: list[Labels] = []
        self.series_index: dict[Labels, int] = {}
        self.idx: list[int] = []
        self.ts: list[int] = []
        self.vals: list[float] = []
        self.metadata: dict[str, MetricMetadata] = {}
        self.exemplars: list[Exemplar] = []
        self.rejected = 0
        self.errors: list[str] = []
        self.seen_target_info: set[tuple[int, int]] = set()
        self.bases: dict[tuple[tuple[str, str], ...], _Base] = {}
        self.metric = ""
        self.res: _ResourceCtx | None = None
        self.scope_labels: dict[str, str] | None = None

    # -- bookkeeping -------------------------------------------------------

    def reject(self, points: int, message: str) -> None:
        self.rejected += points
        if message not in self.errors:
            self.errors.append(message)

    def error_message(self) -> str:
        shown = self.errors[:_MAX_ERRORS_REPORTED]
        more = len(self.errors) - len(shown)
        return "; ".join(shown) + (f"; and {more} more errors" if more > 0 else "")

    def check_points(self) -> None:
        if len(self.ts) > self.s.max_points:
            raise OtlpTooLarge(
                f"OTLP request produces more than {self.s.max_points} samples (limit reached in metric {self.metric!r})"
            )

    def series_id(self, base: _Base, name: str, extra_name: str = "", extra_value: str = "") -> int:
        cache_key = (name, extra_name, extra_value)
        sid = base.series.get(cache_key)
        if sid is not None:
            return sid
        items = dict(base.items)
        if extra_name:
            items[extra_name] = extra_value
        items[METRIC_NAME] = name
        labels: Labels = tuple(sorted(items.items()))
        sid = self.series_index.get(labels)
        if sid is None:
            sid = self.series_index[labels] = len(self.series)
            self.series.append(labels)
        base.series[cache_key] = sid
        return sid

    def emit(self, sid: int, ts_ms: int, value: float) -> None:
        self.idx.append(sid)
        self.ts.append(ts_ms)
        self.vals.append(value)

    def emit_many(self, sids: list[int], ts_ms: int, values: list[float]) -> None:
        self.idx.extend(sids)
        self.ts.extend([ts_ms] * len(sids))
        self.vals.extend(values)

    def bucket_series(self, base: _Base, name: str, bounds: tuple[float, ...]) -> list[int]:
        """Series ids of ``name_bucket`` for each bound and ``+Inf``, cached per bucket layout."""
        sids = base.buckets.get((name, bounds))
        if sids is None:
            bucket = name + "_bucket"
            sids = [self.series_id(base, bucket, "le", _format_le(b)) for b in bounds]
            sids.append(self.series_id(base, bucket, "le", "+Inf"))
            base.buckets[(name, bounds)] = sids
        return sids

    # -- labels ------------------------------------------------------------

    def check_values(self, labels: dict[str, str]) -> None:
        limit = self.s.max_label_value_length
        for name, value in labels.items():
            if len(value) > limit:
                raise OtlpTooLarge(
                    f"label {name!r} of metric {self.metric!r} has a value of {len(value)} characters, "
                    f"more than the limit of {limit}"
                )

    def base(self, attributes: Iterable[Any]) -> _Base:
        pairs = attribute_pairs(attributes)
        cached = self.bases.get(pairs)
        if cached is not None:
            return cached
        labels = attribute_labels(pairs, (METRIC_NAME,))
        res = self.res
        assert res is not None
        for name, value in res.promoted.items():
            if not labels.get(name):
                labels[name] = value
        if res.job:
            labels["job"] = res.job
        if res.instance:
            labels["instance"] = res.instance
        if self.scope_labels is not None:
            labels.update(self.scope_labels)
        self.check_values(labels)
        base = _Base(labels, tuple(sorted(labels.items())))
        self.bases[pairs] = base
        return base

    def enter_resource(self, resource: Any) -> _ResourceCtx:
        attrs = {kv.key: kv.value for kv in resource.attributes}
        job = ""
        if "service.name" in attrs:
            job = any_value_to_str(attrs["service.name"])
            if "service.namespace" in attrs:
                job = any_value_to_str(attrs["service.namespace"]) + "/" + job
        instance = any_value_to_str(attrs["service.instance.id"]) if "service.instance.id" in attrs else ""
        promoted: dict[str, str] = {}
        for kv in resource.attributes:
            if kv.key in self.s.promote_resource_attributes:
                set_label(promoted, build_label_name(kv.key), any_value_to_str(kv.value))
        self.res = _ResourceCtx(job, instance, promoted)
        self.bases = {}
        return self.res

    def enter_scope(self, scope_metrics: Any) -> None:
        self.bases = {}
        scope = scope_metrics.scope
        if not self.s.promote_scope_metadata or not scope.name:
            self.scope_labels = None
            return
        labels: dict[str, str] = {}
        for kv in scope.attributes:
            set_label(labels, build_label_name("otel_scope_" + kv.key), any_value_to_str(kv.value))
        set_label(labels, "otel_scope_name", scope.name)
        set_label(labels, "otel_scope_version", scope.version)
        set_label(labels, "otel_scope_schema_url", scope_metrics.schema_url)
        self.scope_labels = labels

    # -- delta state -------------------------------------------------------

    def delta_lookup(self, key: _DeltaKey) -> _State | None:
        st = self.staged.get(key)
        return st if st is not None else self.delta.entries.get(key)

    def delta_room(self, key: _DeltaKey) -> bool:
        """Whether a new delta series may be tracked; rejects the point's metric otherwise."""
        if len(self.delta.entries) + self.new_delta_series < self.delta.max_series:
            return True
        if not self.swept:
            self.swept = True
            self.delta.evict_stale(self.now_ms)
            return self.delta_room(key)
        return False

    def delta_reject(self, points: int, reason: str) -> None:
        self.reject(points, f"delta temporality point of metric {self.metric!r} dropped: {reason}")

    def stage(self, key: _DeltaKey, state: _State, is_new: bool) -> None:
        if is_new and key not in self.staged:
            self.new_delta_series += 1
        self.staged[key] = state


_Handler = Callable[[_Translation, Any, str, bool], None]


def _ts_ms(ts_ns: int) -> int:
    return ts_ns // 1_000_000


def _number_value(pt: Any) -> float:
    kind = pt.WhichOneof("value")
    if kind == "as_double":
        return float(pt.as_double)
    if kind == "as_int":
        return float(pt.as_int)
    return 0.0


def _exemplars(labels: Labels, raw: Sequence[Any]) -> list[tuple[float, Exemplar]]:
    """(value, exemplar) pairs for the series ``labels``, in the order they came."""
    out: list[tuple[float, Exemplar]] = []
    for ex in raw:
        converted = exemplar_labels(ex)
        if converted is not None:
            value, ex_labels = converted
            out.append((value, Exemplar(labels, ex_labels, _ts_ms(ex.time_unix_nano), value)))
    return out


def _number_points(tr: _Translation, metric: Any, name: str, delta: bool, with_exemplars: bool) -> None:
    points = metric.gauge.data_points if metric.WhichOneof("data") == "gauge" else metric.sum.data_points
    for i, pt in enumerate(points):
        try:
            base = tr.base(pt.attributes)
        except InvalidNameError as e:
            tr.reject(len(points) - i, f"metric {tr.metric!r}: {e}")
            return
        sid = tr.series_id(base, name)
        value = _number_value(pt)
        stale = bool(pt.flags & _NO_RECORDED_VALUE)
        if delta and not stale:
            key: _DeltaKey = (name, base.key)
            st = tr.delta_lookup(key)
            if st is None:
                if not tr.delta_room(key):
                    tr.delta_reject(1, f"more than {tr.delta.max_series} delta series tracked")
                    continue
                st = _NumberState(value, pt.time_unix_nano, tr.now_ms)
                tr.stage(key, st, True)
            elif not isinstance(st, _NumberState) or pt.time_unix_nano <= st.ts_ns:
                tr.delta_reject(1, "out of order")
                continue
            else:
                st = _NumberState(st.total + value, pt.time_unix_nano, tr.now_ms)
                tr.stage(key, st, False)
            value = st.total
        tr.emit(sid, _ts_ms(pt.time_unix_nano), STALE_NAN if stale else value)
        if with_exemplars and len(pt.exemplars):
            tr.exemplars.extend(e for _, e in _exemplars(tr.series[sid], pt.exemplars))


def _gauge(tr: _Translation, metric: Any, name: str, delta: bool) -> None:
    # Prometheus attaches exemplars to sums and histogram buckets, not to gauges.
    _number_points(tr, metric, name, False, with_exemplars=False)


def _sum(tr: _Translation, metric: Any, name: str, delta: bool) -> None:
    _number_points(tr, metric, name, delta, with_exemplars=True)


def _accumulate_histogram(tr: _Translation, name: str, base: _Base, pt: Any) -> _HistState | None:
    """Running totals of a DELTA histogram point, or None when the point is dropped."""
    key: _DeltaKey = (name, base.key)
    bounds = tuple(pt.explicit_bounds)
    counts = list(pt.bucket_counts)
    point_sum = float(pt.sum) if pt.HasField("sum") else None
    st = tr.delta_lookup(key)
    if st is not None and (not isinstance(st, _HistState) or pt.time_unix_nano <= st.ts_ns):
        tr.delta_reject(1, "out of order")
        return None
    if st is None and not tr.delta_room(key):
        tr.delta_reject(1, f"more than {tr.delta.max_series} delta series tracked")
        return None
    if st is None or st.bounds != bounds or len(st.counts) != len(counts):
        # New series, or the bucket layout changed: start over from this point.
        new = _HistState(bounds, counts, pt.count, point_sum, pt.time_unix_nano, tr.now_ms)
    else:
        total = None if point_sum is None else (st.total or 0.0) + point_sum
        new = _HistState(
            bounds,
            [a + b for a, b in zip(st.counts, counts, strict=True)],
            st.count + pt.count,
            total,
            pt.time_unix_nano,
            tr.now_ms,
        )
    tr.stage(key, new, st is None)
    return new


def _histogram(tr: _Translation, metric: Any, name: str, delta: bool) -> None:
    points = metric.histogram.data_points
    for i, pt in enumerate(points):
        try:
            base = tr.base(pt.attributes)
        except InvalidNameError as e:
            tr.reject(len(points) - i, f"metric {tr.metric!r}: {e}")
            return
        stale = bool(pt.flags & _NO_RECORDED_VALUE)
        bounds: Sequence[float] = pt.explicit_bounds
        counts: Sequence[int] = pt.bucket_counts
        count: float = pt.count
        total: float | None = float(pt.sum) if pt.HasField("sum") else None
        if delta and not stale:
            st = _accumulate_histogram(tr, name, base, pt)
            if st is None:
                continue
            bounds, counts, count, total = st.bounds, st.counts, st.count, st.total
        ts = _ts_ms(pt.time_unix_nano)
        if total is not None:
            tr.emit(tr.series_id(base, name + "_sum"), ts, STALE_NAN if stale else total)
        tr.emit(tr.series_id(base, name + "_count"), ts, STALE_NAN if stale else float(count))
        # Buckets: one per (bound, count) pair, cumulative, then +Inf carrying the count.
        n = min(len(bounds), len(counts))
        sids = tr.bucket_series(base, name, tuple(bounds[:n]))
        cumulative = [float(c) for c in accumulate(counts[:n])]
        cumulative.append(float(count))
        tr.emit_many(sids, ts, [STALE_NAN] * len(sids) if stale else cumulative)
        if len(pt.exemplars):
            _bucket_exemplars(tr, sids, bounds[:n], _exemplars((), pt.exemplars))


def _bucket_exemplars(
    tr: _Translation, sids: list[int], bounds: Sequence[float], exemplars: list[tuple[float, Exemplar]]
) -> None:
    """Each exemplar goes to the first bucket holding its value (they arrive sorted by value)."""
    next_ex = 0
    for sid, bound in zip(sids, [*bounds, math.inf], strict=True):
        while next_ex < len(exemplars) and exemplars[next_ex][0] <= bound:
            tr.exemplars.append(_with_series(exemplars[next_ex][1], tr.series[sid]))
            next_ex += 1
    # NaN-valued exemplars fit no bucket; Prometheus puts what is left on +Inf.
    tr.exemplars.extend(_with_series(e, tr.series[sids[-1]]) for _, e in exemplars[next_ex:])


def _with_series(ex: Exemplar, labels: Labels) -> Exemplar:
    return Exemplar(labels, ex.exemplar_labels, ex.ts, ex.value)


def _summary(tr: _Translation, metric: Any, name: str, delta: bool) -> None:
    points = metric.summary.data_points
    for i, pt in enumerate(points):
        try:
            base = tr.base(pt.attributes)
        except InvalidNameError as e:
            tr.reject(len(points) - i, f"metric {tr.metric!r}: {e}")
            return
        stale = bool(pt.flags & _NO_RECORDED_VALUE)
        ts = _ts_ms(pt.time_unix_nano)
        tr.emit(tr.series_id(base, name + "_sum"), ts, STALE_NAN if stale else float(pt.sum))
        tr.emit(tr.series_id(base, name + "_count"), ts, STALE_NAN if stale else float(pt.count))
        for q in pt.quantile_values:
            sid = tr.series_id(base, name, "quantile", _format_le(float(q.quantile)))
            tr.emit(sid, ts, STALE_NAN if stale else float(q.value))


_HANDLERS: dict[str, _Handler] = {
    "gauge": _gauge,
    "sum": _sum,
    "histogram": _histogram,
    "summary": _summary,
}


def _kind_and_type(metric: Any, data: str) -> tuple[MetricKind, str]:
    """otlptranslator's metric kind (for suffixes) and the Prometheus metadata type."""
    if data == "gauge":
        return MetricKind.GAUGE, "gauge"
    if data == "sum":
        if metric.sum.is_monotonic:
            return MetricKind.MONOTONIC_COUNTER, "counter"
        return MetricKind.NON_MONOTONIC_COUNTER, "gauge"
    if data == "histogram":
        return MetricKind.HISTOGRAM, "histogram"
    return MetricKind.SUMMARY, "summary"


def _translate_metric(tr: _Translation, metric: Any, res: _ResourceCtx) -> None:
    tr.metric = metric.name
    data = metric.WhichOneof("data")
    if data is None:
        return  # Prometheus: "unsupported metric type"; there are no points to count.
    points = getattr(metric, data).data_points
    for pt in points:
        res.see(pt.time_unix_nano)
    if not points:
        return
    if data == "exponential_histogram":
        tr.reject(
            len(points),
            f"exponential histogram {metric.name!r} rejected: native histograms are not supported",
        )
        return
    delta = False
    if data in ("sum", "histogram"):
        temporality = getattr(metric, data).aggregation_temporality
        if temporality == _DELTA:
            delta = True
        elif temporality != _CUMULATIVE:
            tr.reject(len(points), f"invalid temporality and type combination for metric {metric.name!r}")
            return
    kind, prom_type = _kind_and_type(metric, data)
    try:
        name = build_metric_name(metric.name, metric.unit, kind)
    except InvalidNameError as e:
        tr.reject(len(points), str(e))
        return
    if name not in tr.metadata:
        tr.metadata[name] = MetricMetadata(name, prom_type, metric.description, build_unit(metric.unit))
    _HANDLERS[data](tr, metric, name, delta)
    tr.check_points()


def _target_info(tr: _Translation, resource: Any, res: _ResourceCtx) -> None:
    """The ``target_info`` series of a resource, sampled across its data's time span."""
    keys = {kv.key for kv in resource.attributes}
    if not keys - set(_IDENTIFYING):
        return  # only job/instance: target_info would say nothing
    tr.metric = "target_info"
    labels = attribute_labels(attribute_pairs(resource.attributes), _IDENTIFYING)
    if res.job:
        labels["job"] = res.job
    if res.instance:
        labels["instance"] = res.instance
    if "job" not in labels and "instance" not in labels:
        return
    tr.check_values(labels)
    base = _Base(labels, tuple(sorted(labels.items())))
    sid = tr.series_id(base, "target_info")
    # One sample every half lookback delta from the earliest to the latest
    # point, so the series is found by any query over that span.
    interval_ns = tr.s.lookback_delta_ms * 1_000_000 // 2
    span = res.latest_ns - res.earliest_ns
    if len(tr.ts) + span // max(interval_ns, 1) + 2 > tr.s.max_points:
        raise OtlpTooLarge(
            f"OTLP request produces more than {tr.s.max_points} samples "
            f"(target_info over {span // 1_000_000_000} s of data)"
        )
    stamps = [_ts_ms(t) for t in range(res.earliest_ns, res.latest_ns, max(interval_ns, 1))]
    stamps.append(_ts_ms(res.latest_ns))
    for ts in stamps:
        if (sid, ts) not in tr.seen_target_info:
            tr.seen_target_info.add((sid, ts))
            tr.emit(sid, ts, 1.0)
    tr.metadata.setdefault("target_info", MetricMetadata("target_info", "gauge", "Target metadata", ""))


def _count_points_of(metric: Any) -> int:
    data = metric.WhichOneof("data")
    return len(getattr(metric, data).data_points) if data is not None else 0


def _count_points(resource_metrics: Any) -> int:
    return sum(_count_points_of(m) for sm in resource_metrics.scope_metrics for m in sm.metrics)


def _translate_resource(tr: _Translation, rm: Any) -> None:
    try:
        res = tr.enter_resource(rm.resource)
    except InvalidNameError as e:
        tr.reject(_count_points(rm), f"resource attribute: {e}")
        return
    for sm in rm.scope_metrics:
        try:
            tr.enter_scope(sm)
        except InvalidNameError as e:
            tr.reject(sum(_count_points_of(m) for m in sm.metrics), f"scope attribute: {e}")
            continue
        for metric in sm.metrics:
            _translate_metric(tr, metric, res)
    if res.earliest_ns >= 0:
        try:
            _target_info(tr, rm.resource, res)
        except InvalidNameError as e:
            tr.reject(0, f"target_info: {e}")


def translate_request(
    req: Any, now_ms: int, settings: TranslateSettings, delta: DeltaState
) -> OtlpMetricsResult:
    """Translate an ``ExportMetricsServiceRequest``; raises ``OtlpTooLarge`` past a limit."""
    total = sum(_count_points(rm) for rm in req.resource_metrics)
    if total > settings.max_points:
        raise OtlpTooLarge(
            f"OTLP request has {total} data points, more than the limit of {settings.max_points}"
        )
    with delta.lock:
        tr = _Translation(settings, delta, now_ms)
        for rm in req.resource_metrics:
            _translate_resource(tr, rm)
        tr.check_points()
        delta.commit(tr.staged)
    batch = SampleBatch(
        tr.series,
        np.array(tr.idx, dtype=np.int64),
        np.array(tr.ts, dtype=np.int64),
        np.array(tr.vals, dtype=np.float64),
    )
    return OtlpMetricsResult(batch, list(tr.metadata.values()), tr.exemplars, tr.rejected, tr.error_message())
