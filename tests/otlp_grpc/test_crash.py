"""``pitwall server`` (the real CLI) takes OTLP/gRPC on its configured port; kill -9 under gRPC span load
loses no acknowledged span (the same WAL as OTLP/HTTP)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest

from tests.conftest import free_port, start_pitwall_process, wait_ready
from tests.traces.helpers import otlp_request

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def test_sigkill_during_grpc_span_ingest_loses_nothing_acknowledged(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    port, grpc_port = free_port(), free_port()
    monkeypatch.setenv("PITWALL_OTLP_GRPC__LISTEN", f"127.0.0.1:{grpc_port}")
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    proc = start_pitwall_process(data, port)
    wait_ready(url, proc=proc)
    acked: set[str] = set()
    stop = threading.Event()

    def writer(w: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            call = ch.unary_unary(EXPORT)
            n = 0
            while not stop.is_set() and n < 100_000:
                tid = f"{w + 1:08x}{n + 1:024x}"
                spans = [{"trace": tid, "span": f"{i + 1:016x}", "parent": f"{i:016x}" if i else ""}
                         for i in range(5)]
                try:
                    call(otlp_request("grpc-crash", spans), timeout=5, compression=grpc.Compression.Gzip)
                except grpc.RpcError:
                    return
                acked.add(tid)
                n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) >= 200, f"only {len(acked)} requests acknowledged before the kill"

    proc = start_pitwall_process(data, port)
    try:
        wait_ready(url, proc=proc, timeout=60)
        with httpx.Client(timeout=10) as c:
            for tid in sorted(acked):
                r = c.get(f"{url}/api/traces/v1/{tid}")
                assert r.status_code == 200, f"acknowledged trace {tid} lost"
                spans = [sp for rs in r.json()["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]
                assert len(spans) == 5, f"acknowledged trace {tid} has {len(spans)} of 5 spans"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
