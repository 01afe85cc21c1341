"""Debian's real Prometheus (2.42) against pitwall.

1. Prometheus remote-writes its own scraped series into pitwall.
2. Differential: the same deterministic data pushed to both, then the same
   metadata and selector queries must answer identically. Samples sit off
   the step grid (1234 ms offset) so Prometheus 2.x's closed and 3.x's
   left-open windows agree.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import cramjam
import httpx
import pytest

from pitwall.metrics.ingest import prompb
from tests.conftest import LiveServer
from tests.peers import PrometheusPeer, need_prometheus

pytestmark = [pytest.mark.slow, pytest.mark.peer]


def _push(url: str, series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> None:
    w = prompb.WriteRequest()
    for labels, samples in series:
        ts = w.timeseries.add()
        for k, v in sorted(labels.items()):
            lb = ts.labels.add()
            lb.name, lb.value = k, v
        for t, v in samples:
            s = ts.samples.add()
            s.timestamp, s.value = t, v
    body = bytes(cramjam.snappy.compress_raw(w.SerializeToString()))
    r = httpx.post(url + "/api/v1/write", content=body, timeout=30,
                   headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                            "X-Prometheus-Remote-Write-Version": "0.1.0"})
    assert r.status_code == 204, r.text


def _dataset(t0_ms: int) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    out = []
    for job in ("api", "db", "web"):
        for inst in range(3):
            for status in ("200", "500"):
                lbl = {"__name__": "http_requests_total", "job": job, "instance": f"h{inst}:9100", "status": status}
                v = 0.0
                pts = []
                for i in range(120):
                    v += (inst + 1) * (3 if status == "200" else 1) + (i % 7)
                    if job == "db" and i == 60:
                        v = 5.0  # a counter reset
                    pts.append((t0_ms + i * 15_000 + 1234, v))
                out.append((lbl, pts))
        gauge = {"__name__": "queue_depth", "job": job}
        out.append((gauge, [(t0_ms + i * 15_000 + 1234, math.sin(i / 9) * 10 + len(job)) for i in range(120)
                            if not (job == "web" and 40 <= i < 60)]))
    return out


def _push_in_time_order(url: str, data: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> None:
    for start in range(0, 120, 10):
        _push(url, [(lbl, pts[start:start + 10]) for lbl, pts in data if pts[start:start + 10]])


def _get(url: str, path: str, **params: Any) -> Any:
    body = httpx.get(url + path, params=params, timeout=30).json()
    assert body["status"] == "success", body
    return body["data"]


def _norm(data: Any) -> Any:
    if isinstance(data, dict) and "result" in data:
        res = data["result"]
        if data["resultType"] in ("vector", "matrix"):
            res = sorted(res, key=lambda s: sorted(s["metric"].items()))
        return {"resultType": data["resultType"], "result": res}
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return sorted(data, key=lambda d: sorted(d.items()))
    return data


SELECTORS = [
    "http_requests_total",
    'http_requests_total{job="api"}',
    'http_requests_total{job=~"a.*|web", status!="500"}',
    'http_requests_total{instance!~"h[01]:.*"}',
    "queue_depth",
    "queue_depth offset 2m",
    'http_requests_total{status="500"} offset 5m',
    '{__name__=~"queue.*"}',
    'queue_depth{job="web"}',
]


@pytest.fixture
def peers(tmp_path: Path, live_server: LiveServer) -> Any:
    need_prometheus()
    prom = PrometheusPeer(tmp_path / "prom")
    yield prom, live_server
    prom.stop()


def test_differential_metadata_and_selectors(peers: Any) -> None:
    prom, pw = peers
    t0 = (int(time.time()) // 60 * 60 - 3600) * 1000
    data = _dataset(t0)
    _push_in_time_order(prom.url, data)
    _push_in_time_order(pw.url, data)

    for path, params in [
        ("/api/v1/series", {"match[]": ['{__name__=~".+"}']}),
        ("/api/v1/series", {"match[]": ['http_requests_total{job="db"}', "queue_depth"]}),
        ("/api/v1/labels", {}),
        ("/api/v1/label/job/values", {}),
        ("/api/v1/label/instance/values", {"match[]": ['http_requests_total{job="api"}']}),
        ("/api/v1/label/__name__/values", {}),
    ]:
        assert _norm(_get(pw.url, path, **params)) == _norm(_get(prom.url, path, **params)), path

    end = t0 / 1000 + 119 * 15
    for expr in SELECTORS:
        for at in (t0 / 1000 + 300, t0 / 1000 + 900.5, t0 / 1000 + 1200, end + 100):
            a = _get(pw.url, "/api/v1/query", query=expr, time=at)
            b = _get(prom.url, "/api/v1/query", query=expr, time=at)
            assert _norm(a) == _norm(b), (expr, at)
        rng = {"query": expr, "start": t0 / 1000, "end": end, "step": 60}
        assert _norm(_get(pw.url, "/api/v1/query_range", **rng)) == _norm(
            _get(prom.url, "/api/v1/query_range", **rng)), expr
    for expr in ["http_requests_total[1m]", 'queue_depth{job="web"}[5m]']:
        at = t0 / 1000 + 1000
        assert _norm(_get(pw.url, "/api/v1/query", query=expr, time=at)) == _norm(
            _get(prom.url, "/api/v1/query", query=expr, time=at)), expr
        # ?stats: the same shape, and for a range vector the samples in its windows
        a = _get(pw.url, "/api/v1/query", query=expr, time=at, stats="all")["stats"]
        b = _get(prom.url, "/api/v1/query", query=expr, time=at, stats="all")["stats"]
        assert set(a) == set(b) and set(a["timings"]) == set(b["timings"]), (a, b)
        assert {k: a["samples"][k] for k in b["samples"]} == b["samples"], (expr, a, b)


def test_prometheus_remote_writes_into_pitwall(tmp_path: Path, live_server: LiveServer) -> None:
    need_prometheus()
    prom = PrometheusPeer(tmp_path / "prom", {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "self", "static_configs": [{"targets": ["PLACEHOLDER"]}]}],
        "remote_write": [{"url": live_server.url + "/api/v1/write",
                          "queue_config": {"batch_send_deadline": "1s", "min_backoff": "100ms"}}],
    })
    try:
        # Point the scrape at Prometheus itself now that its port is known.
        cfg = (tmp_path / "prom" / "prometheus.yml")
        cfg.write_text(cfg.read_text().replace("PLACEHOLDER", f"127.0.0.1:{prom.port}"))
        httpx.post(prom.url + "/-/reload", timeout=10).raise_for_status()
        deadline = time.monotonic() + 60
        got: list[Any] = []
        while time.monotonic() < deadline and not got:
            got = _get(live_server.url, "/api/v1/series", **{"match[]": 'up{job="self"}'})
            time.sleep(0.5)
        assert got == [{"__name__": "up", "instance": f"127.0.0.1:{prom.port}", "job": "self"}]
        # Samples that both hold are identical, timestamps included.
        time.sleep(3)
        at = time.time() - 2
        mine = _get(live_server.url, "/api/v1/query", query='up{job="self"}[20s]', time=at)
        theirs = _get(prom.url, "/api/v1/query", query='up{job="self"}[20s]', time=at)
        assert mine["result"] and mine == theirs
        build = _get(live_server.url, "/api/v1/series", **{"match[]": "prometheus_build_info"})
        assert build == _get(prom.url, "/api/v1/series", **{"match[]": "prometheus_build_info"})
    finally:
        prom.stop()
