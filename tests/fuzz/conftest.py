"""One in-process app per fuzz module, driven synchronously so hypothesis reuses it across examples.

The app's lifespan is entered on an ``asyncio.Runner`` kept for the whole
module; each request runs one turn of that loop. Known data (a series, a log
stream, a trace) is stored first: ``Seeded.snapshot()`` reads it back, so a
test can check nothing stored changed after a rejected request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import cramjam
import httpx
import pytest

from pitwall.config import load_settings
from pitwall.metrics.ingest import prompb
from tests.traces.helpers import PROTO, otlp_request

SEED_TRACE = "5eed5eed5eed5eed5eed5eed5eed5eed"


class Seeded:
    """The app over ``httpx.ASGITransport``, with seeded data, called from synchronous code."""

    def __init__(self, app: Any, runner: asyncio.Runner) -> None:
        self.app = app
        self.runner = runner
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
        self.t_s = time.time()

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return self.runner.run(self.client.request(method, url, **kw))

    def seed(self) -> None:
        w = prompb.WriteRequest()
        ts = w.timeseries.add()
        for k, v in (("__name__", "fuzz_seed_metric"), ("k", "v")):
            lb = ts.labels.add()
            lb.name, lb.value = k, v
        for i in range(5):
            s = ts.samples.add()
            s.timestamp, s.value = int(self.t_s * 1000) - 60_000 + i * 10_000, float(i)
        r = self.request("POST", "/api/v1/write", content=bytes(cramjam.snappy.compress_raw(w.SerializeToString())),
                         headers={"content-type": "application/x-protobuf", "content-encoding": "snappy"})
        assert r.status_code == 204, r.text
        t_ns = int(self.t_s * 1e9)
        push = {"streams": [{"stream": {"fuzzseed": "1"}, "values": [[str(t_ns - 10**9 * i), f"seed line {i}"]
                                                                     for i in range(5)]}]}
        r = self.request("POST", "/loki/api/v1/push", json=push)
        assert r.status_code == 204, r.text
        spans = [{"trace": SEED_TRACE, "span": "00000000000000a1", "kind": 2, "name": "seed"}]
        r = self.request("POST", "/v1/traces", content=otlp_request("seedsvc", spans), headers=PROTO)
        assert r.status_code == 200, r.text
        self.baseline = self.snapshot()

    def snapshot(self) -> tuple[Any, ...]:
        t = self.t_s + 1
        m = self.request("GET", "/api/v1/query_range", params={
            "query": 'fuzz_seed_metric{k="v"}', "start": t - 120, "end": t, "step": 10})
        lg = self.request("GET", "/loki/api/v1/query_range", params={
            "query": '{fuzzseed="1"}', "start": int((t - 120) * 1e9), "end": int(t * 1e9), "limit": 100})
        tr = self.request("GET", f"/api/v2/trace/{SEED_TRACE}")
        assert m.status_code == lg.status_code == tr.status_code == 200, (m.text, lg.text, tr.text)
        return m.json()["data"], lg.json()["data"]["result"], tr.json()

    def close(self) -> None:
        self.runner.run(self.client.aclose())


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    from pitwall.server import create_app

    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("fuzz") / "data",
        listen="127.0.0.1:0",
        limits={"max_series_per_request": 1000, "max_request_bytes": 1 << 20, "max_decompressed_bytes": 4 << 20},
        storage={"fsync": False},
    )
    app = create_app(settings)
    with asyncio.Runner() as runner:
        lifespan = app.router.lifespan_context(app)
        runner.run(lifespan.__aenter__())
        s = Seeded(app, runner)
        try:
            s.seed()
            yield s
        finally:
            s.close()
            runner.run(lifespan.__aexit__(None, None, None))
