"""Security finding 23 for LogQL: user regexes run in linear time (RE2), and queries leave the event loop free."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

from pitwall.logs.logql.engine import LogQLEngine
from pitwall.logs.logql.errors import LogQLTimeout
from pitwall.logs.memory import InMemoryLogQuerier
from pitwall.logs.model import LogBatch
from tests.logs.conftest import now_ns, push_body

EVIL = "a" * 40 + "!"


@pytest.fixture
async def loaded(client: httpx.AsyncClient) -> tuple[httpx.AsyncClient, dict[str, str]]:
    t = now_ns() - 60 * 10**9
    body = push_body({(("job", "x"),): [[t + i, line] for i, line in enumerate(
        [EVIL, f"v={EVIL} n=1", "v=aab n=2", f'{{"v":"{EVIL}"}}'])]})
    r = await client.post("/loki/api/v1/push", json=body)
    assert r.status_code == 204, r.text
    return client, {"start": str(t - 3600 * 10**9), "end": str(t + 3600 * 10**9), "step": "60s"}


async def _lines(client: httpx.AsyncClient, rng: dict[str, str], query: str) -> list[str]:
    r = await client.get("/loki/api/v1/query_range", params={**rng, "query": query, "direction": "forward"})
    assert r.status_code == 200, r.text
    return [v[1] for s in r.json()["data"]["result"] for v in s["values"]]


@pytest.mark.timeout(60)
async def test_catastrophic_regexes_answer_quickly(loaded: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    client, rng = loaded
    assert await _lines(client, rng, '{job="x"} | regexp "(?P<a>(a+)+b)" | a != ""') == ["v=aab n=2"]
    assert await _lines(client, rng, '{job="x"} | logfmt | v=~"(a+)+b"') == ["v=aab n=2"]
    assert await _lines(client, rng, '{job="x"} | json | v=~"(a+)+b"') == []
    assert await _lines(client, rng, '{job="x"} |~ "(a+)+b"') == ["v=aab n=2"]
    assert await _lines(client, rng, '{job="x"} |~ "(a+)+b" or "(a+)+c"') == ["v=aab n=2"]
    assert await _lines(client, rng, '{job="x"} | line_format "{{ .job }} {{ __line__ }}" |~ "x (a+)+b"') == []
    fmt = '{job="x"} |= "n=1" | line_format `{{ regexReplaceAll "(a+)+b" __line__ "-" }}`'
    assert await _lines(client, rng, fmt) == [f"v={EVIL} n=1"]
    r = await client.get("/loki/api/v1/query_range", params={
        **rng, "query": 'label_replace(sum by (v) (count_over_time({job="x"} | logfmt [1h])), "w", "$1", "v", "((a+)+b)")'})
    assert r.status_code == 200, r.text
    assert sorted(s["metric"].get("w", "") for s in r.json()["data"]["result"]) == ["", "", "aab"]
    r = await client.get("/loki/api/v1/series", params={"match[]": '{job=~"(x+)+y|x"}', **rng})
    assert r.json()["data"] == [{"job": "x", "service_name": "x"}]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('{job=~"(a)\\\\1"}', "parse error at line 1, col 7: error parsing regexp: invalid escape sequence: `\\1`"),
        ('{job="x"} |~ "(?=a)"',
         "parse error at line 1, col 14: error parsing regexp: invalid or unsupported Perl syntax: `(?=`"),
        ('{job="x"} | regexp "(?P<a>x)(?<!y)"',
         "parse error at line 1, col 20: error parsing regexp: invalid or unsupported Perl syntax: `(?<!`"),
        ('{job="x"} | logfmt | v=~"(a)\\\\1"', "error parsing regexp: invalid escape sequence: `\\1`"),
    ],
)
async def test_backreferences_and_lookarounds_are_a_plain_400(client: httpx.AsyncClient, query: str,
                                                              message: str) -> None:
    r = await client.get("/loki/api/v1/query_range", params={"query": query})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert message in r.text


@pytest.mark.timeout(60)
async def test_healthy_answers_while_a_query_runs(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    started, release = threading.Event(), threading.Event()
    real = LogQLEngine.query_range

    def held(self: LogQLEngine, *args: Any, **kwargs: Any) -> Any:
        started.set()
        release.wait(30)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LogQLEngine, "query_range", held)
    query = asyncio.create_task(client.get("/loki/api/v1/query_range", params={"query": '{job="x"}'}))
    try:
        assert await asyncio.to_thread(started.wait, 30)
        assert (await client.get("/-/healthy")).status_code == 200
        assert not query.done()
    finally:
        release.set()
    assert (await query).status_code == 200


class _SlowStore(InMemoryLogQuerier):
    """A store that starts filtering lines only after the query's deadline has passed."""

    stopped = False

    def scan(self, *args: Any, **kwargs: Any) -> LogBatch:
        time.sleep(0.3)
        try:
            return super().scan(*args, **kwargs)  # a regex filter over many lines checks the deadline
        except LogQLTimeout:
            self.stopped = True
            raise


def test_line_filtering_in_storage_stops_at_the_query_timeout() -> None:
    q = _SlowStore()
    q.append_columns((("job", "x"),), list(range(1, 1001)), [EVIL] * 1000)
    expr = 'sum(count_over_time({job="x"} |~ "(a+)+b" [1h]))'
    assert LogQLEngine(timeout_s=60).query_instant(q, expr, 10**9).to_loki_data()["result"] == []
    with pytest.raises(LogQLTimeout):
        LogQLEngine(timeout_s=0.1).query_instant(q, expr, 10**9)
    assert q.stopped
