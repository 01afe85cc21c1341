"""Istio's standard metrics for every proxied HTTP request and TCP connection, into the metric store.

Per request the proxy calls ``record`` with a tuple of label values and
three numbers: one dict lookup and three bucket searches, no allocation
beyond the key. ``flush`` (every ``interval_s``, from a task) turns the
cumulative counts into samples, as a Prometheus scraping an Envoy sidecar
would store them: ``istio_requests_total``,
``istio_request_duration_milliseconds_{bucket,sum,count}``,
``istio_request_bytes_*`` and ``istio_response_bytes_*``, once with
``reporter="source"`` and once with ``reporter="destination"`` (both
sidecars of a hop report in Istio; pitwall is both ends), with Istio's
label names and bucket bounds. The two differ as istio/proxy's stats filter
makes them: ``connection_security_policy`` is ``unknown`` on the source
reporter and ``mutual_tls``/``none`` on the destination reporter; traffic
to the PassthroughCluster (a pod's call to a host that is no Service) has
the source reporter only.

Relayed TCP connections (TCP ports, and HTTP/2 relayed as bytes on an HTTP
port) count as Istio's ``istio_tcp_connections_opened_total``,
``istio_tcp_connections_closed_total``, ``istio_tcp_received_bytes_total``
(bytes from the client: the request direction) and
``istio_tcp_sent_bytes_total`` (bytes to the client: the response
direction), under the same label set with ``request_protocol="tcp"`` and
no ``response_code``/``grpc_response_status`` (istio/proxy's stats filter
adds those for HTTP only). As Envoy's filter reads the connection's byte
meter on a timer, ``flush`` reads the byte counts the relay already keeps
per connection (``ByteMeter``) and adds what grew since the last read: the
relay's hot path does no extra work, and open connections show traffic.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

from pitwall.core.labels import Labels, labels_from_dict
from pitwall.core.tasks import Supervisor
from pitwall.metrics import Appender, SampleBatch
from pitwall.traffic.pods import UNKNOWN, PodInfo

__all__ = ["DURATION_BUCKETS_MS", "LABELS", "MUTUAL_TLS", "NO_DESTINATION", "PASSTHROUGH", "PLAINTEXT",
           "SIZE_BUCKETS", "ByteMeter", "MeshTelemetry", "TcpReport", "mesh_labels", "passthrough_labels"]

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
# ``connection_security_policy`` of the destination reporter (istio/proxy: "mutual_tls" when the
# inbound connection was mTLS, "none" otherwise); the source reporter always says "unknown".
MUTUAL_TLS = "mutual_tls"
PLAINTEXT = "none"
NO_DESTINATION = ""  # in a key's last slot: no destination sidecar reports (the source reporter only)
PASSTHROUGH = "PassthroughCluster"  # Istio's destination_service_name of ALLOW_ANY traffic to no Service
TCP_METRICS = ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
               "istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total")
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


def mesh_labels(src: PodInfo | None, dest: PodInfo | None, service: tuple[str, str, str], protocol: str,
                code: str, grpc_status: str, flags: str, security: str = PLAINTEXT) -> tuple[str, ...]:
    """The label values (``LABELS`` order) of one request or connection from ``src`` (None: a caller
    that is no mesh pod) to ``dest`` (None: no endpoint was reached) of ``service`` (fqdn, name,
    namespace). TCP passes ``code``/``grpc_status`` empty: those labels are then absent.

    ``security`` is the destination reporter's ``connection_security_policy``: ``MUTUAL_TLS`` when the
    hop authenticated both peers, ``PLAINTEXT`` otherwise, ``NO_DESTINATION`` when no destination
    sidecar reports (the PassthroughCluster). As istio/proxy's stats filter, both principals are the
    peers' SPIFFE identities only on a mutual-TLS hop (read from the certificates), ``unknown``
    otherwise; the source reporter's policy is always ``unknown`` (``rows``)."""
    s = src or UNKNOWN
    d = dest or UNKNOWN
    mtls = security == MUTUAL_TLS
    return (s.workload, s.namespace, s.principal if mtls and src is not None else "unknown", s.app, s.version,
            s.canonical_service, s.canonical_revision, "Kubernetes", *service, d.workload, d.namespace,
            d.principal if mtls and dest is not None and dest is not UNKNOWN else "unknown", d.app, d.version,
            d.canonical_service, d.canonical_revision, "Kubernetes", protocol, code, grpc_status, flags, security)


class ByteMeter(Protocol):
    """What the relay counts of one connection as it goes (plain int adds on its hot path)."""

    up_bytes: int  # from the client (Istio's "received")
    down_bytes: int  # to the client (Istio's "sent")


@dataclass
class _TcpAcc:
    opened: int = 0
    closed: int = 0
    received: int = 0
    sent: int = 0


class TcpReport:
    """One open connection as the telemetry follows it: its series and what was reported so far."""

    __slots__ = ("acc", "down", "meter", "up")

    def __init__(self, acc: _TcpAcc, meter: ByteMeter) -> None:
        self.acc, self.meter, self.up, self.down = acc, meter, 0, 0

    def take(self) -> bool:
        """Add what the meter grew by since the last call to the series; whether it grew."""
        up, down = self.meter.up_bytes, self.meter.down_bytes
        if up == self.up and down == self.down:
            return False
        self.acc.received += up - self.up
        self.acc.sent += down - self.down
        self.up, self.down = up, down
        return True


