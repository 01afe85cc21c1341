"""kill -9 under sustained remote-write load loses nothing acknowledged.

Each request writes its own series (10 samples), so after the restart every
acknowledged request must be complete and every other one either complete
or absent: nothing half-visible.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import cramjam
import httpx
import pytest

from pitwall.metrics.ingest import prompb
from tests.conftest import free_port, start_pitwall_process, wait_ready

pytestmark = pytest.mark.slow


def _body(req_id: str, t0: int) -> bytes:
    w = prompb.WriteRequest()
    ts = w.timeseries.add()
    for k, v in (("__name__", "crash_total"), ("req", req_id)):
        lb = ts.labels.add()
        lb.name, lb.value = k, v
    for i in range(10):
        s = ts.samples.add()
        s.timestamp, s.value = t0 + i * 1000, float(i)
    return bytes(cramjam.snappy.compress_raw(w.SerializeToString()))


def test_sigkill_during_remote_write_loses_nothing_acknowledged(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    proc = start_pitwall_process(data, port)
    wait_ready(url, proc=proc)
    acked: set[str] = set()
    sent: set[str] = set()
    stop = threading.Event()
    t0 = (int(time.time()) - 600) * 1000

    def writer(w: int) -> None:
        with httpx.Client(timeout=5) as c:
            n = 0
            while not stop.is_set() and n < 100_000:
                rid = f"{w}-{n}"
                sent.add(rid)
                try:
                    r = c.post(url + "/api/v1/write", content=_body(rid, t0))
                except httpx.HTTPError:
                    return
                if r.status_code == 204:
                    acked.add(rid)
                n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
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
        r = httpx.get(url + "/api/v1/query", params={
            "query": "count_over_time(crash_total[1h])", "time": t0 / 1000 + 60}, timeout=60)
        result = r.json()["data"]["result"]
        counts = {s["metric"]["req"]: int(s["value"][1]) for s in result}
        missing = acked - counts.keys()
        assert not missing, f"{len(missing)} acknowledged requests lost, e.g. {sorted(missing)[:5]}"
        partial = {k: v for k, v in counts.items() if v != 10}
        assert not partial, f"half-visible requests: {partial}"
        assert counts.keys() <= sent
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
