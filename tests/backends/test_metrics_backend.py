"""backends.metrics on Debian's victoria-metrics: pitwall forwards every write, reads through the engine."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pitwall.config import load_settings
from pitwall.core.errors import ConfigError
from tests.backends.vm import VictoriaPeer, need_victoria, wait_for, write_body
from tests.conftest import LiveServer, free_port, start_pitwall_process, wait_ready
from tests.crash import Stop, kill_under_load
from tests.peers import PrometheusPeer, need_prometheus

pytestmark = pytest.mark.timeout(180)

WRITE_HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaPeer]:
    need_victoria()
    peer = VictoriaPeer(tmp_path / "vm")
    yield peer
    peer.stop()


def _server(tmp_path: Path, vm: VictoriaPeer, storage: dict[str, Any] | None = None, **extra: Any) -> LiveServer:
    s = load_settings(data_dir=tmp_path / "pw", listen="127.0.0.1:0", storage={"fsync": False, **(storage or {})},
                      kube={"enabled": False},
                      backends={"metrics": {"type": "prometheus-api", "write_url": vm.url + "/api/v1/write",
                                            "query_url": vm.url, "timeout": "5s"}}, **extra)
    srv = LiveServer(s)
    srv.start()
    return srv


@pytest.fixture
def pitwall(tmp_path: Path, vm: VictoriaPeer) -> Iterator[LiveServer]:
    srv = _server(tmp_path, vm)
    yield srv
    srv.stop()


def _series(now_ms: int) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    out = []
    for job in ("api", "db"):
        for inst in range(3):
            pts = [(now_ms - (60 - i) * 1000, float(i * (inst + 1))) for i in range(60)]
            out.append(({"__name__": "bk_requests_total", "job": job, "instance": f"h{inst}"}, pts))
    return out


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"backends\.metrics\.query_url"):
        load_settings(backends={"metrics": {"write_url": "http://a/api/v1/write", "query_url": "vm:8428"}})
    with pytest.raises(ConfigError, match=r"backends\.metrics\.write_url"):
        load_settings(backends={"metrics": {"query_url": "http://a"}})
    with pytest.raises(ConfigError, match=r"backends\.metrics\.type"):
        load_settings(backends={"metrics": {"type": "graphite", "write_url": "http://a/w", "query_url": "http://a"}})


@pytest.mark.slow
def test_writes_reach_the_engine_and_pitwall_answers_as_the_engine(pitwall: LiveServer, vm: VictoriaPeer) -> None:
    now = int(time.time()) * 1000
    r = httpx.post(pitwall.url + "/api/v1/write", content=write_body(_series(now)), headers=WRITE_HEADERS)
    assert r.status_code == 204, r.text
    wait_for(lambda: len(vm.api("/api/v1/series", **{"match[]": "bk_requests_total"})["data"]) == 6)

    at = str(now / 1000)
    cases = [
        ("/api/v1/query", {"query": "sum by (job) (rate(bk_requests_total[30s]))", "time": at}),
        ("/api/v1/query", {"query": 'bk_requests_total{instance="h2"}', "time": at}),
        ("/api/v1/query_range", {"query": "max(bk_requests_total)", "start": str(now / 1000 - 50),
                                 "end": at, "step": "10"}),
        ("/api/v1/series", {"match[]": "bk_requests_total", "start": str(now / 1000 - 120), "end": at}),
        ("/api/v1/labels", {"match[]": "bk_requests_total"}),
        ("/api/v1/label/instance/values", {"match[]": "bk_requests_total"}),
    ]
    for path, params in cases:
        via = httpx.get(pitwall.url + path, params=params, timeout=30).json()
        direct = vm.api(path, **params)
        assert via["status"] == "success", via
        assert via["data"] == direct["data"], path
        assert via["data"], path  # not two empty answers
    # The query interface rules, SLOs and the UI use reads the engine too (parsed into QueryResult).
    res = pitwall.app.state.components.metrics.instant("sum(bk_requests_total)", now, "default")
    assert res.result_type == "vector"
    assert float(res.values[0][0]) == 59 * (1 + 2 + 3) * 2


@pytest.mark.slow
def test_otlp_and_scraped_samples_are_forwarded(tmp_path: Path, vm: VictoriaPeer) -> None:
    host = vm.url.removeprefix("http://")
    srv = _server(tmp_path, vm, scrape_configs=[{"job_name": "vmself", "scrape_interval": "500ms",
                                                  "static_configs": [{"targets": [host]}]}])
    try:
        now_ns = time.time_ns()
        otlp = {"resourceMetrics": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "checkout"}}]},
            "scopeMetrics": [{"metrics": [{"name": "bk_otlp_queue_depth", "gauge": {"dataPoints": [
                {"timeUnixNano": str(now_ns), "asDouble": 7.5}]}}]}]}]}
        r = httpx.post(srv.url + "/v1/metrics", json=otlp)
        assert r.status_code == 200, r.text
        got = wait_for(lambda: vm.api("/api/v1/query", query="bk_otlp_queue_depth")["data"]["result"])
        assert got[0]["metric"]["job"] == "checkout" and got[0]["value"][1] == "7.5"
        up = wait_for(lambda: vm.api("/api/v1/query", query='up{job="vmself"}')["data"]["result"])
        assert up[0]["value"][1] == "1" and up[0]["metric"]["instance"] == host
    finally:
        srv.stop()


@pytest.mark.slow
def test_alert_rule_fires_from_engine_data(tmp_path: Path, vm: VictoriaPeer) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("groups: [{name: g, interval: 200ms, rules: [{alert: EngineOnly, expr: 'engine_only_up > 0'},"
                     " {record: engine_only_doubled, expr: 'engine_only_up * 2'}]}]\n")
    srv = _server(tmp_path, vm, rule_files=[str(rules)])
    try:
        now = int(time.time()) * 1000
        # Written straight into the engine: pitwall's embedded store never sees it.
        vm.write([({"__name__": "engine_only_up", "job": "x"}, [(now - 1000 * i, 1.0) for i in range(10)])])

        def firing() -> list[Any]:
            alerts = httpx.get(srv.url + "/api/v1/alerts").json()["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "EngineOnly" and a["state"] == "firing"]

        assert wait_for(firing)[0]["labels"]["job"] == "x"
        # The HTTP API relays to the engine (the embedded store has no such series).
        api = httpx.get(srv.url + "/api/v1/query", params={"query": "engine_only_up"}).json()["data"]["result"]
        assert [r["metric"] for r in api] == [{"__name__": "engine_only_up", "job": "x"}]
        names = httpx.get(srv.url + "/api/v1/label/__name__/values").json()["data"]
        assert "engine_only_up" in names
        # The UI's query page reads the engine too (the expression is echoed; its value, 123457, is not).
        page = httpx.get(srv.url + "/graph", params={"expr": "engine_only_up * 123456 + 1", "type": "instant"})
        assert page.status_code == 200 and "123457" in page.text
        # The recording rule's output went back to the engine through the forwarding queue.
        got = wait_for(lambda: vm.api("/api/v1/query", query="engine_only_doubled")["data"]["result"])
        assert got[0]["value"][1] == "2"
    finally:
        srv.stop()


@pytest.mark.slow
def test_engine_down_under_write_load_loses_nothing_acknowledged(tmp_path: Path, vm: VictoriaPeer) -> None:
    # A small head flushes to blocks often: the WAL segments the queue has not passed must stay.
    pitwall = _server(tmp_path, vm, storage={"head_max_samples": 100})
    try:
        _engine_down_under_load(pitwall, vm, tmp_path / "pw" / "wal" / "metrics")
    finally:
        pitwall.stop()


def _engine_down_under_load(pitwall: LiveServer, vm: VictoriaPeer, wal_dir: Path) -> None:
    acked: list[int] = []
    stop = threading.Event()
    t0 = int(time.time()) * 1000 - 3_600_000

    def load() -> None:
        with httpx.Client(timeout=10) as c:
            i = 0
            while not stop.is_set():
                body = write_body([({"__name__": "bk_load", "req": str(i)}, [(t0 + i, float(i))])])
                try:
                    if c.post(pitwall.url + "/api/v1/write", content=body, headers=WRITE_HEADERS).status_code == 204:
                        acked.append(i)
                except httpx.HTTPError:
                    pass
                i += 1
                time.sleep(0.01)

    writer = threading.Thread(target=load)
    writer.start()
    try:
        wait_for(lambda: len(acked) > 20)
        vm.stop()
        # Reads answer 503 naming the engine, in Prometheus' error shape; /-/ready says which backend is down.
        r = httpx.get(pitwall.url + "/api/v1/query", params={"query": "bk_load"})
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "error" and body["errorType"] == "unavailable"
        assert "metrics backend prometheus-api at http://127.0.0.1:" in body["error"]
        ready = wait_for(lambda: (x := httpx.get(pitwall.url + "/-/ready")).status_code == 503 and x.text)
        assert "metrics backend prometheus-api" in ready
        n_before = len(acked)
        time.sleep(18)  # the engine is down 18+ s while writes go on
        assert len(acked) > n_before + 50  # pitwall kept acknowledging from its own WAL
        assert len(list(wal_dir.glob("*.wal"))) > 2  # flushed more than once, every segment since kept
        vm.start()
    finally:
        stop.set()
        writer.join()
    want = set(acked)

    def missing() -> set[int]:
        got = vm.api("/api/v1/series", **{"match[]": "bk_load", "start": str(t0 / 1000 - 10),
                                          "end": str(t0 / 1000 + 600)})["data"]
        return want - {int(s["req"]) for s in got}

    wait_for(lambda: not missing() or None, timeout=60) if missing() else None
    assert not missing()
    wait_for(lambda: httpx.get(pitwall.url + "/-/ready").status_code == 200)


@pytest.mark.slow
def test_kill_9_with_the_engine_down_loses_nothing_acknowledged(tmp_path: Path, vm: VictoriaPeer) -> None:
    """The queue's position and the WAL segments it has not passed survive kill -9 of pitwall."""
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({"kube": {"enabled": False}, "backends": {"metrics": {
        "type": "prometheus-api", "write_url": vm.url + "/api/v1/write", "query_url": vm.url}}}))
    port, data = free_port(), tmp_path / "data"
    proc = start_pitwall_process(data, port, config=cfg)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc=proc, timeout=60)
    t0 = int(time.time()) * 1000 - 3_600_000
    clients = [httpx.Client(timeout=5) for _ in range(4)]

    def send(w: int, n: int) -> str | None:
        rid = f"{w}-{n}"
        body = write_body([({"__name__": "bk_crash", "req": rid}, [(t0 + n, float(n))])])
        try:
            r = clients[w].post(url + "/api/v1/write", content=body, headers=WRITE_HEADERS)
        except httpx.HTTPError:
            raise Stop from None
        if n == 100 and w == 0:
            vm.stop()  # the rest queues up in pitwall's WAL
        return rid if r.status_code == 204 else None

    acked = kill_under_load(proc, send, want=600, within_s=60)
    for c in clients:
        c.close()
    vm.start()
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(url, proc=proc, timeout=60)

        def missing() -> set[str]:
            got = vm.api("/api/v1/series", **{"match[]": "bk_crash", "start": str(t0 / 1000 - 10),
                                              "end": str(t0 / 1000 + 600)})["data"]
            return acked - {s["req"] for s in got}

        wait_for(lambda: not missing(), timeout=90)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.mark.slow
def test_prometheus_as_remote_write_receiver(tmp_path: Path) -> None:
    need_prometheus()
    prom = PrometheusPeer(tmp_path / "prom")
    s = load_settings(data_dir=tmp_path / "pw", listen="127.0.0.1:0", storage={"fsync": False},
                      kube={"enabled": False},
                      backends={"metrics": {"write_url": prom.url + "/api/v1/write", "query_url": prom.url}})
    srv = LiveServer(s)
    srv.start()
    try:
        now = int(time.time()) * 1000
        r = httpx.post(srv.url + "/api/v1/write", content=write_body(_series(now)), headers=WRITE_HEADERS)
        assert r.status_code == 204, r.text
        params = {"query": "sum by (job) (rate(bk_requests_total[30s]))", "time": str(now / 1000)}
        direct = wait_for(lambda: prom.api("/api/v1/query", **params)["data"]["result"])
        via = httpx.get(srv.url + "/api/v1/query", params=params).json()["data"]["result"]
        assert via == direct and len(direct) == 2
    finally:
        srv.stop()
        prom.stop()
