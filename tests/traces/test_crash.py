"""kill -9 under sustained OTLP span load loses no acknowledged span.

Each request carries one trace of 5 spans; after the restart every
acknowledged trace must be complete, and every other one complete or absent.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, start_pitwall_process, wait_ready
from tests.crash import Stop, kill_under_load, restarted
from tests.traces.helpers import PROTO, otlp_request

pytestmark = pytest.mark.slow


def _trace(tid: str) -> list[dict[str, str]]:
    return [{"trace": tid, "span": f"{i + 1:016x}", "parent": f"{i:016x}" if i else ""} for i in range(5)]


def test_sigkill_during_span_ingest_loses_nothing_acknowledged(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    proc = start_pitwall_process(data, port)
    wait_ready(url, proc=proc)
    clients = [httpx.Client(timeout=5) for _ in range(4)]

    def send(w: int, n: int) -> str | None:
        tid = f"{w + 1:08x}{n + 1:024x}"
        try:
            r = clients[w].post(url + "/v1/traces", content=otlp_request("crash", _trace(tid)), headers=PROTO)
        except httpx.HTTPError:
            raise Stop from None
        return tid if r.status_code == 200 else None

    acked = kill_under_load(proc, send)
    for c in clients:
        c.close()
    with restarted(data, port), httpx.Client(timeout=30) as c:
        lost = []
        for tid in sorted(acked):
            r = c.get(f"{url}/api/v2/trace/{tid}")
            if r.status_code != 200 or len(r.json()) != 5:
                lost.append((tid, r.status_code))
        assert not lost, f"{len(lost)} acknowledged traces lost or partial, e.g. {lost[:5]}"
        found = c.get(f"{url}/api/traces/v1/search", params={"service": "crash", "limit": "1000",
                                                             "since": "1h"}).json()["traces"]
        partial = [t["traceId"] for t in found if t["spanCount"] != 5]
        assert not partial, f"half-visible traces: {partial[:5]}"
