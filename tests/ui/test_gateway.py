"""The API gateway pages over a real metric store fed by the real gateway: two consumers with key-auth (one
rate-limited by a plugin scoped to it) send requests through ``GatewayServer`` to an echo upstream, the
prometheus plugin's ``GatewayStats`` flushes into a ``MetricStore`` on a clock the test sets (a sample every
10 s over a 10-minute range), and the pages' numbers are checked against the requests made."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from tests.gateway.conftest import Upstreams

from pitwall.metrics import Engine, local_instant, local_range
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore
from pitwall.traffic.gateway.declarative import KongState, load_declarative
from pitwall.traffic.gateway.plugins.ratelimit import COUNTERS
from pitwall.traffic.gateway.proxy import GatewayServer
from pitwall.traffic.gateway.runtime import compile_state
from pitwall.traffic.gateway.stats import GatewayStats
from pitwall.ui.gateway_view import Stats, consumer_config, consumer_stats, redact, route_stats, sort_rows
from pitwall.ui.queries import MetricsView
from pitwall.ui.routes import ui_router
from pitwall.ui.settings import UISettings
from pitwall.ui.timerange import TimeRange
from pitwall.ui.web import UIDeps

pytestmark = pytest.mark.timeout(60)

T_END = 1_780_000_000_000  # the pages' range: the ten minutes before this (unix ms)
SPAN_S = 600
# Samples from T_START + 5 s every 10 s to T_END - 5 s: rate() extrapolates over the 590 s they span to the
# 600 s window, so a counter that grew by N gives N / 590 per second.
SAMPLED_S = 590
BODY = b"x" * 1000


def kong_config(port: int) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "services": [{"name": "orders", "url": f"http://127.0.0.1:{port}", "routes": [
            {"name": "list", "paths": ["/orders"]}, {"name": "admin", "paths": ["/admin"]},
            {"name": "unused", "paths": ["/unused"]}]}],
        "consumers": [
            {"username": "alice", "custom_id": "a-1", "tags": ["team-a"],
             "keyauth_credentials": [{"key": "alice-key"}],
             "basicauth_credentials": [{"username": "alice", "password": "s3cret-pw"}],
             "acls": [{"group": "gold"}, {"group": "beta"}]},
            {"username": "bob", "keyauth_credentials": [{"key": "bob-key"}],
             "plugins": [{"name": "rate-limiting", "config": {"year": 3}}]},
            {"username": "carol", "keyauth_credentials": [{"key": "carol-key"}]},
            {"username": "dave", "keyauth_credentials": [{"key": "dave-key"}]},
        ],
        "plugins": [{"name": "key-auth"},
                    {"name": "prometheus", "config": {"per_consumer": True, "status_code_metrics": True,
                                                      "latency_metrics": True, "bandwidth_metrics": True}}],
    }


@dataclass
class Seeded:
    mv: MetricsView
    gw: Any  # a GatewaySource: the configuration in force (dave removed by a later reload)


async def _round(c: httpx.AsyncClient, n_ok: int, n_limited: int, n_dave: int) -> None:
    """alice: ``n_ok`` POSTs of 1000 bytes (200), then one 500 and one 404 per ``n_ok``-round; bob: 429s
    once past his 3 a year; dave: plain GETs."""
    for _ in range(n_ok):
        assert (await c.post("/orders/x", content=BODY, headers={"apikey": "alice-key"})).status_code == 200
    for path, code in (("/orders/status/500", 500), ("/orders/status/404", 404)):
        assert (await c.get(path, headers={"apikey": "alice-key"})).status_code == code
    for _ in range(n_limited):
        await c.get("/admin/x", headers={"apikey": "bob-key"})
    for _ in range(n_dave):
        assert (await c.get("/orders/d", headers={"apikey": "dave-key"})).status_code == 200


@pytest.fixture
async def seeded(tmp_path: Path) -> AsyncIterator[Seeded]:
    path = tmp_path
    store = MetricStore(TelemetryDB(path / "t.duckdb"), path / "wal", fsync=False, block_ms=60_000)
    await store.start()
    now = [0.0]
    stats = GatewayStats(store, clock=lambda: now[0])
    ups = Upstreams()
    COUNTERS.counts.clear()
    port = await ups.start("u")
    doc = kong_config(port)
    gw = GatewayServer(compile_state(load_declarative(doc), stats))
    await gw.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}", timeout=10) as c:
            # every series exists from the first sample on: bob's 3 admitted and his first 429
            await _round(c, 1, 4, 1)
            start_s = (T_END / 1000) - SPAN_S
            for k in range(SPAN_S // 10):
                now[0] = start_s + 5 + 10 * k
                await stats.flush()
                if k == 30:  # the requests the numbers count: alice 10 + 1 + 1, bob 5 refused, dave 2
                    await _round(c, 10, 5, 2)
        state = load_declarative(doc)
        in_force = KongState(services=state.services, routes=state.routes, plugins=state.plugins,
                             consumers=[x for x in state.consumers if x.get("username") != "dave"])
        engine = Engine()
        yield Seeded(MetricsView(local_instant(engine, store), local_range(engine, store), store.querier),
                     SimpleNamespace(state=in_force))
    finally:
        await gw.stop()
        await ups.close()
        await store.stop()
        COUNTERS.counts.clear()


def _tr() -> TimeRange:
    return TimeRange.parse(str(T_END - SPAN_S * 1000), str(T_END), None)


def _by_name(rows: list[Stats]) -> dict[str, Stats]:
    return {r.name: r for r in rows}


async def test_consumer_numbers_follow_the_requests(seeded: Seeded) -> None:
    rows = _by_name(consumer_stats(seeded.mv, _tr(), seeded.gw))
    assert set(rows) == {"alice", "bob", "carol", "dave"}
    a, b, c, d = rows["alice"], rows["bob"], rows["carol"], rows["dave"]
    assert (a.configured, a.groups, a.auth) == (True, ["beta", "gold"], ["basic-auth", "key-auth"])
    assert a.rps == pytest.approx(12 / SAMPLED_S)
    assert (a.err5, a.err4) == (pytest.approx(1 / 12), pytest.approx(1 / 12))
    assert a.limited == 0.0
    assert a.bw_in == pytest.approx(10 * len(BODY) / SAMPLED_S)  # the POST bodies; the GETs have none
    assert a.bw_out is not None and a.bw_out > 0
    assert a.p50 is not None and a.p99 is not None and 0 < a.p50 <= a.p99
    # bob: every counted request was refused by his rate limit (a 429 the gateway answered)
    assert b.rps == pytest.approx(5 / SAMPLED_S) and b.limited == pytest.approx(5 / SAMPLED_S)
    assert (b.err5, b.err4) == (0.0, pytest.approx(1.0))
    # carol is configured and silent; dave was removed from the configuration but is in the series
    assert (c.configured, c.rps, c.err5, c.p99) == (True, None, None, None)
    assert (d.configured, d.rps, d.auth) == (False, pytest.approx(2 / SAMPLED_S), [])
    # each number links to the explorer with the query of its row
    q = parse_qs(urlparse(b.links["limited"]).query)
    assert q["expr"] == ['sum(rate(kong_http_requests_total{job="kong",consumer="bob",code="429",source="kong"}'
                         '[600s]))']
    assert q["from"] == [str(T_END - SPAN_S * 1000)] and q["to"] == [str(T_END)]
    one = seeded.mv.vector(q["expr"][0], T_END)
    assert len(one) == 1 and one[0][1] == pytest.approx(b.limited)


async def test_route_numbers_and_one_consumers_routes(seeded: Seeded) -> None:
    rows = _by_name(route_stats(seeded.mv, _tr(), seeded.gw))
    assert set(rows) == {"orders/list", "orders/admin", "orders/unused"}
    lst, adm = rows["orders/list"], rows["orders/admin"]
    assert lst.rps == pytest.approx(14 / SAMPLED_S)  # alice's 12 and dave's 2
    assert lst.err5 == pytest.approx(1 / 14) and adm.limited == pytest.approx(5 / SAMPLED_S)
    assert rows["orders/unused"].rps is None
    mine = _by_name(route_stats(seeded.mv, _tr(), seeded.gw, consumer="alice"))
    assert set(mine) == {"orders/list"} and mine["orders/list"].rps == pytest.approx(12 / SAMPLED_S)
    assert mine["orders/list"].configured


async def test_sorting_puts_absent_numbers_last(seeded: Seeded) -> None:
    rows = consumer_stats(seeded.mv, _tr(), seeded.gw)
    assert [r.name for r in sort_rows(rows, "rps", True)] == ["alice", "bob", "dave", "carol"]
    assert [r.name for r in sort_rows(rows, "rps", False)] == ["dave", "bob", "alice", "carol"]
    assert [r.name for r in sort_rows(rows, "limited", True)] == ["bob", "alice", "dave", "carol"]  # ties by name
    assert [r.name for r in sort_rows(rows, "nonsense", False)] == ["alice", "bob", "carol", "dave"]


def test_redaction_hides_every_secret() -> None:
    out = redact({"key": "k", "password": "p", "nested": {"secret": "s", "api_token": "t", "n": 1},
                  "list": [{"redis_password": "r"}], "username": "u", "empty_key": "", "ttl": None})
    assert out == {"key": "<redacted>", "password": "<redacted>",
                   "nested": {"secret": "<redacted>", "api_token": "<redacted>", "n": 1},
                   "list": [{"redis_password": "<redacted>"}], "username": "u", "empty_key": ""}


async def test_consumer_config_scoped_plugins_and_no_credentials(seeded: Seeded) -> None:
    bob = consumer_config(seeded.gw, "bob")
    assert bob is not None and [p["name"] for p in bob.plugins] == ["rate-limiting"]
    assert bob.plugins[0]["config"]["year"] == 3 and bob.plugins[0]["scope"] == "consumer"
    alice = consumer_config(seeded.gw, "alice")
    assert alice is not None and alice.groups == ["beta", "gold"] and alice.custom_id == "a-1"
    assert {c["plugin"] for c in alice.credentials} == {"key-auth", "basic-auth"}
    assert "alice-key" not in repr(alice) and "s3cret-pw" not in repr(alice)
    assert consumer_config(seeded.gw, "dave") is None and consumer_config(None, "alice") is None


def _client(seeded: Seeded, gw: Any) -> httpx.AsyncClient:
    from fastapi import FastAPI

    from pitwall.metrics import TargetsSnapshot

    deps = UIDeps(settings=UISettings(), metrics=seeded.mv, targets=lambda: TargetsSnapshot([], [], {}),
                  traces=None, logs=None, alerts=None, dashboards=Any, gateway=gw)  # type: ignore[arg-type]
    app = FastAPI()
    app.include_router(ui_router(deps))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


RANGE = f"from={T_END - SPAN_S * 1000}&to={T_END}"


def _cell(html: str, row_attr: str, name: str, col: str) -> str:
    row = re.search(rf'<tr {row_attr}="{re.escape(name)}">(.*?)</tr>', html, re.S)
    assert row, f"no row {name}"
    m = re.search(rf'<a href="([^"]*)" data-col="{col}">([^<]*)</a>', row.group(1))
    assert m, f"no {col} in {name}"
    return unescape(m.group(2))


async def test_list_page(seeded: Seeded) -> None:
    async with _client(seeded, seeded.gw) as c:
        r = await c.get(f"/gateway?{RANGE}&sort=-limited")
    assert r.status_code == 200
    html = r.text
    assert re.search(r'<a href="/gateway\?[^"]*" data-key="y" aria-current="page">API gateway</a>', html)  # nav
    names = re.findall(r'<tr data-consumer="([^"]+)">', html)
    assert names == ["bob", "alice", "dave", "carol"]  # by 429/s descending, absent last
    assert _cell(html, "data-consumer", "alice", "err5") == f"{100 / 12:.2f}%"
    assert _cell(html, "data-consumer", "bob", "err4") == "100.00%"
    assert _cell(html, "data-consumer", "bob", "limited") == f"{5 / SAMPLED_S:.3g}"
    assert _cell(html, "data-consumer", "carol", "rps") == "—"
    assert "(series only)" in html.split('data-consumer="dave"')[1].split("</tr>")[0]
    assert re.findall(r'<tr data-route="([^"]+)">', html)[:2] == ["orders/list", "orders/admin"]
    assert 'aria-sort="descending"' in html and "alice-key" not in html


async def test_consumer_page(seeded: Seeded) -> None:
    async with _client(seeded, seeded.gw) as c:
        r = await c.get(f"/gateway/consumers/alice?{RANGE}")
        missing = await c.get(f"/gateway/consumers/nobody?{RANGE}")
        long = await c.get(f"/gateway/consumers/{'x' * 300}")
        dave = await c.get(f"/gateway/consumers/dave?{RANGE}")
        # a name that would break out of the PromQL string is quoted: no error, just nobody
        odd = await c.get('/gateway/consumers/x"}) or vector(1)', params={"from": "now-1h"})
        bad_range = await c.get("/gateway?from=yesterday&sort=nonsense")
        chart = await c.get(re.findall(r'data-src="([^"]+)"', r.text)[0].replace("&amp;", "&"))
    assert r.status_code == 200
    html = r.text
    for secret in ("alice-key", "s3cret-pw"):
        assert secret not in html
    assert "&lt;redacted&gt;" in html and "gold" in html and "a-1" in html
    assert html.count('class="pw-chart"') == 4
    assert re.findall(r'<tr data-route="([^"]+)">', html) == ["orders/list"]
    assert (missing.status_code, long.status_code, dave.status_code) == (404, 400, 200)
    assert "seen only in the series" in dave.text
    assert odd.status_code == 404 and "neither configured nor seen" in odd.text
    assert bad_range.status_code == 200 and "invalid time" in bad_range.text
    series = chart.json()["series"]  # requests by code class: 2xx, 4xx and 5xx drawn
    assert {s["name"] for s in series} >= {"2xx", "4xx", "5xx"}
