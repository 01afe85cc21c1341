"""Security finding 23: a regex must not hang the server (RE2, linear time), nor a query the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from pitwall.core.labels import Matcher
from pitwall.metrics.memory import MemoryQuerier
from pitwall.metrics.model import SeriesSamples
from pitwall.metrics.promql.engine import Engine
from pitwall.metrics.promql.errors import QueryTimeout
from tests.metrics.test_api import T0, _write_body

EVIL = "a" * 40 + "!"


@pytest.fixture
async def redos(client: httpx.AsyncClient) -> httpx.AsyncClient:
    series = [({"__name__": "redos_metric", "v": EVIL}, [(T0, 1.0)]),
              ({"__name__": "redos_metric", "v": "aab"}, [(T0, 2.0)])]
    r = await client.post("/api/v1/write", content=_write_body(series))
    assert r.status_code == 204, r.text
    return client


def _data(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    return r.json()["data"]


@pytest.mark.timeout(60)
async def test_catastrophic_regex_answers_quickly(redos: httpx.AsyncClient) -> None:
    at = T0 / 1000
    data = _data(await redos.get("/api/v1/query", params={"query": 'redos_metric{v=~"(a+)+b"}', "time": at}))
    assert [s["metric"]["v"] for s in data["result"]] == ["aab"]
    data = _data(await redos.get("/api/v1/query", params={"query": 'redos_metric{v=~"(a+)+b", v!="aab"}',
                                                          "time": at}))
    assert data == {"resultType": "vector", "result": []}
    data = _data(await redos.get("/api/v1/query", params={"query": 'redos_metric{v!~"(a+)+b"}', "time": at}))
    assert [s["metric"]["v"] for s in data["result"]] == [EVIL]
    rng = {"query": 'label_replace(redos_metric, "w", "$1", "v", "((a+)+b)")', "start": at, "end": at + 60,
           "step": 15}
    data = _data(await redos.get("/api/v1/query_range", params=rng))
    assert sorted(s["metric"].get("w", "") for s in data["result"]) == ["", "aab"]
    series = _data(await redos.get("/api/v1/series", params={"match[]": 'redos_metric{v=~"(a+)+b"}'}))
    assert series == [{"__name__": "redos_metric", "v": "aab"}]
    values = _data(await redos.get("/api/v1/label/v/values", params={"match[]": '{v=~"(a+)+!"}'}))
    assert values == [EVIL]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('redos_metric{v=~"(a)\\\\1"}', "1:14: parse error: error parsing regexp: invalid escape sequence: `\\1`"),
        ('redos_metric{v=~"(?=a)"}',
         "1:14: parse error: error parsing regexp: invalid or unsupported Perl syntax: `(?=`"),
        ('redos_metric{v!~"a(?<!b)"}',
         "1:14: parse error: error parsing regexp: invalid or unsupported Perl syntax: `(?<!`"),
    ],
)
async def test_backreferences_and_lookarounds_are_bad_data(client: httpx.AsyncClient, query: str,
                                                           message: str) -> None:
    for path, key, prefix in (("/api/v1/query", "query", 'invalid parameter "query": '),
                              ("/api/v1/series", "match[]", "")):
        r = await client.get(path, params={key: query})
        assert r.status_code == 400, r.text
        assert r.json() == {"status": "error", "errorType": "bad_data", "error": prefix + message}


async def test_invalid_label_replace_regex_is_an_execution_error(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/query", params={"query": 'label_replace(vector(1), "a", "$1", "b", "(?=x)")'})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid regular expression in label_replace(): (?=x)"


@pytest.mark.timeout(60)
async def test_healthy_answers_while_a_query_runs(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    started, release = threading.Event(), threading.Event()
    real = Engine.instant

    def held(self: Engine, *args: Any) -> Any:
        started.set()
        release.wait(30)
        return real(self, *args)

    monkeypatch.setattr(Engine, "instant", held)
    # A subquery of more than INLINE_MAX_STEPS inner steps is never tried inline on the event loop: it runs on a
    # thread (small queries, small subqueries included, are tried inline).
    query = asyncio.create_task(client.get("/api/v1/query", params={"query": "max_over_time(vector(2)[1h:1s])",
                                                                      "time": "4"}))
    try:
        assert await asyncio.to_thread(started.wait, 30)
        r = await client.get("/-/healthy")
        assert r.status_code == 200
        assert not query.done()  # the query is still being evaluated, in its own thread
    finally:
        release.set()
    assert _data(await query) == {"resultType": "vector", "result": [{"metric": {}, "value": [4, "2"]}]}


class _SlowIndex(MemoryQuerier):
    """A store whose label matching starts only after the query's deadline has passed."""

    stopped = False

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesSamples]:
        time.sleep(0.3)
        try:
            for m in matchers:
                m.matches_many([EVIL] * 1000)  # a regex over many values checks the deadline between chunks
        except QueryTimeout:
            self.stopped = True
            raise
        return super().select(matchers, start_ms, end_ms)


def test_label_matching_in_storage_stops_at_the_query_timeout() -> None:
    q = _SlowIndex()
    q.add((("__name__", "redos_metric"), ("v", EVIL)), 0, 1.0)
    assert Engine(timeout_s=60).instant(q, 'redos_metric{v=~"(a+)+b"}', 0).series == []
    with pytest.raises(QueryTimeout):
        Engine(timeout_s=0.1).instant(q, 'redos_metric{v=~"(a+)+b"}', 0)
    assert q.stopped
