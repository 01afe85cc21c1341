"""The mesh's telemetry of a small shop, as pitwall's mesh writes it, for the service map's tests.

Three workloads of namespace ``shop`` (each series under both ``reporter`` values): callers outside the
mesh send to ``frontend``, ``frontend`` calls ``checkout`` (HTTP, some 503s, some with Envoy's ``UO``),
``checkout`` calls ``ledger`` (gRPC, one UNAVAILABLE, some retried: ``URX``), and ``ledger`` holds a TCP
connection to ``postgres``. A sample every 10 s over the ten minutes before ``end_ms``; the counted
requests land mid-range, so every rate over those ten minutes is (requests) / 590 s.
"""

from __future__ import annotations

import math

__all__ = ["NS", "REQUESTS", "SAMPLED_S", "SPAN_S", "TCP", "mesh_series"]

SPAN_S = 600
SAMPLED_S = 590  # the first sample to the last: rate() extrapolates these to the 600 s window
NS = "shop"
BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000,
           3600000)
NS = "shop"


def _peer(side: str, workload: str) -> dict[str, str]:
    if workload == "unknown":
        return {f"{side}_workload": "unknown", f"{side}_workload_namespace": "unknown",
                f"{side}_canonical_service": "unknown", f"{side}_app": "unknown"}
    return {f"{side}_workload": workload, f"{side}_workload_namespace": NS, f"{side}_canonical_service": workload,
            f"{side}_app": workload}


def _edge(src: str, dst: str, protocol: str) -> dict[str, str]:
    return {**_peer("source", src), **_peer("destination", dst), "destination_service_name": dst,
            "destination_service_namespace": NS, "destination_service": f"{dst}.{NS}.svc.cluster.local",
            "request_protocol": protocol}


# (source, destination, protocol, response_code, grpc status, response_flags, requests counted, bucket le)
REQUESTS = [
    ("unknown", "frontend", "http", "200", "", "-", 300, 5),
    ("frontend", "checkout", "http", "200", "", "-", 108, 25),
    ("frontend", "checkout", "http", "503", "", "-", 6, 25),
    ("frontend", "checkout", "http", "503", "", "UO", 6, 25),
    ("checkout", "ledger", "grpc", "200", "0", "-", 54, 100),
    ("checkout", "ledger", "grpc", "200", "0", "URX", 5, 100),
    ("checkout", "ledger", "grpc", "200", "14", "-", 1, 100),
]
TCP = ("ledger", "postgres", 1000 * SAMPLED_S, 200 * SAMPLED_S)  # bytes sent and received: 1000 and 200 B/s
BASE = 10  # every counter's value before the counted requests: rate() must not extrapolate them to zero


def _samples(end_ms: int, delta: float, base: float) -> list[tuple[int, float]]:
    """A sample every 10 s from the range's start + 5 s; the counter grows by ``delta`` mid-range."""
    start = end_ms - SPAN_S * 1000
    return [(start + 5000 + 10_000 * k, base + (delta if k >= 30 else 0.0)) for k in range(SPAN_S // 10)]


def mesh_series(end_ms: int) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    """The Istio series of the module's story, under both reporters as the mesh writes them."""
    out: list[tuple[dict[str, str], list[tuple[int, float]]]] = []
    for reporter in ("source", "destination"):
        for src, dst, proto, code, grpc, flags, n, le in REQUESTS:
            lb = {**_edge(src, dst, proto), "reporter": reporter, "response_code": code,
                  "grpc_response_status": grpc, "response_flags": flags}
            out.append(({**lb, "__name__": "istio_requests_total"}, _samples(end_ms, n, BASE)))
            for b in (*BUCKETS, math.inf):  # every request took between the bucket below ``le`` and ``le``
                grows = b >= le
                out.append(({**lb, "__name__": "istio_request_duration_milliseconds_bucket",
                             "le": "+Inf" if b == math.inf else (str(int(b)) if float(b).is_integer() else str(b))},
                            _samples(end_ms, n if grows else 0, BASE if grows else 0)))
        src, dst, sent, received = TCP
        lb = {**_edge(src, dst, "tcp"), "reporter": reporter, "response_flags": "-"}
        out.append(({**lb, "__name__": "istio_tcp_sent_bytes_total"}, _samples(end_ms, sent, 10_000)))
        out.append(({**lb, "__name__": "istio_tcp_received_bytes_total"}, _samples(end_ms, received, 10_000)))
    return out


