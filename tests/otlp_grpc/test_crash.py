"""``pitwall server`` (the real CLI) takes OTLP/gRPC on its configured port; kill -9 under gRPC span load
loses no acknowledged span (the same WAL as OTLP/HTTP)."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest

from tests.conftest import free_port, start_pitwall_process, wait_ready
from tests.crash import Stop, kill_under_load, restarted
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
    channels = [grpc.insecure_channel(f"127.0.0.1:{grpc_port}") for _ in range(3)]
    calls = [ch.unary_unary(EXPORT) for ch in channels]

    def send(w: int, n: int) -> str:
        tid = f"{w + 1:08x}{n + 1:024x}"
        spans = [{"trace": tid, "span": f"{i + 1:016x}", "parent": f"{i:016x}" if i else ""} for i in range(5)]
        try:
            calls[w](otlp_request("grpc-crash", spans), timeout=5, compression=grpc.Compression.Gzip)
        except grpc.RpcError:
            raise Stop from None
        return tid

    acked = kill_under_load(proc, send, writers=3, want=200)
    for ch in channels:
        ch.close()
    with restarted(data, port), httpx.Client(timeout=10) as c:
        for tid in sorted(acked):
            r = c.get(f"{url}/api/traces/v1/{tid}")
            assert r.status_code == 200, f"acknowledged trace {tid} lost"
            spans = [sp for rs in r.json()["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]
            assert len(spans) == 5, f"acknowledged trace {tid} has {len(spans)} of 5 spans"
