"""ScrapeManager against real HTTP endpoints on 127.0.0.1 with a recording appender."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from pitwall.core.errors import BadData
from pitwall.core.labels import format_labels
from pitwall.metrics.model import Exemplar, MetricMetadata, SampleBatch, is_stale
from pitwall.metrics.scrape import manager as scrape_manager
from pitwall.metrics.scrape.client import accept_header
from pitwall.metrics.scrape.config import ScrapeConfig, parse_scrape_configs
from pitwall.metrics.scrape.manager import ScrapeManager


class RecordingAppender:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.metadata: list[MetricMetadata] = []
        self.exemplars: list[Exemplar] = []
        self.fail_next = 0

    async def append(self, tenant: str, batch: SampleBatch) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise BadData("out of order sample")
        self.batches.append(batch)

    async def append_metadata(self, tenant: str, metadata: Sequence[MetricMetadata]) -> None:
        self.metadata.extend(metadata)

    async def append_exemplars(self, tenant: str, exemplars: Sequence[Exemplar]) -> None:
        self.exemplars.extend(exemplars)


def rows(batch: SampleBatch) -> dict[str, tuple[int, float]]:
    return {format_labels(batch.series[i]): (int(t), float(v)) for i, t, v in zip(batch.series_idx, batch.ts, batch.values, strict=True)}


def value(batch: SampleBatch, name: str) -> float:
    for key, (_, v) in rows(batch).items():
        if key.startswith(name + "{"):
            return v
    raise KeyError(name)


class Exporter:
    """A tiny threaded HTTP endpoint whose body, status and delay tests can change."""

    def __init__(self) -> None:
        self.body = b"a 1\n"
        self.content_type = "text/plain; version=0.0.4"
        self.status = 200
        self.delay = 0.0
        self.headers: list[dict[str, str]] = []
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                exporter.headers.append(dict(self.headers.items()))
                if exporter.delay:
                    time.sleep(exporter.delay)
                body = exporter.body
                self.send_response(exporter.status)
                self.send_header("Content-Type", exporter.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    e = Exporter()
    yield e
    e.close()


def config(address: str | list[str], **extra: Any) -> list[ScrapeConfig]:
    targets = [address] if isinstance(address, str) else address
    raw = {"job_name": "job1", "scrape_interval": "100ms", "static_configs": [{"targets": targets}], **extra}
    return parse_scrape_configs([raw])


async def wait_for(pred: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    # by the clock, not a count of sleeps: on a loaded machine each sleep overshoots (CI ran out of 300)
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_scrapes_prometheus_client_endpoint() -> None:
    reg = CollectorRegistry()
    Counter("hits", "Hits", ["path"], registry=reg).labels("/x").inc(2)
    from prometheus_client import Histogram

    Histogram("lat", "L", registry=reg, buckets=(1.0,)).observe(0.5, exemplar={"trace_id": "t1"})
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=reg)
    port = server.server_address[1]
    app = RecordingAppender()
    # 1 s, not the file's 100 ms: the checks read the first scrape, which a loaded machine can time out
    m = ScrapeManager(app, configs=config(f"127.0.0.1:{port}", scrape_interval="1s"))
    await m.start()
    try:
        await wait_for(lambda: len(app.batches) >= 1, "a scrape")
    finally:
        await m.stop()
        server.shutdown()
        server.server_close()
    r = rows(app.batches[0])
    inst = f"127.0.0.1:{port}"
    assert r[f'hits_total{{instance="{inst}", job="job1", path="/x"}}'][1] == 2.0
    assert r[f'up{{instance="{inst}", job="job1"}}'][1] == 1.0
    assert value(app.batches[0], "scrape_samples_scraped") == value(app.batches[0], "scrape_samples_post_metric_relabeling")
    assert value(app.batches[0], "scrape_series_added") == value(app.batches[0], "scrape_samples_scraped")
    ts = {t for t, _ in r.values()}
    assert len(ts) == 1  # every sample and report series carries the scrape's timestamp
    assert any(md.metric == "hits" and md.type == "counter" for md in app.metadata)  # OpenMetrics was negotiated
    assert any(ex.exemplar_labels == (("trace_id", "t1"),) for ex in app.exemplars)


async def test_request_headers(exporter: Exporter) -> None:
    app = RecordingAppender()
    m = ScrapeManager(app, configs=config(exporter.address, params={"module": ["m1"]}))
    await m.start()
    await wait_for(lambda: len(app.batches) >= 1, "a scrape")
    await m.stop()
    h = exporter.headers[0]
    assert h["Accept"] == accept_header(["OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText1.0.0", "PrometheusText0.0.4"])
    assert h["Accept"].startswith("application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.6,")
    assert h["Accept"].endswith(",*/*;q=0.2")
    assert h["X-Prometheus-Scrape-Timeout-Seconds"] == "0.1"
    t = m.targets().active[0] if m.targets().active else None
    assert t is None  # stopped managers have no targets


async def test_staleness_markers_when_series_disappear(exporter: Exporter) -> None:
    exporter.body = b'a 1\nb{x="1"} 2\n'
    app = RecordingAppender()
    m = ScrapeManager(app, configs=config(exporter.address))
    await m.start()
    await wait_for(lambda: len(app.batches) >= 1, "first scrape")
    exporter.body = b"a 3\n"
    key = f'b{{instance="{exporter.address}", job="job1", x="1"}}'

    def has_marker() -> bool:
        return any(key in rows(b) and is_stale(rows(b)[key][1]) for b in app.batches)

    await wait_for(has_marker, "stale marker")
    await m.stop()
    batch = next(b for b in app.batches if key in rows(b) and is_stale(rows(b)[key][1]))
    r = rows(batch)
    up_key = f'up{{instance="{exporter.address}", job="job1"}}'
    assert r[key][0] == r[up_key][0]  # marker at this scrape's timestamp
    assert r[up_key][1] == 1.0
    pos = next(i for i, b in enumerate(app.batches) if b is batch)
    later = app.batches[pos + 1 :]
    assert all(key not in rows(b) for b in later)  # written once only


async def test_failed_scrape_writes_markers_and_up_zero(exporter: Exporter) -> None:
    app = RecordingAppender()
    m = ScrapeManager(app, configs=config(exporter.address))
    await m.start()
    await wait_for(lambda: len(app.batches) >= 1, "first scrape")
    exporter.status = 500
    await wait_for(lambda: any(value(b, "up") == 0.0 for b in app.batches), "failed scrape")
    snap = m.targets()
    await m.stop()
    failed = next(b for b in app.batches if value(b, "up") == 0.0)
    r = rows(failed)
    a_key = f'a{{instance="{exporter.address}", job="job1"}}'
    assert is_stale(r[a_key][1])
    assert value(failed, "scrape_samples_scraped") == 0.0
    st = snap.active[0]
    assert st.health == "down"
    assert st.last_error == "server returned HTTP status 500 Internal Server Error"


async def test_timeout_and_body_limit(exporter: Exporter) -> None:
    exporter.delay = 0.3
    app = RecordingAppender()
    m = ScrapeManager(app, configs=config(exporter.address))
    await m.start()
    await wait_for(lambda: len(app.batches) >= 1, "scrape")
    err = m.targets().active[0].last_error
    await m.stop()
    assert err == f'Get "http://{exporter.address}/metrics": context deadline exceeded'
    exporter.delay = 0
    exporter.body = b"a 1\n" * 100
    app = RecordingAppender()
    # a 100 ms timeout (the 100 ms interval's) fails before the body arrives on a loaded machine
    m = ScrapeManager(app, configs=config(exporter.address, body_size_limit="100B", scrape_interval="2s", scrape_timeout="2s"))
    await m.start()
    await wait_for(lambda: len(app.batches) >= 1, "scrape")
    err = m.targets().active[0].last_error
    await m.stop()
    assert err.startswith("body size limit exceeded")


@pytest.mark.parametrize(
    ("honor", "expected"),
    [
        (False, '{exported_exported_job="other", exported_instance="i", exported_job="z", instance="ADDR", job="job1"}'),
        (True, '{exported_job="z", instance="i", job="other"}'),
    ],
)
async def test_honor_labels(exporter: Exporter, honor: bool, expected: str) -> None:
    exporter.body = b'm{job="other",instance="i",exported_job="z"} 1\n'
    app = RecordingAppender()
    # 1 s, not the file's 100 ms: the check reads the first scrape, which a loaded machine can time out
    m = ScrapeManager(app, configs=config(exporter.address, honor_labels=honor, scrape_interval="1s"))
    await m.start()
    await wait_for(lambda: len(app.batches) >= 1, "scrape")
    await m.stop()
    assert "m" + expected.replace("ADDR", exporter.address) in rows(app.batches[0])


async def test_honor_timestamps_and_staleness_bypass(exporter: Exporter) -> None:
    exporter.body = b"a 1 1000\nb 2\n"
    app = RecordingAppender()
    # 1 s, not the file's 100 ms: the checks read the first scrape, which a loaded machine can time out
    m = ScrapeManager(app, configs=config(exporter.address, scrape_interval="1s"))
    await m.start()
    await wait_for(lambda: len(app.batches) >= 1, "scrape")
    exporter.body = b"c 1\n"
    await wait_for(lambda: len(app.batches) >= 3, "more scrapes")
    await m.stop()
    r0 = rows(app.batches[0])
    assert r0[f'a{{instance="{exporter.address}", job="job1"}}'][0] == 1000
    stale_names = {k.split("{")[0] for b in app.batches for k, (_, v) in rows(b).items() if is_stale(v)}
    assert "b" in stale_names and "a" not in stale_names  # explicit timestamps bypass staleness


async def test_sample_limit(exporter: Exporter) -> None:
    exporter.body = b"a 1\n"
    app = RecordingAppender()
    m = ScrapeManager(app, configs=config(exporter.address, sample_limit=2))
    await m.start()
    await wait_for(lambda: len(app.batches) >= 1, "first scrape")
    exporter.body = b"a 1\nb 2\nc 3\n"
    await wait_for(lambda: any(value(b, "up") == 0.0 for b in app.batches), "limit hit")
    err = m.targets().active[0].last_error
    await m.stop()
    failed = next(b for b in app.batches if value(b, "up") == 0.0)
    r = rows(failed)
    assert value(failed, "scrape_samples_scraped") == 3.0
    assert value(failed, "scrape_samples_post_metric_relabeling") == 2.0
    assert not any(k.startswith(("b{", "c{")) for k in r)
    assert is_stale(r[f'a{{instance="{exporter.address}", job="job1"}}'][1])
    assert err == "sample limit exceeded"


async def test_metric_relabeling(exporter: Exporter) -> None:
    exporter.body = b'go_gc 1\nhttp_x{code="200"} 2\n'
    rules = [
        {"source_labels": ["__name__"], "regex": "go_.*", "action": "drop"},
        {"source_labels": ["code"], "target_label": "status"},
        {"regex": "code", "action": "labeldrop"},
    ]
    app = RecordingAppender()
    # 1 s, not the file's 100 ms: the checks read the first two scrapes, which a loaded machine can time out
    m = ScrapeManager(app, configs=config(exporter.address, metric_relabel_configs=rules, scrape_interval="1s"))
    await m.start()
    await wait_for(lambda: len(app.batches) >= 2, "scrapes")
    await m.stop()
    r = rows(app.batches[1])  # second scrape uses the relabel cache
    assert f'http_x{{instance="{exporter.address}", job="job1", status="200"}}' in r
    assert not any(k.startswith("go_gc") for k in r)
    assert value(app.batches[1], "scrape_samples_scraped") == 2.0
    assert value(app.batches[1], "scrape_samples_post_metric_relabeling") == 1.0
    assert value(app.batches[1], "scrape_series_added") == 0.0


async def test_metric_relabel_removing_name_fails_scrape(exporter: Exporter) -> None:
    app = RecordingAppender()
    rules = [{"regex": "__name__", "action": "labeldrop"}]
    m = ScrapeManager(app, configs=config(exporter.address, metric_relabel_configs=rules))
    await m.start()
    await wait_for(lambda: len(app.batches) >= 1, "scrape")
    err = m.targets().active[0].last_error
    await m.stop()
    assert err == "missing metric name (__name__ label)"
    assert value(app.batches[0], "up") == 0.0


async def test_appender_error_counts_as_failed_scrape(exporter: Exporter) -> None:
    app = RecordingAppender()
    app.fail_next = 1
    m = ScrapeManager(app, configs=config(exporter.address))
    await m.start()
    await wait_for(lambda: len(app.batches) >= 1, "fallback append")
    err = m.targets().active[0].last_error
    await m.stop()
    assert value(app.batches[0], "up") == 0.0
    assert err == "out of order sample"


async def test_target_removal_writes_end_of_run_markers(exporter: Exporter) -> None:
    app = RecordingAppender()
    m = ScrapeManager(app, configs=config(exporter.address))
    await m.start()
    await wait_for(lambda: len(app.batches) >= 1, "scrape")
    await m.reload(config([]))
    n = len(app.batches)
    await wait_for(lambda: any(all(is_stale(v) for _, v in rows(b).values()) for b in app.batches[n - 1 :]), "end-of-run markers")
    await m.stop()
    final = app.batches[-1]
    names = {k.split("{")[0] for k in rows(final)}
    assert names == {"a", "up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling", "scrape_series_added"}
    assert m.targets().active == []


@pytest.mark.parametrize("on_stop", [False, True])
async def test_stop_markers_only_when_asked(exporter: Exporter, on_stop: bool) -> None:
    app = RecordingAppender()
    m = ScrapeManager(app, configs=config(exporter.address), stale_markers_on_stop=on_stop)
    await m.start()
    await wait_for(lambda: len(app.batches) >= 1, "scrape")
    await m.stop()
    last = app.batches[-1]
    assert all(is_stale(v) for _, v in rows(last).values()) is on_stop


async def test_relabel_targets_and_json(exporter: Exporter) -> None:
    other = "127.0.0.1:1"
    rules = [
        {"source_labels": ["__address__"], "regex": ".*:1", "action": "drop"},
        {"target_label": "env", "replacement": "prod"},
        {"source_labels": ["__address__"], "target_label": "__param_target"},
    ]
    cfgs = config([exporter.address, other], relabel_configs=rules, params={"module": ["m"]})
    app = RecordingAppender()
    m = ScrapeManager(app, configs=cfgs, external_host="pw-host")
    await m.start()
    # a successful scrape: on a loaded machine one of 100 ms can time out, and its target is then down
    data: dict[str, Any] = {}

    def scraped() -> bool:
        data.update(m.to_prometheus_targets_json("any"))
        return bool(data["activeTargets"][0]["health"] == "up")

    await wait_for(scraped, "a successful scrape")
    await m.stop()
    [t] = data["activeTargets"]
    port = exporter.address.split(":")[1]
    assert t["labels"] == {"env": "prod", "instance": exporter.address, "job": "job1"}
    assert t["discoveredLabels"] == {
        "__address__": exporter.address, "__metrics_path__": "/metrics", "__scheme__": "http",
        "__scrape_interval__": "100ms", "__scrape_timeout__": "100ms", "__param_module": "m", "job": "job1",
    }
    assert t["scrapeUrl"] == f"http://{exporter.address}/metrics?module=m&target=127.0.0.1%3A{port}"
    assert t["globalUrl"] == f"http://pw-host:{port}/metrics?module=m&target=127.0.0.1%3A{port}"
    assert t["health"] == "up" and t["lastError"] == ""
    assert (t["scrapeInterval"], t["scrapeTimeout"]) == ("100ms", "100ms")
    assert t["lastScrape"][:4].isdigit() and isinstance(t["lastScrapeDuration"], float)
    assert data["droppedTargets"] == [{"discoveredLabels": {
        "__address__": other, "__metrics_path__": "/metrics", "__scheme__": "http",
        "__scrape_interval__": "100ms", "__scrape_timeout__": "100ms", "__param_module": "m", "job": "job1"}, "scrapePool": "job1"}]
    assert data["droppedTargetCounts"] == {"job1": 1}


async def test_targets_json_state_filter(exporter: Exporter) -> None:
    m = ScrapeManager(RecordingAppender(), configs=config(exporter.address))
    await m.start()
    assert m.to_prometheus_targets_json("dropped")["activeTargets"] == []
    assert len(m.to_prometheus_targets_json("active")["activeTargets"]) == 1
    assert m.to_prometheus_targets_json("active")["droppedTargets"] == []
    assert m.to_prometheus_targets_json("any")["activeTargets"][0]["health"] in ("unknown", "up")
    await m.stop()


async def test_file_sd_reload(exporter: Exporter, tmp_path: Path) -> None:
    second = Exporter()
    try:
        sd = tmp_path / "targets.json"
        sd.write_text(json.dumps([{"targets": [exporter.address], "labels": {"team": "a"}}]))
        (tmp_path / "more.yml").write_text("- targets: []\n")
        raw = {"job_name": "fsd", "scrape_interval": "100ms",
               "file_sd_configs": [{"files": [str(tmp_path / "*.json"), str(tmp_path / "*.yml")], "refresh_interval": "50ms"}]}
        app = RecordingAppender()
        m = ScrapeManager(app, configs=parse_scrape_configs([raw]))
        await m.start()
        await wait_for(lambda: len(app.batches) >= 1, "scrape")
        first = m.targets().active
        assert [t.labels for t in first] == [{"instance": exporter.address, "job": "fsd", "team": "a"}]
        assert first[0].discovered_labels["__meta_filepath"] == str(sd)
        (tmp_path / "more.yml").write_text(f"- targets: ['{second.address}']\n  labels: {{team: b}}\n")
        sd.write_text("not json")  # a broken file keeps its last good targets
        await wait_for(lambda: len(m.targets().active) == 2, "second target")
        await wait_for(lambda: len(second.headers) >= 1, "second target scraped")
        sd.write_text("[]")
        await wait_for(lambda: len(m.targets().active) == 1, "first target removed")
        assert m.targets().active[0].labels["team"] == "b"
        await m.stop()
    finally:
        second.close()


async def test_reload_changed_config_keeps_staleness(exporter: Exporter) -> None:
    exporter.body = b"a 1\nb 1\n"
    app = RecordingAppender()
    m = ScrapeManager(app, configs=config(exporter.address))
    await m.start()
    await wait_for(lambda: len(app.batches) >= 1, "scrape")
    exporter.body = b"a 1\n"
    await m.reload(config(exporter.address, sample_limit=100))
    await wait_for(lambda: any(k.startswith("b{") and is_stale(v) for b in app.batches for k, (_, v) in rows(b).items()), "marker after reload")
    await m.stop()


async def test_target_limit(exporter: Exporter) -> None:
    second = Exporter()
    try:
        app = RecordingAppender()
        m = ScrapeManager(app, configs=config([exporter.address, second.address], target_limit=1))
        await m.start()
        await wait_for(lambda: len(app.batches) >= 2, "scrapes")
        errs = {t.last_error for t in m.targets().active}
        await m.stop()
        assert errs == {"target_limit exceeded (number of targets: 2, limit: 1)"}
        assert exporter.headers == [] and second.headers == []
    finally:
        second.close()


async def test_jitter_offset_is_deterministic_and_within_interval(exporter: Exporter) -> None:
    m = ScrapeManager(RecordingAppender(), configs=config(exporter.address))
    await m.start()
    loop = next(iter(m._pools["job1"].loops.values()))
    offsets = [loop.offset_s() for _ in range(3)]
    await m.stop()
    assert all(0 <= o <= 0.1 for o in offsets)
    h = loop.target.hash()
    assert h == loop.target.hash() and isinstance(h, int)


def test_label_value_limit_message() -> None:
    # Exercised through the loop's resolver with a cache miss.
    from pitwall.metrics.scrape.loop import ScrapeError, ScrapeLoop
    from pitwall.metrics.scrape.manager import Pool
    from pitwall.metrics.scrape.targets import populate_labels

    [cfg] = parse_scrape_configs([{"job_name": "j", "label_value_length_limit": 3}])
    tgt, _ = populate_labels({"__address__": "h:1"}, cfg)
    assert tgt is not None
    pool = Pool(ScrapeManager(RecordingAppender(), configs=[cfg]), cfg)
    sl = ScrapeLoop(pool, tgt)
    with pytest.raises(ScrapeError) as ei:
        sl._prepare(b'm{a="toolong"} 1\n', "text/plain", 0)
    assert str(ei.value).startswith('label_value_length_limit exceeded (metric: m{a="toolong"}, label name: ')
    asyncio.run(pool.client.aclose())


def test_cached_prepare_is_columnar() -> None:
    from pitwall.metrics.scrape.loop import ScrapeLoop
    from pitwall.metrics.scrape.manager import Pool
    from pitwall.metrics.scrape.targets import populate_labels

    [cfg] = parse_scrape_configs([{"job_name": "j"}])
    tgt, _ = populate_labels({"__address__": "h:1"}, cfg)
    assert tgt is not None
    pool = Pool(ScrapeManager(RecordingAppender(), configs=[cfg]), cfg)
    sl = ScrapeLoop(pool, tgt)
    body = "".join(f'g{{k="{i}"}} {i}\n' for i in range(1000)).encode()
    p1 = sl._prepare(body, "text/plain", 5)
    p2 = sl._prepare(body, "text/plain", 6)
    assert p1.series_added == 1000 and p2.series_added == 0
    assert p2.idx.dtype == np.int64 and p2.values[10] == 10.0 and set(p2.ts.tolist()) == {6}
    assert len(p2.series) == 1000
    asyncio.run(pool.client.aclose())


PROMETHEUS = Path("/usr/bin/prometheus")


@pytest.mark.slow
@pytest.mark.peer
@pytest.mark.skipif(not PROMETHEUS.exists(), reason="needs Debian's prometheus")
async def test_same_series_as_real_prometheus(tmp_path: Path) -> None:
    import socket
    import subprocess

    import httpx
    import yaml

    reg = CollectorRegistry()
    c = Counter("orders", "Orders", ["shop", "job"], registry=reg)
    c.labels("berlin", "exporter").inc()
    c.labels("paris", "exporter").inc(2)
    Gauge("go_threads", "Threads", registry=reg).set(4)
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=reg)
    target = f"127.0.0.1:{server.server_address[1]}"
    raw = {
        "job_name": "diff",
        "scrape_interval": "1s",
        "static_configs": [{"targets": [target], "labels": {"env": "test"}}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "regex": "(.*):(.*)", "target_label": "port", "replacement": "$2"},
            {"source_labels": ["env"], "action": "uppercase", "target_label": "ENV"},
        ],
        "metric_relabel_configs": [
            {"source_labels": ["__name__"], "regex": "go_.*", "action": "drop"},
            {"source_labels": ["shop"], "target_label": "shop_hash", "action": "hashmod", "modulus": 8},
            {"regex": "(exported_.*)", "replacement": "x_$1", "action": "labelmap"},
        ],
    }
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    prom_port = s.getsockname()[1]
    s.close()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({"scrape_configs": [raw]}))
    proc = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    app = RecordingAppender()
    m = ScrapeManager(app, configs=parse_scrape_configs([raw]))
    await m.start()
    try:
        await wait_for(lambda: len(app.batches) >= 2, "our scrapes")
        theirs: set[str] = set()
        async with httpx.AsyncClient() as client:
            for _ in range(100):
                try:
                    resp = await client.get(f"http://127.0.0.1:{prom_port}/api/v1/series", params={"match[]": '{job="diff"}'})
                    data = resp.json().get("data") or []
                    if any(d.get("__name__") == "scrape_series_added" for d in data) and any(d.get("__name__") == "orders_total" for d in data):
                        theirs = {format_labels(tuple(sorted(d.items()))) for d in data}
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
    finally:
        await m.stop()
        proc.terminate()
        proc.wait(timeout=30)
        server.shutdown()
        server.server_close()
    ours = set().union(*(rows(b).keys() for b in app.batches))
    assert theirs, "prometheus produced no series"
    assert ours == theirs


async def test_stopping_a_loop_survives_a_swallowed_cancel() -> None:
    # Python 3.11's asyncio.timeout can turn a cancel that lands as it expires into TimeoutError,
    # which the scrape loop treats as a failed scrape and carries on: stop must cancel again.
    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        await asyncio.sleep(30)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(scrape_manager.cancel(task))
    done, _ = await asyncio.wait({stopping}, timeout=15)  # a liveness bound: stubborn() would run 30 s
    if not done:
        task.cancel()
        stopping.cancel()
    assert done and task.cancelled()
