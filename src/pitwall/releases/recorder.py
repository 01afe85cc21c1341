"""Flagger's own metrics (``pkg/metrics/recorder.go``, Flagger v1.44.0) that the Canary controller records as
it runs, written into pitwall's metric store under Flagger's names, labels and types with ``job="flagger"``:

- ``flagger_info{version, mesh_provider}`` gauge, 1;
- ``flagger_canary_duration_seconds{name, namespace}`` histogram (Prometheus' default buckets): the seconds
  of each analysis tick that ran checks, from the tick's start (Flagger's ``SetDuration`` deferred in
  ``advanceCanary``);
- ``flagger_canary_metric_analysis{name, namespace, metric}`` gauge: the last value of each metric check
  (``request-duration`` in seconds, as Flagger records it);
- ``flagger_canary_successes_total`` / ``flagger_canary_failures_total`` counters
  ``{name, namespace, deployment_strategy, analysis_status}``.

``name`` is the target's name, as in Flagger. The weight, status and total gauges are written from the
Canaries' status by ``controllers.kube_state_metrics``. Values live in memory, as in Flagger's process (a
restart starts the counters again, which ``rate()`` reads as a counter reset); every series is written on each
change and every ``interval_s``, as a scrape would, so it stays within PromQL's lookback.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from pitwall.core.labels import Labels, labels_from_dict
from pitwall.core.tasks import Supervisor
from pitwall.metrics import STALE_NAN, Appender, MetricMetadata, SampleBatch

__all__ = ["BUCKETS", "COMPLETED", "FLAGGER_VERSION", "SKIPPED", "FlaggerMetrics"]

log = logging.getLogger(__name__)
JOB = "flagger"
FLAGGER_VERSION = "1.44.0"  # the Flagger release whose CRDs and behaviour pitwall follows (crds/PROVENANCE.md)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # client_golang's DefBuckets
COMPLETED, SKIPPED = "completed", "skipped"  # Flagger's analysis_status values
Key = tuple[str, ...]
_META = (
    MetricMetadata("flagger_info", "gauge", "Flagger version and mesh provider information"),
    MetricMetadata("flagger_canary_duration_seconds", "histogram", "Seconds spent performing canary analysis."),
    MetricMetadata("flagger_canary_metric_analysis", "gauge", "Last canary analysis result per metric"),
    MetricMetadata("flagger_canary_successes_total", "counter", "Total number of canary successes"),
    MetricMetadata("flagger_canary_failures_total", "counter", "Total number of canary failures"),
)


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        for i, b in enumerate(BUCKETS):
            if v <= b:
                self.counts[i] += 1
        self.total += 1
        self.sum += v


class FlaggerMetrics:
    """Flagger's Recorder over pitwall's metric store (``appender`` None: kept in memory only)."""

    def __init__(self, appender: Appender | None, *, tenant: str = "default", interval_s: float = 15.0,
                 mesh_provider: str = "istio", clock: Callable[[], float] = time.time) -> None:
        self.appender = appender
        self.tenant = tenant
        self.interval_s = interval_s
        self.clock = clock
        self.info = (FLAGGER_VERSION, mesh_provider)
        self.durations: dict[Key, _Histogram] = {}  # (name, namespace)
        self.analysis: dict[Key, float] = {}  # (name, namespace, metric)
        self.successes: dict[Key, float] = {}  # (name, namespace, deployment_strategy, analysis_status)
        self.failures: dict[Key, float] = {}
        self.tasks = Supervisor("flagger-metrics")
        self._changed = True
        self._last: set[Labels] = set()
        self._meta_written = False
        self.name = "flagger-metrics"

    # ---- Flagger's Recorder ---------------------------------------------------------------------------------

    def set_duration(self, name: str, namespace: str, seconds: float) -> None:
        self.durations.setdefault((name, namespace), _Histogram()).observe(seconds)
        self._changed = True

    def set_analysis(self, name: str, namespace: str, metric: str, value: float) -> None:
        self.analysis[(name, namespace, metric)] = value
        self._changed = True

    def inc_successes(self, name: str, namespace: str, strategy: str, analysis_status: str) -> None:
        key = (name, namespace, strategy, analysis_status)
        self.successes[key] = self.successes.get(key, 0.0) + 1
        self._changed = True

    def inc_failures(self, name: str, namespace: str, strategy: str, analysis_status: str) -> None:
        key = (name, namespace, strategy, analysis_status)
        self.failures[key] = self.failures.get(key, 0.0) + 1
        self._changed = True

    def forget(self, name: str, namespace: str) -> None:
        """Drop a deleted Canary's series (they get a staleness marker at the next write)."""
        for d in (self.durations, self.analysis, self.successes, self.failures):
            for key in [k for k in d if k[:2] == (name, namespace)]:
                del d[key]
        self._changed = True

    # ---- series ---------------------------------------------------------------------------------------------

    def rows(self, ts_ms: int) -> list[tuple[Labels, int, float]]:
        """Every series' current sample at ``ts_ms``."""
        out: list[tuple[Labels, int, float]] = []

        def add(metric: str, labels: dict[str, str], v: float) -> None:
            out.append((labels_from_dict({**labels, "__name__": metric, "job": JOB}), ts_ms, float(v)))

        add("flagger_info", {"version": self.info[0], "mesh_provider": self.info[1]}, 1.0)
        for (name, ns), h in sorted(self.durations.items()):
            base = {"name": name, "namespace": ns}
            for b, n in zip(BUCKETS, h.counts, strict=True):
                add("flagger_canary_duration_seconds_bucket", {**base, "le": f"{b:g}"}, n)
            add("flagger_canary_duration_seconds_bucket", {**base, "le": "+Inf"}, h.total)
            add("flagger_canary_duration_seconds_sum", base, h.sum)
            add("flagger_canary_duration_seconds_count", base, h.total)
        for (name, ns, metric), v in sorted(self.analysis.items()):
            if math.isfinite(v):
                add("flagger_canary_metric_analysis", {"name": name, "namespace": ns, "metric": metric}, v)
        for family, counts in (("flagger_canary_successes_total", self.successes),
                               ("flagger_canary_failures_total", self.failures)):
            for (name, ns, strategy, status), v in sorted(counts.items()):
                add(family, {"name": name, "namespace": ns, "deployment_strategy": strategy,
                             "analysis_status": status}, v)
        return out

    async def write_once(self, ts_ms: int | None = None) -> int:
        """Append every series (and a staleness marker for each that went); the number of samples written."""
        if self.appender is None:
            return 0
        ts = int(self.clock() * 1000) if ts_ms is None else ts_ms
        rows = self.rows(ts)
        current = {lbl for lbl, _, _ in rows}
        rows += [(lbl, ts, STALE_NAN) for lbl in sorted(self._last - current)]
        if not self._meta_written:
            await self.appender.append_metadata(self.tenant, list(_META))
            self._meta_written = True
        await self.appender.append(self.tenant, SampleBatch.from_rows(rows))
        self._last = current
        self._changed = False
        return len(rows)

    async def flush(self) -> None:
        """Write now if anything changed since the last write (the controller calls this after each tick)."""
        if self._changed:
            try:
                await self.write_once()
            except Exception as e:  # metrics are best effort; the release goes on
                log.warning("could not write Flagger's metrics: %s", e)

    # ---- core.lifecycle.Component ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.tasks.spawn(self._run(), name="write")

    async def stop(self) -> None:
        await self.tasks.stop()

    async def _run(self) -> None:
        while True:
            self._changed = True
            await self.flush()
            await asyncio.sleep(self.interval_s)
