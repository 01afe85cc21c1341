"""Browser test of the API gateway pages: Debian's chromium driven by Playwright against a live server whose
own gateway (a Kong declarative file: key-auth, a rate limit scoped to bob, the prometheus plugin per
consumer) answered real requests from two consumers, plus half an hour of a series-only consumer's Kong
series written in by remote write.

Each page loads in both themes without console errors or failed requests, its charts draw, the sort headers
work from the keyboard, and it is screenshotted into ``test-artifacts/ui/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from tests.conftest import LiveServer, free_port
from tests.gateway.conftest import Upstreams
from tests.ui.browser import NEEDS_CHROMIUM, Browser
from tests.ui.seed import _post, _remote_write, _wait

from pitwall.config import load_settings
from pitwall.traffic.gateway.stats import UPSTREAM_LATENCY_BUCKETS

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180), NEEDS_CHROMIUM]

pytest.importorskip("playwright.sync_api")

# Kong's latency buckets, as the gateway writes them: 3/s within 25 ms, 3.8 within 50, 4.3 within 100, all by 250
LEGACY_BUCKETS = {f"{float(b)}": 3 if b <= 25 else 3.8 if b <= 50 else 4.3 if b <= 100 else 4.6
                  for b in UPSTREAM_LATENCY_BUCKETS} | {"+Inf": 4.6}


def _legacy_series(now_ms: int) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    """Thirty minutes of ``legacy-app`` (a consumer no longer configured): 4 requests/s, 5xx in the last
    ten minutes, a steady trickle of 429s, bandwidth both ways, latency in three buckets."""
    base = {"job": "kong", "consumer": "legacy-app", "service": "orders", "route": "list", "workspace": "default"}
    pts: dict[str, list[tuple[int, float]]] = {}
    acc: dict[str, float] = {}
    for j in range(121):
        t = now_ms - 1_800_000 + j * 15_000
        grow = {"200": 4 * 15, "503": 1.5 * 15 if j > 80 else 0, "429": 0.3 * 15, "ingress": 300 * 15,
                "egress": 2000 * 15, **{le: per_s * 15 for le, per_s in LEGACY_BUCKETS.items()}}
        for k, v in grow.items():
            acc[k] = acc.get(k, 0.0) + v
            pts.setdefault(k, []).append((t, acc[k]))
    out = []
    for code in ("200", "503", "429"):
        out.append(({"__name__": "kong_http_requests_total", **base, "code": code,
                     "source": "kong" if code == "429" else "service"}, pts[code]))
    for d in ("ingress", "egress"):
        out.append(({"__name__": "kong_bandwidth_bytes", **base, "direction": d}, pts[d]))
    for le in LEGACY_BUCKETS:
        out.append(({"__name__": "kong_request_latency_ms_bucket", **base, "le": le}, pts[le]))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    import asyncio
    import threading

    base = tmp_path_factory.mktemp("uigw")
    # the upstream: the gateway tests' echo server, on a loop of its own thread
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    ups = Upstreams()
    port = asyncio.run_coroutine_threadsafe(ups.start("orders"), loop).result(10)
    conf = base / "kong.yaml"
    conf.write_text(yaml.safe_dump({
        "_format_version": "3.0",
        "services": [{"name": "orders", "url": f"http://127.0.0.1:{port}",
                      "routes": [{"name": "list", "paths": ["/orders"]}, {"name": "admin", "paths": ["/admin"]}]}],
        "consumers": [
            {"username": "alice", "keyauth_credentials": [{"key": "alice-secret-key"}], "acls": [{"group": "gold"}]},
            {"username": "bob", "keyauth_credentials": [{"key": "bob-secret-key"}],
             "plugins": [{"name": "rate-limiting", "config": {"year": 3}}]}],
        "plugins": [{"name": "key-auth"},
                    {"name": "prometheus", "config": {"per_consumer": True, "status_code_metrics": True,
                                                      "latency_metrics": True, "bandwidth_metrics": True}}]}))
    gw = f"127.0.0.1:{free_port()}"
    srv = LiveServer(load_settings(data_dir=base / "data", listen="127.0.0.1:0", storage={"fsync": False},
                                   kube={"enabled": False}, gateway={"listen": gw, "declarative_config": conf}))
    srv.start()
    try:
        with httpx.Client(base_url=f"http://{gw}", timeout=10) as g, \
                httpx.Client(base_url=srv.url, timeout=30) as c:
            _post(c, "/api/v1/write", content=_remote_write(_legacy_series(_now_ms())),
                  headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                           "X-Prometheus-Remote-Write-Version": "0.1.0"})
            # every series once, then (after the gateway's flush, every 10 s) the requests the rates count
            assert g.get("/orders/0", headers={"apikey": "alice-secret-key"}).status_code == 200
            assert g.get("/orders/status/500", headers={"apikey": "alice-secret-key"}).status_code == 500
            codes = [g.get("/admin/x", headers={"apikey": "bob-secret-key"}).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            _wait(c, 'kong_http_requests_total{consumer="bob",code="429"}', lambda r: bool(r), timeout=60)
            for i in range(20):
                assert g.get(f"/orders/{i}", headers={"apikey": "alice-secret-key"}).status_code == 200
            assert g.get("/orders/status/500", headers={"apikey": "alice-secret-key"}).status_code == 500
            assert [g.get("/admin/x", headers={"apikey": "bob-secret-key"}).status_code for _ in range(3)] == [429] * 3
            _wait(c, 'kong_http_requests_total{consumer="bob",code="429"}',
                  lambda r: bool(r) and float(r[0]["value"][1]) >= 4, timeout=60)
        yield srv, gw
    finally:
        srv.stop()
        asyncio.run_coroutine_threadsafe(ups.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()  # else the collector finds it open later and another test's setup reports it


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_gateway_pages(chromium: Any, server: tuple[LiveServer, str], theme: str) -> None:
    srv, _gw = server
    web = Browser(chromium, srv.url, theme)
    try:
        page = web.goto("/gateway?from=now-30m&to=now", theme)
        assert page.evaluate("document.documentElement.dataset.theme") == theme
        names = page.locator("table.gw-consumers tbody tr td:first-child a").all_inner_texts()
        assert set(names) == {"alice", "bob", "legacy-app"}
        bob = page.locator('tr[data-consumer="bob"]')
        assert bob.locator('[data-col="err4"]').inner_text() == "100.00%"  # every counted request was a 429...
        assert bob.locator('[data-col="limited"]').inner_text() not in ("0", "—")
        p99 = page.locator('tr[data-route="orders/list"] [data-col="p99"]').inner_text()
        assert p99.endswith("ms") and float(p99[:-2]) <= 250  # a consistent histogram: below the top bucket
        assert "key-auth" in bob.inner_text()
        assert "(series only)" in page.locator('tr[data-consumer="legacy-app"]').inner_text()
        assert "alice-secret-key" not in page.content()
        # keyboard: tab to the 429/s header and sort by it
        header = page.locator("[data-testid=sort-sort-limited]")
        header.focus()
        page.keyboard.press("Enter")
        page.wait_for_url("**sort=-limited**")
        first = page.locator("table.gw-consumers tbody tr").first.get_attribute("data-consumer")
        assert first in ("legacy-app", "bob")
        web.shot(f"gateway-{theme}")
        # a number opens its query in the explorer
        href = page.locator('tr[data-consumer="alice"] [data-col="err5"]').get_attribute("href") or ""
        assert href.startswith("/graph?") and "consumer%3D%22alice%22" in href
        page = web.goto("/gateway/consumers/legacy-app?from=now-30m&to=now", charts=True)
        assert int(page.locator(".pw-chart").first.get_attribute("data-series-count") or 0) >= 2
        web.shot(f"gateway-consumer-legacy-{theme}")
        page = web.goto("/gateway/consumers/bob?from=now-30m&to=now", charts=True)
        assert "rate-limiting" in page.locator("[data-testid=plugins]").inner_text()
        assert "(series only)" not in page.locator("[data-testid=routes]").inner_text()
        assert "<redacted>" in page.locator("[data-testid=credentials]").inner_text()
        assert "bob-secret-key" not in page.content()
        web.shot(f"gateway-consumer-{theme}")
        page.keyboard.press("g")  # the nav shortcut: g then y jumps to the gateway page
        page.keyboard.press("y")
        page.wait_for_url("**/gateway?**")
        assert web.errors == [], web.errors
    finally:
        web.ctx.close()
