"""The per-block attribute index: every search answers exactly what the scan of stored JSON answers.

One store holds a block written before the index existed (also appended to
afterwards), an indexed block written in two flush runs, and the head; it is
reopened from disk before the searches. Random attribute filters (hypothesis)
run through ``TraceQuery.find_trace_ids`` (native, Jaeger, Tempo and TraceQL
search all go through it) with the index used and with every block scanned.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.traces_store import TraceStore
from pitwall.traces.model import SpanColumns, dumps, tkey_of
from pitwall.traces.query import AttrFilter, SpanFilter, TraceQuery
from tests.traces.shop import A, B, C, load_shop

pytestmark = pytest.mark.timeout(240)

HOUR = 3600 * 10**9
T0 = 1_700_000_000 * 10**9 // HOUR * HOUR
KEYS = ["http.status_code", "http.url", "k", "flag", "ratio", "service.name", "host", 'q"uote', "back\\slash"]
VALUES: list[Any] = [200, 500, 503, 404, -1, 0, 1.5, 2.50, 1e3, True, False, None, "500", "503", "abc", "ABC", "",
                     "a b", "x'y", 'q"', "1e3", [1, 2], {"a": 1}]
SERVICES = ["front", "Cart", "db"]
TENANTS = ["default", "other"]


def _attrs(rng: random.Random, n: int) -> str:
    d = {rng.choice(KEYS): rng.choice(VALUES) for _ in range(n)}
    return dumps(d)  # the decoders always write an object, "{}" at least


def _batch(rng: random.Random, tenant: str, hour: int, n: int) -> pa.Table:
    c = SpanColumns()
    for i in range(n):
        tid = f"{rng.getrandbits(20):032x}"
        c.tkey.append(tkey_of(tid))
        c.trace_id.append(tid)
        c.span_id.append(f"{rng.getrandbits(63) | 1:016x}")
        c.parent_id.append("")
        c.service.append(rng.choice(SERVICES))
        c.name.append(rng.choice(["GET", "POST"]))
        c.kind.append(2)
        c.start_ns.append(T0 + hour * HOUR + i * 1000 + rng.randrange(1000))
        c.duration_ns.append(rng.randrange(1, 10**6))
        c.status_code.append(rng.choice([0, 0, 2]))
        c.status_message.append("")
        c.remote_service.append("")
        c.flags.append(0)
        c.attributes.append(_attrs(rng, rng.randrange(0, 5)))
        c.resource.append(_attrs(rng, rng.randrange(0, 3)))
        c.scope.append("")
        c.events.append(dumps([{"name": rng.choice(["retry", "exception"]), "time_ns": 1}]) if rng.random() < 0.2
                        else "")
        c.links.append("")
    return c.to_table(tenant)


@pytest.fixture(scope="module")
def query(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TraceQuery, TraceStore]]:
    import asyncio

    path: Path = tmp_path_factory.mktemp("attr-index")
    rng = random.Random(13)

    async def build() -> None:
        db = TelemetryDB(path / "t.duckdb")
        st_ = TraceStore(db, path / "wal", block_ns=HOUR, retention_ns=0, fsync=False)
        st_.attr_index = False  # block 0: written before the index existed
        await st_.start()
        for tenant in TENANTS:
            await st_.append(tenant, _batch(rng, tenant, 0, 300))
        await st_.flush()
        st_.attr_index = True
        for run in range(2):  # block 1: two indexed runs; block 0 gains a run and stays unindexed
            for tenant in TENANTS:
                await st_.append(tenant, _batch(rng, tenant, 1, 300))
                await st_.append(tenant, _batch(rng, tenant, 0, 50 * (run + 1)))
            await st_.flush()
        await st_.stop()
        db.close()

    asyncio.run(build())
    db = TelemetryDB(path / "t.duckdb")
    store = TraceStore(db, path / "wal", block_ns=HOUR, retention_ns=0, fsync=False)
    store._open()  # reopened from disk: which blocks have an index is read back
    for tenant in TENANTS:  # the head (applied as WAL replay applies it: no event loop here)
        for hour in (1, 2):
            t = _batch(rng, tenant, hour, 200)
            store._apply(t, np.asarray(t.column("tkey").to_numpy(), dtype=np.int64))
    yield TraceQuery(store, max_results=10_000), store
    db.close()


def test_blocks_are_indexed_as_written(query: tuple[TraceQuery, TraceStore]) -> None:
    _q, store = query
    with store.search_relations(T0, T0 + 3 * HOUR) as (cur, rel, indexed):
        assert [t for t, _ in indexed] == [f"traces_spans_{(T0 + HOUR) // 10**6}"]
        assert f"traces_spans_{T0 // 10**6}" in rel and "_traces_head" in rel
        attrs = indexed[0][1]
        keys = {r[0] for r in cur.execute(f"SELECT DISTINCT k FROM {attrs}").fetchall()}
        # resource keys are indexed too; keys no JSON path can name are not
        assert {"http.status_code", "service.name", "host"} <= keys
        assert not {'q"uote', "back\\slash"} & keys
        (total,), = cur.execute(f"SELECT count(*) FROM {attrs}").fetchall()
        assert total > 500


_filters = st.builds(
    AttrFilter,
    key=st.sampled_from([k for k in KEYS if '"' not in k] + ["missing"]),
    op=st.sampled_from(["=", "=", "!=", ">", ">=", "<", "<="]),
    value=st.sampled_from(["200", "500", "503", "404", "-1", "0", "1.5", "2.5", "1000.0", "true", "false", "abc",
                           "ABC", "", "a b", "x'y", 'q"', "1e3", "[1,2]", '{"a":1}']),
).filter(lambda a: a.op not in (">", ">=", "<", "<=") or a.value.lstrip("-").replace(".", "", 1).isdigit())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attrs=st.lists(_filters, min_size=1, max_size=3), service=st.sampled_from(["", "front", "cart"]),
       words=st.sampled_from([(), ("retry",), ("error",)]), tenant=st.sampled_from(TENANTS),
       hours=st.sampled_from([(0, 3), (1, 2), (0, 1), (2, 3)]))
def test_index_and_scan_find_the_same_traces(query: tuple[TraceQuery, TraceStore], attrs: list[AttrFilter],
                                             service: str, words: tuple[str, ...], tenant: str,
                                             hours: tuple[int, int]) -> None:
    q, store = query
    f = SpanFilter(start_ns=T0 + hours[0] * HOUR, end_ns=T0 + hours[1] * HOUR - 1, service=service,
                   attrs=tuple(attrs), words=words)
    store.use_attr_index = True
    indexed = q.find_trace_ids(tenant, f, 10_000)
    store.use_attr_index = False
    try:
        scanned = q.find_trace_ids(tenant, f, 10_000)
    finally:
        store.use_attr_index = True
    assert sorted(indexed) == sorted(scanned)
    assert len(indexed) == len(set(indexed))


def test_a_selective_filter_finds_something_in_the_indexed_block(query: tuple[TraceQuery, TraceStore]) -> None:
    q, store = query
    f = SpanFilter(start_ns=T0 + HOUR, end_ns=T0 + 2 * HOUR - 1, attrs=(AttrFilter("http.status_code", ">=", "500"),))
    got = q.find_trace_ids("default", f, 10_000)
    store.use_attr_index = False
    try:
        assert got and sorted(got) == sorted(q.find_trace_ids("default", f, 10_000))
    finally:
        store.use_attr_index = True


async def test_retention_drops_a_block_with_its_index(tmp_path: Path) -> None:
    db = TelemetryDB(tmp_path / "t.duckdb")
    store = TraceStore(db, tmp_path / "wal", block_ns=HOUR, retention_ns=HOUR, fsync=False)
    await store.start()
    try:
        await store.append("default", _batch(random.Random(1), "default", 0, 50))
        await store.flush()
        names = {r[0] for r in db.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert {f"traces_spans_{T0 // 10**6}", f"traces_attrs_{T0 // 10**6}"} <= names
        assert store.apply_retention(T0 + 5 * HOUR) == [f"traces_spans_{T0 // 10**6}"]
        names = {r[0] for r in db.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert not {n for n in names if n.startswith(("traces_spans_", "traces_attrs_"))}
    finally:
        await store.stop()
        db.close()


async def test_grafana_searches_answer_from_indexed_blocks(client: httpx.AsyncClient) -> None:
    """The shop's traces flushed into an indexed block, then searched as Grafana's Tempo and Jaeger
    data sources and the native API ask: the same answers the head gives (test_tempo_api etc.)."""
    await load_shop(client)
    store: TraceStore = client.app.state.components.traces.store  # type: ignore[attr-defined]
    await store.flush()
    assert store.head_spans == 0 and store.block_count() >= 1
    now = int(time.time())
    rng = {"start": str(now - 3600), "end": str(now + 60), "limit": "20"}

    async def tempo(q: str) -> set[str]:
        r = await client.get("/api/search", params={"q": q, **rng})
        assert r.status_code == 200, r.text
        return {t["traceID"] for t in r.json()["traces"]}

    assert await tempo("{ span.http.status_code >= 500 }") == {A}
    assert await tempo('{ resource.deployment.environment = "prod" }') == {C}
    assert await tempo('{ span.job.id = "42" && resource.service.name = "worker" }') == {C}
    assert await tempo("{ span.http.status_code = 200 }") == {B}
    r = await client.get("/api/traces", params={"service": "backend", "tags": json.dumps({"http.status_code": "503"}),
                                                "lookback": "1h"})
    assert r.status_code == 200, r.text
    assert {t["traceID"] for t in r.json()["data"]} == {A}
    r = await client.get("/api/traces/v1/search", params={"attr": "http.status_code<500", "since": "2h"})
    assert r.status_code == 200, r.text
    assert {t["traceId"] for t in r.json()["traces"]} == {B}


async def test_a_database_in_an_older_storage_format_gets_indexed_blocks_without_zstd(tmp_path: Path) -> None:
    import duckdb

    duckdb.connect(str(tmp_path / "t.duckdb"), config={"storage_compatibility_version": "v0.10.0"}).close()
    db = TelemetryDB(tmp_path / "t.duckdb")
    store = TraceStore(db, tmp_path / "wal", block_ns=HOUR, retention_ns=0, fsync=False)
    await store.start()
    try:
        batch = _batch(random.Random(2), "default", 0, 100)
        await store.append("default", batch)
        await store.flush()
        assert store.head_spans == 0 and store.block_count() == 1
        f = SpanFilter(start_ns=T0, end_ns=T0 + HOUR, attrs=(AttrFilter("http.status_code", ">=", "500"),))
        q = TraceQuery(store)
        got = q.find_trace_ids("default", f, 1000)
        store.use_attr_index = False
        assert got and sorted(got) == sorted(q.find_trace_ids("default", f, 1000))
    finally:
        await store.stop()
        db.close()
