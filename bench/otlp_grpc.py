"""OTLP/gRPC against OTLP/HTTP ingest, and Tempo/Jaeger search latencies, on one ``pitwall server``.

The same realistic span requests as ``traces_ingest.py`` (1000 spans each)
go first over OTLP/HTTP protobuf, then over OTLP/gRPC (the collector's
``TraceService/Export``, raw bytes on a ``grpc`` channel), each from
``--threads`` client threads; rate = spans / wall time and spans per server
CPU-second (the head holds every span: no block flush lands in either
phase). Then TraceQL (``/api/search``) and Jaeger (``/api/traces``)
searches run over what was stored, medians of 5.

Usage: ``python bench/otlp_grpc.py [--requests 200] [--threads 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Server, free_port
from traces_ingest import SPANS_PER_REQ, Encoder

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _run(send: Callable[[bytes], None], bodies: list[bytes], threads: int) -> float:
    """Wall seconds to send every body, ``threads`` at a time."""
    todo = list(reversed(bodies))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                body = todo.pop()
            send(body)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def _phase(name: str, srv: Server, send: Callable[[bytes], None], bodies: list[bytes], threads: int) -> None:
    cpu0 = srv.cpu_seconds()
    wall = _run(send, bodies, threads)
    cpu = srv.cpu_seconds() - cpu0
    spans = len(bodies) * SPANS_PER_REQ
    print(f"{name:10s} {spans:>8,} spans  {spans / wall:>9,.0f} spans/s  {spans / cpu:>9,.0f} spans per server "
          f"CPU-second", flush=True)


def _median_ms(fn: Callable[[], httpx.Response]) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(5):
        t0 = time.perf_counter()
        r = fn()
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        doc = r.json()
        n = len(doc.get("traces", doc.get("data") or []))
    return statistics.median(times), n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200, help="requests of 1000 spans per protocol")
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pitwall-bench-otlp-grpc"))
    args = ap.parse_args()
    grpc_port = free_port()
    os.environ["PITWALL_OTLP_GRPC__LISTEN"] = f"127.0.0.1:{grpc_port}"
    # no head flush inside either phase, so neither is charged for the other's spans
    os.environ["PITWALL_TRACES__HEAD_MAX_SPANS"] = str(4 * args.requests * SPANS_PER_REQ)
    srv = Server("pitwall", args.workdir)
    enc = Encoder()
    t0 = time.time_ns() - 3_600_000_000_000
    span_ns = 3_000_000_000_000 // (2 * args.requests * SPANS_PER_REQ)
    http_bodies = [enc.request(i, t0, span_ns)[0] for i in range(args.requests)]
    grpc_bodies = [enc.request(i, t0, span_ns)[0] for i in range(args.requests, 2 * args.requests)]
    try:
        with httpx.Client(timeout=60) as client:
            def post(body: bytes) -> None:
                client.post(f"{srv.url}/v1/traces", content=body,
                            headers={"content-type": "application/x-protobuf"}).raise_for_status()

            _phase("OTLP/HTTP", srv, post, http_bodies, args.threads)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            call = ch.unary_unary(EXPORT)
            _phase("OTLP/gRPC", srv, lambda b: call(b, timeout=60), grpc_bodies, args.threads)
        now = int(time.time())
        window = {"start": str(now - 7200), "end": str(now + 60)}
        queries = {
            "TraceQL service + status>=500": '{ resource.service.name = "svc1" && span.http.status_code >= 500 }',
            "TraceQL attribute alone": '{ span.http.url = "http://svc2:8080/api/v1/items/7" }',
            "TraceQL structural": '{ resource.service.name = "svc0" && kind = server } > { status = error }',
        }
        with httpx.Client(timeout=120) as client:
            for label, q in queries.items():
                ms, n = _median_ms(lambda q=q: client.get(f"{srv.url}/api/search",
                                                          params={"q": q, "limit": "20", **window}))
                print(f"{label:32s} {ms:8.1f} ms  ({n} traces)", flush=True)
            ms, n = _median_ms(lambda: client.get(f"{srv.url}/api/traces", params={
                "service": "svc1", "tags": '{"http.status_code":"500"}', "limit": "20",
                "start": str((now - 7200) * 1_000_000), "end": str((now + 60) * 1_000_000)}))
            print(f"{'Jaeger service + tag':32s} {ms:8.1f} ms  ({n} traces)", flush=True)
        print(f"server RSS {srv.rss_mib()[0]:.0f} MiB", flush=True)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
