"""kill -9 under sustained Loki push load loses no acknowledged line.

Each request pushes 10 lines of its own stream; after the restart every
acknowledged request must be complete and every other one complete or absent.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, start_pitwall_process, wait_ready

pytestmark = pytest.mark.slow


def test_sigkill_during_push_loses_nothing_acknowledged(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir()
    proc = start_pitwall_process(data, port)
    wait_ready(url, proc=proc)
    acked: set[str] = set()
    stop = threading.Event()
    t0 = time.time_ns() - 600 * 10**9

    def writer(w: int) -> None:
        with httpx.Client(timeout=5) as c:
            n = 0
            while not stop.is_set() and n < 100_000 and len(acked) < 450:
                rid = f"{w}-{n}"
                body = {"streams": [{"stream": {"job": "crash", "req": rid},
                                     "values": [[str(t0 + i), f"line {i} of {rid}"] for i in range(10)]}]}
                try:
                    r = c.post(url + "/loki/api/v1/push", json=body)
                except httpx.HTTPError:
                    return
                if r.status_code == 204:
                    acked.add(rid)
                n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert len(acked) >= 300

    proc = start_pitwall_process(data, port)
    try:
        wait_ready(url, proc=proc)
        r = httpx.get(url + "/loki/api/v1/query", params={
            "query": 'sum by (req) (count_over_time({job="crash"}[1h]))', "time": str(t0 + 60 * 10**9)}, timeout=60)
        assert r.status_code == 200, r.text
        counts = {s["metric"]["req"]: int(float(s["value"][1])) for s in r.json()["data"]["result"]}
        missing = acked - counts.keys()
        assert not missing, f"{len(missing)} acknowledged requests lost, e.g. {sorted(missing)[:5]}"
        partial = {k: v for k, v in counts.items() if v != 10}
        assert not partial, f"half-visible requests: {partial}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
