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
from tests.crash import Stop, kill_under_load, restarted

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
    t0 = (int(time.time()) - 600) * 1000
    clients = [httpx.Client(timeout=5) for _ in range(4)]
    sent: set[str] = set()

    def send(w: int, n: int) -> str | None:
        rid = f"{w}-{n}"
        sent.add(rid)
        try:
            r = clients[w].post(url + "/api/v1/write", content=_body(rid, t0))
        except httpx.HTTPError:
            raise Stop from None
        return rid if r.status_code == 204 else None

    acked = kill_under_load(proc, send, within_s=20)
    for c in clients:
        c.close()
    with restarted(data, port):
        r = httpx.get(url + "/api/v1/query", params={
            "query": "count_over_time(crash_total[1h])", "time": t0 / 1000 + 60}, timeout=60)
        result = r.json()["data"]["result"]
        counts = {s["metric"]["req"]: int(s["value"][1]) for s in result}
        missing = acked - counts.keys()
        assert not missing, f"{len(missing)} acknowledged requests lost, e.g. {sorted(missing)[:5]}"
        partial = {k: v for k, v in counts.items() if v != 10}
        assert not partial, f"half-visible requests: {partial}"
        assert counts.keys() <= sent


def _wide_body(metric: str, client: int, req: int, t0: int, n_series: int = 2000) -> bytes:
    """``n_series`` series of one client, 10 samples each, request ``req`` 10 s after the last."""
    w = prompb.WriteRequest()
    for s in range(n_series):
        ts = w.timeseries.add()
        for k, v in (("__name__", metric), ("client", str(client)), ("s", str(s))):
            lb = ts.labels.add()
            lb.name, lb.value = k, v
        for i in range(10):
            smp = ts.samples.add()
            smp.timestamp, smp.value = t0 + (req * 10 + i) * 1000, float(i)
    return bytes(cramjam.snappy.compress_raw(w.SerializeToString()))


QUERY_MINUTES = float(os.environ.get("PITWALL_CRASH_QUERY_MINUTES", "2"))


@pytest.mark.timeout(900)
def test_queries_over_all_series_keep_answering_after_sigkill_under_wide_load(tmp_path: Path) -> None:
    """The security review's sequence: 3 clients x 2000 series x 10 samples a request,
    SIGKILL mid-load, restart, then queries over all series for minutes.

    The review's data directory held an earlier run's metric too. Here it is
    ``crash1_metric``: written first, and a little of it during the load, so
    each flushed run puts its rows between ``crash2_metric``'s. Reads that join
    those row ranges once let the other metric's rows into the merge, which
    then indexed past its arrays (IndexError / negative bincount: 500).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir()
    # Small heads: many flushes, so each block has many runs.
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text("storage:\n  head_max_samples: 150000\n  head_max_age: 20s\n")
    proc = start_pitwall_process(data, port, config=cfg)
    wait_ready(url, proc=proc)
    block = 2 * 3600 * 1000
    t0 = ((int(time.time()) * 1000 - block) // block) * block  # one whole block in the past
    with httpx.Client(timeout=30) as c:
        for req in range(90):
            assert c.post(url + "/api/v1/write", content=_wide_body("crash1_metric", 9, req, t0)).status_code == 204
    acked: dict[int, int] = {0: 0, 1: 0, 2: 0}
    stop = threading.Event()

    def writer(client: int) -> None:
        with httpx.Client(timeout=30) as c:
            req = 0
            while not stop.is_set() and req < 300:
                try:
                    if client == 9:  # a trickle of the earlier metric's existing series
                        r = c.post(url + "/api/v1/write", content=_wide_body("crash1_metric", 9, 90 + req, t0, 50))
                        time.sleep(0.05)
                    else:
                        r = c.post(url + "/api/v1/write", content=_wide_body("crash2_metric", client, req, t0))
                except httpx.HTTPError:
                    return
                if r.status_code == 204 and client != 9:
                    acked[client] = req + 1
                req += 1

    threads = [threading.Thread(target=writer, args=(c,)) for c in (0, 1, 2, 9)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while min(acked.values()) < 25 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert min(acked.values()) >= 25

    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(url, proc=proc)
        queries = ["sum(count_over_time(crash2_metric[6h]))",
                   *(f'count(count_over_time(crash2_metric{{client="{c}"}}[6h]))' for c in range(3)),
                   'sum(count_over_time(crash2_metric{s=~"1.*"}[6h]))']
        end = time.monotonic() + QUERY_MINUTES * 60
        rounds = 0
        with httpx.Client(timeout=120) as c:
            while time.monotonic() < end or rounds < 2:
                for q in queries:
                    r = c.get(url + "/api/v1/query", params={"query": q})
                    assert r.status_code == 200, f"round {rounds}: {q} -> {r.status_code} {r.text[:300]}"
                    got = int(float(r.json()["data"]["result"][0]["value"][1]))
                    if q.startswith("count("):
                        assert got == 2000, q
                    elif "s=~" not in q:
                        # Every acknowledged request is complete (a later unacked one may be too).
                        assert got >= sum(acked.values()) * 20_000
                rounds += 1
                time.sleep(2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
