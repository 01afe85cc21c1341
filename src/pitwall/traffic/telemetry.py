"""Istio's standard metrics for every proxied HTTP request, straight into the metric store.

Per request the proxy calls ``record`` with a tuple of label values and
three numbers: one dict lookup and three bucket searches, no allocation
beyond the key. ``flush`` (every ``interval_s``, from a task) turns the
cumulative counts into samples, as a Prometheus scraping an Envoy sidecar
would store them: ``istio_requests_total``,
``istio_request_duration_milliseconds_{bucket,sum,count}``,
``istio_request_bytes_*`` and ``istio_response_bytes_*``, once with
``reporter="source"`` and once with ``reporter="destination"`` (both
sidecars of a hop report in Istio; pitwall is both ends), with Istio's
label names and bucket bounds.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field

from pitwall.core.labels import Labels, labels_from_dict
from pitwall.core.tasks import Supervisor
from pitwall.metrics import Appender, SampleBatch

__all__ = ["DURATION_BUCKETS_MS", "LABELS", "SIZE_BUCKETS", "MeshTelemetry"]

log = logging.getLogger(__name__)

# Istio's stats defaults (proxy/extensions/stats): milliseconds, and bytes.
DURATION_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
                       1800000, 3600000)
SIZE_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000)

# The order of the label values ``record`` takes.
LABELS = (
    "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_canonical_service", "source_canonical_revision", "source_cluster",
    "destination_service", "destination_service_name", "destination_service_namespace",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_canonical_service", "destination_canonical_revision",
    "destination_cluster", "request_protocol", "response_code", "grpc_response_status", "response_flags",
    "connection_security_policy",
)
_IDLE_FLUSH_S = 60.0
_MAX_SERIES = 20_000  # label sets kept; more are counted under response_flags="overflow" of the same service


@dataclass
class _Acc:
    count: int = 0
    dur: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_MS) + 1))
    dur_sum: float = 0.0
    req: list[int] = field(default_factory=lambda: [0] * (len(SIZE_BUCKETS) + 1))
    req_sum: float = 0.0
    resp: list[int] = field(default_factory=lambda: [0] * (len(SIZE_BUCKETS) + 1))
    resp_sum: float = 0.0


class MeshTelemetry:
    """Aggregates per label set in memory; ``flush`` appends the cumulative series (a Component)."""

    name = "mesh-telemetry"

    def __init__(self, appender: Appender | None, *, tenant: str = "default", interval_s: float = 5.0) -> None:
        self.appender = appender
        self.tenant = tenant
        self.interval_s = interval_s
        self.tasks = Supervisor("mesh-telemetry")
        self._acc: dict[tuple[str, ...], _Acc] = {}
        self._dirty = False

    def record(self, key: tuple[str, ...], duration_ms: float, request_bytes: int, response_bytes: int) -> None:
        """Count one request under the label values ``key`` (in ``LABELS`` order)."""
        acc = self._acc.get(key)
        if acc is None:
            if len(self._acc) >= _MAX_SERIES:
                key = (*key[:-2], "overflow", key[-1])
                acc = self._acc.get(key)
            if acc is None:
                acc = self._acc[key] = _Acc()
        acc.count += 1
        acc.dur[bisect.bisect_left(DURATION_BUCKETS_MS, duration_ms)] += 1
        acc.dur_sum += duration_ms
        acc.req[bisect.bisect_left(SIZE_BUCKETS, request_bytes)] += 1
        acc.req_sum += request_bytes
        acc.resp[bisect.bisect_left(SIZE_BUCKETS, response_bytes)] += 1
        acc.resp_sum += response_bytes
        self._dirty = True

    def series(self) -> dict[tuple[str, ...], _Acc]:
        return self._acc

    def rows(self, ts_ms: int) -> list[tuple[Labels, int, float]]:
        rows: list[tuple[Labels, int, float]] = []
        for key, acc in self._acc.items():
            base = dict(zip(LABELS, key, strict=True))
            for reporter in ("source", "destination"):
                lb = {**base, "reporter": reporter}
                rows.append((labels_from_dict({**lb, "__name__": "istio_requests_total"}), ts_ms, float(acc.count)))
                _histogram(rows, "istio_request_duration_milliseconds", lb, DURATION_BUCKETS_MS, acc.dur,
                           acc.dur_sum, acc.count, ts_ms)
                _histogram(rows, "istio_request_bytes", lb, SIZE_BUCKETS, acc.req, acc.req_sum, acc.count, ts_ms)
                _histogram(rows, "istio_response_bytes", lb, SIZE_BUCKETS, acc.resp, acc.resp_sum, acc.count,
                           ts_ms)
        return rows

    async def flush(self) -> int:
        """Append the current cumulative values of every series; the number of samples."""
        if self.appender is None or not self._acc:
            return 0
        rows = self.rows(int(time.time() * 1000))
        self._dirty = False
        await self.appender.append(self.tenant, SampleBatch.from_rows(rows))
        return len(rows)

    async def start(self) -> None:
        if self.appender is not None:
            self.tasks.spawn(self._loop(), name="flush")

    async def stop(self) -> None:
        await self.tasks.stop()
        with contextlib.suppress(Exception):
            await self.flush()

    @property
    def healthy(self) -> bool:
        return self.tasks.healthy

    async def _loop(self) -> None:
        idle = 0
        while True:
            await asyncio.sleep(self.interval_s)
            idle += 1
            if not self._dirty and idle * self.interval_s < _IDLE_FLUSH_S:
                continue  # nothing new: the last samples stand, rewritten now and then so they never go stale
            idle = 0
            try:
                await self.flush()
            except Exception:
                log.exception("mesh telemetry: flush failed")


def _histogram(rows: list[tuple[Labels, int, float]], name: str, lb: dict[str, str], bounds: tuple[float, ...],
               counts: list[int], total: float, count: int, ts_ms: int) -> None:
    acc = 0
    for le, n in zip((*bounds, math.inf), counts, strict=True):
        acc += n
        rows.append((labels_from_dict({**lb, "__name__": name + "_bucket", "le": _le(le)}), ts_ms, float(acc)))
    rows.append((labels_from_dict({**lb, "__name__": name + "_sum"}), ts_ms, total))
    rows.append((labels_from_dict({**lb, "__name__": name + "_count"}), ts_ms, float(count)))


def _le(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    return str(int(v)) if float(v).is_integer() else str(v)
