"""The query path's fixed-cost removals keep answers and the event loop's health.

Small queries are evaluated on the event loop through a non-blocking querier
that gives up (``WouldBlock``) on samples in DuckDB blocks, a writer holding
the store, or more series/samples than its budget; the HTTP handler then runs
the query on a thread. Parsed queries are cached; bodies are encoded with
orjson. Each is checked against the plain path's answer.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from pitwall.core.labels import Labels, Matcher, labels_from_dict
from pitwall.metrics.memory import MemoryQuerier
from pitwall.metrics.model import SampleBatch
from pitwall.metrics.promql import PromQLParseError
from pitwall.metrics.promql.engine import (
    INLINE_MAX_SERIES,
    PARSE_CACHE_MAX_TEXT,
    Engine,
    QueryResult,
    encode_response_body,
)
from pitwall.metrics.promql.format import format_float, format_seconds
from pitwall.metrics.store import WouldBlock
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore
from tests.metrics.test_api import T0, _write_body

pytestmark = pytest.mark.timeout(60)

M = [Matcher.of("=", "__name__", "m")]


def _store(path: Path) -> MetricStore:
    return MetricStore(TelemetryDB(path / "t.duckdb"), path / "wal", fsync=False, block_ms=1000)


async def _fill(st: MetricStore, n_series: int, times: list[int]) -> list[Labels]:
    series = [labels_from_dict({"__name__": "m", "i": f"{i:04d}"}) for i in range(n_series)]
    k = len(times)
    await st.append("default", SampleBatch(
        series, np.repeat(np.arange(n_series, dtype=np.int64), k),
        np.tile(np.array(times, dtype=np.int64), n_series), np.arange(n_series * k, dtype=np.float64)))
    return series


async def test_nonblocking_reads_match_and_give_up_instead_of_waiting(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    try:
        await _fill(st, 20, [100, 200, 300])
        want = st.querier().select_flat([M], 0, 10**6)
        got = st.nonblocking_querier("default", 20, 60).select_flat([M], 0, 10**6)
        assert got[0] == want[0]
        for a, b in zip(got[1:], want[1:], strict=True):
            assert np.array_equal(a, b)
        with pytest.raises(WouldBlock):  # one series over the budget
            st.nonblocking_querier("default", 19, 10**6).select_flat([M], 0, 10**6)
        with pytest.raises(WouldBlock):  # one sample over the budget
            st.nonblocking_querier("default", 100, 59).select(M, 0, 10**6)
        st.db.lock.acquire_write()
        try:
            with pytest.raises(WouldBlock):
                st.nonblocking_querier("default", 100, 10**6).select_flat([M], 0, 10**6)
        finally:
            st.db.lock.release_write()
        await st.flush()
        await _fill(st, 20, [5000])
        assert st.blocks.by_start
        with pytest.raises(WouldBlock):  # samples in a DuckDB block
            st.nonblocking_querier("default", 100, 10**6).select_flat([M], 0, 10**6)
        # A window the head alone covers is still read without blocking.
        labels, ts, _, _ = st.nonblocking_querier("default", 100, 10**6).select_flat([M], 4000, 6000)
        assert len(labels) == 20 and ts.tolist() == [5000] * 20
    finally:
        await st.stop()


def test_parsed_queries_are_shared_and_errors_are_not_cached() -> None:
    e = Engine()
    assert e.parse("sum by (a) (rate(x[5m]))") is e.parse("sum by (a) (rate(x[5m]))")
    for _ in range(2):
        with pytest.raises(PromQLParseError):
            e.parse("sum(")
    long = 'x{a="' + "y" * PARSE_CACHE_MAX_TEXT + '"}'
    assert e.parse(long) == e.parse(long) and e.parse(long) is not e.parse(long)


def test_only_small_queries_are_tried_inline() -> None:
    e = Engine()
    assert e.may_run_inline("rate(x[5m])", 1)
    assert e.may_run_inline("sum(", 1)  # its parse error is as quick inline
    assert not e.may_run_inline("rate(x[5m])", 10_000)
    # A subquery whose inner grid stays within the step budget is tried inline too; a bigger one, or two, not.
    assert e.may_run_inline("max_over_time(rate(x[5m])[1h:1m])", 1)
    assert e.may_run_inline("max_over_time(rate(x[5m])[10m:1m])", 121, 15_000)  # 30 + 10 min: 41 inner steps
    assert not e.may_run_inline("max_over_time(rate(x[5m])[10m:1s])", 121, 15_000)
    assert not e.may_run_inline("max_over_time(rate(x[5m])[1d:1m])", 1)
    assert e.may_run_inline("max_over_time(rate(x[5m])[1h:])", 1)  # the default step, 1m: 61 inner steps
    assert not e.may_run_inline("max_over_time(rate(x[5m])[5h:])", 1)  # 301
    assert not e.may_run_inline("max_over_time(max_over_time(x[5m:1m])[1h:1m])", 1)


def _results() -> list[QueryResult]:
    q = MemoryQuerier()
    for i in range(3):
        for t in range(0, 60_000, 15_000):
            q.add(labels_from_dict({"__name__": "m", "i": str(i), "u": "é\"\n<"}), t, t / 7 + i)
    e = Engine()
    return [e.instant(q, "m", 60_000), e.instant(q, "rate(m[1m])", 60_500), e.range(q, "m * 1e300", 0, 60_000, 7_500),
            e.instant(q, "scalar(m)", 60_000), e.instant(q, '"s"', 1_500), e.instant(q, "m[1m]", 60_000)]


def test_response_bodies_are_the_documented_json() -> None:
    for res in _results():
        body = {"status": "success", "data": res.to_prometheus_data(), "warnings": res.warnings, "infos": res.infos}
        want = {k: v for k, v in body.items() if v}  # Prometheus leaves out empty warnings and infos
        assert json.loads(encode_response_body(res)) == json.loads(json.dumps(want))
    assert any(r.infos for r in _results())  # rate over "m" carries an info annotation


async def test_small_and_large_queries_answer_alike_and_in_order(client: httpx.AsyncClient) -> None:
    n = INLINE_MAX_SERIES + 4  # "big" goes past the inline budget, "small" stays inside it
    body = _write_body([({"__name__": "big", "i": f"{i:04d}"}, [(T0 + 1000, float(i))]) for i in range(n)]
                       + [({"__name__": "small", "i": "0"}, [(T0 + 1000, 1.5)])])
    r = await client.post("/api/v1/write", content=body,
                          headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"})
    assert r.status_code == 204, r.text
    at = str((T0 + 2000) / 1000)
    r = await client.get("/api/v1/query", params={"query": "topk(3, big)", "time": at})
    assert [x["metric"]["i"] for x in r.json()["data"]["result"]] == [f"{n - 1:04d}", f"{n - 2:04d}", f"{n - 3:04d}"]
    r = await client.get("/api/v1/query", params={"query": "count(big)", "time": at})
    assert r.json()["data"]["result"][0]["value"][1] == str(n)
    r = await client.get("/api/v1/query", params={"query": "small * 2", "time": at})
    assert r.json()["data"]["result"] == [{"metric": {"i": "0"}, "value": [float(at), "3"]}]


async def test_a_writer_holding_the_store_does_not_stall_the_event_loop(client: httpx.AsyncClient) -> None:
    store = client.app.state.components.metrics.store  # type: ignore[attr-defined]
    body = _write_body([({"__name__": "small", "i": "0"}, [(T0 + 1000, 1.5)])])
    r = await client.post("/api/v1/write", content=body,
                          headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"})
    assert r.status_code == 204, r.text
    store.db.lock.acquire_write()
    try:
        query = asyncio.create_task(client.get("/api/v1/query",
                                               params={"query": "small", "time": str((T0 + 2000) / 1000)}))
        for _ in range(20):  # the query waits on a thread while the loop keeps answering
            assert (await client.get("/-/healthy")).status_code == 200
        assert not query.done()
    finally:
        store.db.lock.release_write()
    r = await query
    assert r.json()["data"]["result"][0]["value"][1] == "1.5"


def test_matrix_points_are_spelled_as_one_by_one() -> None:
    vals = np.array([0.0, -0.0, 2.0, 1.5, 100.0, 1e15, 1e16, 1.5e-7, 123456.789, -3.25, 1 / 3])
    ts = np.array([-1500, -1000, 0, 999, 1000, 1234, 15000, 1700000001234, 1700000001000, 7, 8], dtype=np.int64)
    for sl in (slice(None), slice(0, 6), slice(2, 5), slice(7, 9), slice(0, 0)):
        res = QueryResult("matrix", [labels_from_dict({"a": "b"})], [ts[sl]], [vals[sl]])
        got = res.to_prometheus_data()["result"][0]["values"] if len(ts[sl]) else []
        want = [[format_seconds(t), format_float(v)] for t, v in zip(ts[sl].tolist(), vals[sl].tolist(), strict=True)]
        assert [[type(t), t, v] for t, v in got] == [[type(t), t, v] for t, v in want]
    nan = QueryResult("matrix", [()], [np.array([1000, 2000])], [np.array([np.nan, -np.inf])])
    assert nan.to_prometheus_data()["result"][0]["values"] == [[1, "NaN"], [2, "-Inf"]]


def test_matrix_values_match_format_float_over_magnitudes() -> None:
    rng = np.random.default_rng(7)
    ts = np.arange(121, dtype=np.int64) * 15_000
    for k in range(300):
        vals = rng.normal(size=121) * 10.0 ** int(rng.integers(-8, 20))
        if k % 3 == 0:
            vals = np.round(vals)
        elif k % 3 == 1:
            vals = np.round(vals, 3)
        res = QueryResult("matrix", [()], [ts], [vals])
        got = [v for _, v in res.to_prometheus_data()["result"][0]["values"]]
        assert got == [format_float(v) for v in vals.tolist()]
