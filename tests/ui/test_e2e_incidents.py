"""Browser tests of the incidents and SLO pages: Debian's chromium driven by Playwright against a live
pitwall seeded through its real APIs (remote write, the Kubernetes API, the PagerDuty Events and REST
APIs). Every page loads without console errors or failed requests in both themes and is screenshotted
into ``test-artifacts/ui/``; acknowledging, adding a note and the postmortem draft work by keyboard.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.conftest import LiveServer
from tests.incidents.conftest import ROUTING_KEY, incidents_config
from tests.slo.test_live import _psl
from tests.ui.browser import NEEDS_CHROMIUM, Browser
from tests.ui.seed import _remote_write

from pitwall.config import load_settings

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(180),
    NEEDS_CHROMIUM,
]

pytest.importorskip("playwright.sync_api")


def _seed(url: str) -> None:
    """Three hours of shop traffic (5% errors, 15% in the last 40 minutes), the shop SLOs, a deploy and an
    incident with a note."""
    now_ms = int(time.time() * 1000)
    start = now_ms - 3 * 3_600_000
    ok, err, ok_pts, err_pts = 0.0, 0.0, [], []
    for ts in range(start, now_ms + 1, 30_000):
        late = ts > now_ms - 40 * 60_000
        ok, err = ok + (17 if late else 19), err + (3 if late else 1)
        ok_pts.append((ts, ok))
        err_pts.append((ts, err))
    body = _remote_write([({"__name__": "http_requests_total", "job": "shop", "code": "200"}, ok_pts),
                          ({"__name__": "http_requests_total", "job": "shop", "code": "500"}, err_pts)])
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/api/v1/write", content=body, headers={
            "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        assert r.status_code < 300, r.text
        r = c.post("/apis/sloth.slok.dev/v1/namespaces/default/prometheusservicelevels", json=_psl())
        assert r.status_code == 201, r.text
        r = c.post("/v2/change/enqueue", json={"routing_key": ROUTING_KEY, "payload": {
            "summary": "deploy shop v42", "source": "ci"}})
        assert r.status_code == 202, r.text
        r = c.post("/v2/enqueue", json={"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "shop-5xx",
                                        "payload": {"summary": "shop 5xx above 10%", "source": "prometheus",
                                                    "severity": "critical", "custom_details": {"service": "shop"}}})
        assert r.status_code == 202, r.text
        r = c.post("/pagerduty/incidents/Q0000001/notes", headers={"From": "carol@example.com"},
                   json={"note": {"content": "errors began with the v42 deploy"}})
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the rule manager runs the generated groups
            groups = c.get("/api/v1/rules").json()["data"]["groups"]
            if sum(g["file"] == "slo:default/shop-slos" for g in groups) == 6:
                return
            time.sleep(0.2)
        raise AssertionError("the SLO rule groups were not loaded")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("uiinc")
    srv = LiveServer(load_settings(data_dir=base / "data", listen="127.0.0.1:0", storage={"fsync": False},
                                   incidents=incidents_config(), **{"global": {"evaluation_interval": "1s"}}))
    srv.start()
    try:
        _seed(srv.url)
        yield srv.url
    finally:
        srv.stop()


PAGES = [
    ("incidents", "/incidents"),
    ("incident", "/incidents/Q0000001?postmortem=1"),
    ("slos", "/slos"),
    ("slo", "/slos/default/shop-availability?from=now-3h"),
]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(("name", "path"), PAGES, ids=[n for n, _ in PAGES])
def test_pages_load_clean_in_both_themes(chromium: Any, server: str, name: str, path: str, scheme: str) -> None:
    w = Browser(chromium, server, scheme, height=1000)
    try:
        page = w.goto(path)
        assert page.locator("nav a[aria-current=page]").count() == 1
        if name == "incidents":
            assert page.locator("[data-incident-id=Q0000001]").is_visible()
            assert "Web on-call" in page.locator("[data-testid=oncall]").inner_text()
        elif name == "incident":
            assert "deploy shop v42" in page.locator("[data-testid=timeline]").inner_text()
            assert "# Postmortem: [#1] shop 5xx above 10%" in page.locator("[data-testid=postmortem-text]").inner_text()
        elif name == "slos":
            assert page.locator("[data-slo-id=shop-strict] [data-testid=slo-state]").inner_text() == "exhausted"
        else:
            page.wait_for_function("document.querySelectorAll('.pw-chart[data-rendered]').length === 2")
            assert page.locator(".pw-chart .u-legend").count() == 2
        w.shot(f"{name}-{scheme}")
        assert w.errors == []
    finally:
        w.ctx.close()


def test_acknowledge_note_and_postmortem_by_keyboard(chromium: Any, server: str) -> None:
    w = Browser(chromium, server, "light", height=1000)
    try:
        page = w.goto("/incidents")
        page.locator("[data-incident-id=Q0000001] a").first.focus()
        page.keyboard.press("Enter")
        page.wait_for_url("**/incidents/Q0000001")
        page.select_option("form[action$='/acknowledge'] select", label="Bob")
        page.locator("[data-testid=acknowledge]").focus()
        page.keyboard.press("Enter")
        page.wait_for_url("**/incidents/Q0000001?done=acknowledge*")
        assert page.locator("[data-testid=incident-summary] [data-testid=status]").inner_text() == "acknowledged"
        note = page.locator("[data-testid=note-form] textarea")
        note.fill("rolled back to v41")
        page.select_option("[data-testid=note-form] select", label="Alice")
        page.locator("[data-testid=note-form] button").focus()
        page.keyboard.press("Enter")
        page.wait_for_url("**/incidents/Q0000001?done=notes*")
        assert "note by Alice: rolled back to v41" in page.locator("[data-testid=timeline]").inner_text()
        page.locator("[data-testid=postmortem]").focus()
        page.keyboard.press("Enter")
        page.wait_for_selector("[data-testid=postmortem-text]")
        text = page.locator("[data-testid=postmortem-text]").inner_text()
        with httpx.Client(base_url=server) as c:
            rest = c.get("/pagerduty/incidents/Q0000001/postmortem").text

        def steady(md: str) -> list[str]:  # "Duration: ... so far" and an open incident's budget use move on
            return [ln for ln in md.strip().splitlines() if not ln.startswith(("- Duration:", "- SLO "))]

        assert steady(text) == steady(rest) and "note by Alice: rolled back to v41" in text
        assert "- SLO shop-availability: " in text  # the impact names the service's SLO and its budget spent
        assert w.errors == []
    finally:
        w.ctx.close()
