"""kill -9 under sustained Loki push load loses no acknowledged line.

Each request pushes 10 lines of its own stream; after the restart every
acknowledged request must be complete and every other one complete or absent.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, start_pitwall_process, wait_ready
from tests.crash import Stop, kill_under_load, restarted

pytestmark = pytest.mark.slow


def test_sigkill_during_push_loses_nothing_acknowledged(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir()
    proc = start_pitwall_process(data, port)
    wait_ready(url, proc=proc)
    t0 = time.time_ns() - 600 * 10**9
    clients = [httpx.Client(timeout=5) for _ in range(4)]

    def send(w: int, n: int) -> str | None:
        rid = f"{w}-{n}"
        body = {"streams": [{"stream": {"job": "crash", "req": rid},
                             "values": [[str(t0 + i), f"line {i} of {rid}"] for i in range(10)]}]}
        try:
            r = clients[w].post(url + "/loki/api/v1/push", json=body)
        except httpx.HTTPError:
            raise Stop from None
        return rid if r.status_code == 204 else None

    acked = kill_under_load(proc, send)
    for c in clients:
        c.close()
    with restarted(data, port):
        r = httpx.get(url + "/loki/api/v1/query", params={
            "query": 'sum by (req) (count_over_time({job="crash"}[1h]))', "time": str(t0 + 60 * 10**9)}, timeout=60)
        assert r.status_code == 200, r.text
        counts = {s["metric"]["req"]: int(float(s["value"][1])) for s in r.json()["data"]["result"]}
        missing = acked - counts.keys()
        assert not missing, f"{len(missing)} acknowledged requests lost, e.g. {sorted(missing)[:5]}"
        partial = {k: v for k, v in counts.items() if v != 10}
        assert not partial, f"half-visible requests: {partial}"