class MeshTelemetry:
    """Aggregates per label set in memory; ``flush`` appends the cumulative series (a Component)."""

    name = "mesh-telemetry"

    def __init__(self, appender: Appender | None, *, tenant: str = "default", interval_s: float = 5.0) -> None:
        self.appender = appender
        self.tenant = tenant
        self.interval_s = interval_s
        self.tasks = Supervisor("mesh-telemetry")
        self._acc: dict[tuple[str, ...], _Acc] = {}
        self._tcp: dict[tuple[str, ...], _TcpAcc] = {}
        self._open: set[TcpReport] = set()  # TCP connections open now, read at each flush
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

    def tcp_opened(self, key: tuple[str, ...], meter: ByteMeter) -> TcpReport:
        """Count a relayed TCP connection as opened under ``key`` (``LABELS`` order, built by
        ``mesh_labels`` with protocol ``tcp``); its bytes are read from ``meter`` at each flush until
        ``tcp_closed``."""
        acc = self._tcp.get(key)
        if acc is None:
            if len(self._tcp) >= _MAX_SERIES:
                key = (*key[:-2], "overflow", key[-1])
                acc = self._tcp.get(key)
            if acc is None:
                acc = self._tcp[key] = _TcpAcc()
        acc.opened += 1
        report = TcpReport(acc, meter)
        self._open.add(report)
        self._dirty = True
        return report

    def tcp_closed(self, report: TcpReport) -> None:
        """The connection ended: its last bytes and the close are counted."""
        if report in self._open:
            self._open.discard(report)
            report.take()
            report.acc.closed += 1
            self._dirty = True

    def open_connections(self) -> int:
        return len(self._open)

    def _take_open(self) -> None:
        """Bring the byte counts of the connections still open up to date (what Envoy's timer does)."""
        for report in self._open:
            if report.take():
                self._dirty = True

    def series(self) -> dict[tuple[str, ...], _Acc]:
        return self._acc

    def tcp_series(self) -> dict[tuple[str, ...], _TcpAcc]:
        self._take_open()
        return self._tcp

    def rows(self, ts_ms: int) -> list[tuple[Labels, int, float]]:
        rows: list[tuple[Labels, int, float]] = []
        for key, acc in self._acc.items():
            for lb in _reporters(key):
                rows.append((labels_from_dict({**lb, "__name__": "istio_requests_total"}), ts_ms, float(acc.count)))
                _histogram(rows, "istio_request_duration_milliseconds", lb, DURATION_BUCKETS_MS, acc.dur,
                           acc.dur_sum, acc.count, ts_ms)
                _histogram(rows, "istio_request_bytes", lb, SIZE_BUCKETS, acc.req, acc.req_sum, acc.count, ts_ms)
                _histogram(rows, "istio_response_bytes", lb, SIZE_BUCKETS, acc.resp, acc.resp_sum, acc.count,
                           ts_ms)
        for key, tcp in self._tcp.items():
            values = (tcp.opened, tcp.closed, tcp.received, tcp.sent)
            for lb in _reporters(key):
                for name, v in zip(TCP_METRICS, values, strict=True):
                    rows.append((labels_from_dict({**lb, "__name__": name}), ts_ms, float(v)))
        return rows

    async def flush(self) -> int:
        """Append the current cumulative values of every series; the number of samples."""
        if self.appender is None:
            return 0
        self._take_open()
        if not self._acc and not self._tcp:
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
            self._take_open()
            if not self._dirty and idle * self.interval_s < _IDLE_FLUSH_S:
                continue  # nothing new: the last samples stand, rewritten now and then so they never go stale
            idle = 0
            try:
                await self.flush()
            except Exception:
                log.exception("mesh telemetry: flush failed")


def passthrough_labels(src: PodInfo, host: str, protocol: str, code: str, flags: str) -> tuple[str, ...]:
    """The labels of a pod's request (``protocol`` http) or tunnel (tcp) to a host that is no Service,
    as Istio's ``PassthroughCluster`` counts it: ``destination_service`` the request's authority for
    HTTP (istio/proxy's host-header fallback), ``unknown`` for TCP (no header to read); no destination
    workload, and only the source reporter (no sidecar at the other end)."""
    return mesh_labels(src, None, (host if protocol != "tcp" and host else "unknown", PASSTHROUGH, "unknown"),
                       protocol, code, "", flags, NO_DESTINATION)


def _reporters(key: tuple[str, ...]) -> list[dict[str, str]]:
    """The label sets of ``key``'s series: the source reporter's (policy ``unknown``) and, unless no
    destination sidecar reports, the destination reporter's (the policy in the key)."""
    base = dict(zip(LABELS, key, strict=True))
    out = [{**base, "connection_security_policy": "unknown", "reporter": "source"}]
    if key[-1] != NO_DESTINATION:
        out.append({**base, "reporter": "destination"})
    return out


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
