"""The SLO pages: view functions over a hand-made ``SLOStatus``, then a whole pitwall (in process) with a
PrometheusServiceLevel, samples and an incident, its pages checked against the budget API.

Data as ``tests/slo/test_live.py``: 1 error in 20 requests for the last hour, so "availability" (90%)
has half its budget left (burn rate 0.5) and "strict" (99.9%) burns at 50 and has spent it (-49).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from tests.incidents.conftest import ROUTING_KEY, incidents_config
from tests.slo.test_live import _psl, _write_samples

from pitwall.config import load_settings
from pitwall.slo import SLOStatus
from pitwall.ui.slo_view import budget_chart, burn_rate_chart, service_incidents, slo_alerts, slo_row

pytestmark = pytest.mark.timeout(90)


def _status(**over: Any) -> SLOStatus:
    base: dict[str, Any] = dict(
        name="shop-availability", service="shop", slo="availability", objective=0.9, error_budget=0.1, period="30d",
        window="rolling", at_ms=1_700_000_000_000, error_ratio_period=0.05, error_ratio_now=0.2,
        burn_rate_period=0.5, burn_rate_now=2.0, budget_remaining=0.5, breaching=False,
        queries={"period_error_ratio": "(errors[30d])\n/\n(total[30d])", "current_error_ratio": "(e[5m])/(t[5m])"},
        source="default/shop-slos")
    return SLOStatus(**{**base, **over})


def test_slo_row_states() -> None:
    r = slo_row(_status())
    assert (r.namespace, r.object, r.id, r.state, r.href) == ("default", "shop-slos", "shop-availability", "burning",
                                                              "/slos/default/shop-availability")
    assert slo_row(_status(burn_rate_now=0.5)).state == "ok"
    assert slo_row(_status(budget_remaining=-49.0, breaching=True)).state == "exhausted"
    assert slo_row(_status(budget_remaining=None, burn_rate_now=None)).state == "no data"


def test_charts_put_the_budget_api_queries_into_its_arithmetic() -> None:
    b = budget_chart(_status())
    assert b.series[0] == ("remaining (from the SLI)", "1 - (\n(errors[30d])\n/\n(total[30d])\n) / 0.1")
    assert b.series[1][1] == ('slo:period_error_budget_remaining:ratio{sloth_id="shop-availability",'
                              'sloth_service="shop",sloth_slo="availability"}')
    q = parse_qsl(urlsplit(b.src).query)
    assert urlsplit(b.src).path == "/ui/api/chart" and ("from", "now-30d") in q and ("to", "now") in q
    assert [v for k, v in q if k == "expr"] == [e for _, e in b.series]
    assert [v for k, v in q if k == "legend"] == [name for name, _ in b.series]
    assert burn_rate_chart(_status()).series[0][1] == "(\n(e[5m])/(t[5m])\n) / 0.1"


def test_slo_alerts_and_incidents() -> None:
    rule = SimpleNamespace(group="sloth-slo-alerts-shop-strict", kind="alerting", name="ShopStrictBurn")
    other = SimpleNamespace(group="sloth-slo-alerts-shop-availability", kind="alerting", name="ShopAvailabilityBurn")
    rec = SimpleNamespace(group="sloth-slo-alerts-shop-strict", kind="recording", name="x")
    a1 = SimpleNamespace(name="ShopStrictBurn", labels={"sloth_id": "shop-strict"})
    a2 = SimpleNamespace(name="ShopStrictBurn", labels={"sloth_id": "other-strict"})
    a3 = SimpleNamespace(name="Unrelated", labels={})
    rules, alerts = slo_alerts("shop-strict", [rule, other, rec], [a1, a2, a3])
    assert rules == [rule] and alerts == [a1]
    incs = [{"id": "Q1", "service": {"summary": "web"}, "pitwall": {"service": "shop"},
             "created_at": "2026-12-06T10:00:00Z", "resolved_at": "2026-12-06T10:30:00Z"},
            {"id": "Q2", "service": {"summary": "shop"}, "created_at": "2026-11-01T10:00:00Z", "resolved_at": None},
            {"id": "Q3", "service": {"summary": "web"}, "created_at": "2026-12-06T10:00:00Z"},
            {"id": "Q4", "service": {"summary": "shop"}, "created_at": "2026-10-01T10:00:00Z",
             "resolved_at": "2026-10-02T10:00:00Z"}]
    start, end = 1_762_400_000_000, 1_765_100_000_000  # 2025-11-06 .. 2025-12-07: shift to 2026 below
    year = 365 * 86_400_000
    assert [i["id"] for i in service_incidents(incs, "shop", start + year, end + year)] == ["Q1", "Q2"]


@pytest.fixture
async def pw(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    from pitwall.server import create_app

    settings = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                             incidents=incidents_config(), **{"global": {"evaluation_interval": "1s"}})
    app = create_app(settings)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c):
        c.app = app  # type: ignore[attr-defined]
        yield c


async def _until(c: httpx.AsyncClient, path: str, ok: Any, tries: int = 300) -> str:
    text = ""
    for _ in range(tries):
        r = await c.get(path)
        text = r.text
        if r.status_code == 200 and ok(text):
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path}: {text[-2000:]}")


def _row(page: str, slo_id: str) -> str:
    return page.split(f'data-slo-id="{slo_id}"')[1].split("</tr>")[0]


@pytest.mark.slow
async def test_slo_pages_over_a_live_server(pw: httpx.AsyncClient) -> None:
    c = pw
    r = await c.get("/slos")
    assert r.status_code == 200 and "No SLOs." in r.text
    await _write_samples(c, int(time.time() * 1000))
    await c.app.state.components.control_plane.kube.api.client.create(_psl())  # type: ignore[attr-defined]
    r = await c.post("/v2/enqueue", json={"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "s1",
                                          "payload": {"summary": "shop errors", "source": "prometheus",
                                                      "severity": "error", "custom_details": {"service": "shop"}}})
    assert r.status_code == 202

    page = await _until(c, "/slos", lambda t: 'data-slo-id="shop-strict"' in t)
    a, s = _row(page, "shop-availability"), _row(page, "shop-strict")
    assert ">90%<" in a and "30d rolling" in a and ">50.00%<" in a and ">ok<" in a  # remaining 0.5, burn 0.5
    assert ">99.9%<" in s and ">-4900.00%<" in s and ">50<" in s and ">exhausted<" in s
    api = (await c.get("/api/slo/v1/slos/shop-availability")).json()
    assert api["budget_remaining"] == pytest.approx(0.5, rel=1e-9)

    page = await _until(c, "/slos/default/shop-strict",
                        lambda t: "ShopStrictBurn" in t.split('data-testid="slo-rules"')[1].split("</table>")[0])
    assert "PrometheusServiceLevel default/shop-slos" in page and "budget remaining = 1 - 50 = -49" in page
    incidents = page.split('data-testid="slo-incidents"')[1].split("</table>")[0]
    assert "shop errors" in incidents and "/incidents/Q0000001" in incidents
    # The incident, open for seconds, is measured over its last minute: 6 of the hour's 7,200 requests bad
    # against a 0.1% budget of them: 6 / 7.2 = 83% of the strict SLO's budget, 0.83% of the 90% one's.
    cell = incidents.split('data-testid="incident-budget"')[1].split("</td>")[0]
    assert float(cell.rsplit(">", 1)[1].rstrip("%")) == pytest.approx(83.3, rel=0.1)
    assert "bad events in the window (1m)" in cell
    now = time.time()
    api = (await c.get("/api/slo/v1/slos/shop-availability/consumed",
                       params={"start": now - 60, "end": now})).json()
    assert api["consumed"] == pytest.approx(6 / 720, rel=0.1), api
    assert api["queries"]["total_rate_period"].count("[30d]") == 1
    bad = await c.get("/api/slo/v1/slos/shop-availability/consumed", params={"start": now, "end": now - 60})
    assert bad.status_code == 400 and "end must be after start" in bad.text
    # the postmortem draft's impact names what each SLO of the service spent
    draft = (await c.get("/pagerduty/incidents/Q0000001/postmortem")).text
    impact = draft.split("## Impact")[1].split("## Timeline")[0]
    strict = next(line for line in impact.splitlines() if line.startswith("- SLO shop-strict: "))
    assert float(strict.split(": ")[1].split("%")[0]) == pytest.approx(83.3, rel=0.1), impact
    assert "- SLO shop-availability: 0.8" in impact

    # The charts: the budget chart's computed series is the budget API's remaining budget at "now".
    src = page.split('data-testid="slo-chart"')[0].rsplit('data-src="', 1)[1].split('"')[0]
    r = await c.get(src.replace("&amp;", "&") + "&points=50")
    body = r.json()
    assert r.status_code == 200 and "error" not in body, body
    page_a = await _until(c, "/slos/default/shop-availability", lambda t: True)
    src_a = page_a.split('data-testid="slo-chart"')[0].rsplit('data-src="', 1)[1].split('"')[0]
    body = (await c.get(src_a.replace("&amp;", "&") + "&points=4000")).json()  # 15m steps: the data is an hour old
    assert "error" not in body, body
    names = [s["name"] for s in body["series"]]
    assert "remaining (from the SLI)" in names, body["series"]
    computed = body["series"][names.index("remaining (from the SLI)")]
    last = [v for v in computed["values"] if v is not None][-1]
    assert last == pytest.approx(0.5, rel=1e-6)

    # Calendar windows (the budget API's ?calendar=): the list, its links and the page keep the choice.
    week = await c.get("/slos?calendar=week")
    assert week.status_code == 200 and "calendar-week" in _row(week.text, "shop-availability")
    assert 'href="/slos/default/shop-availability?calendar=week"' in week.text
    assert "<strong>calendar week</strong>" in week.text and 'href="/slos?calendar=month"' in week.text
    month = await c.get("/slos/default/shop-availability?calendar=month")
    summary = month.text.split('data-testid="slo-summary"')[1].split("</table>")[0]
    assert month.status_code == 200 and "(calendar-month)" in summary and "<strong>calendar month</strong>" in summary
    assert 'href="/slos/default/shop-availability"' in summary  # back to the rolling period
    bad = await c.get("/slos?calendar=year")
    assert bad.status_code == 400 and "calendar: must be" in bad.text

    r = await c.get("/slos/other/shop-strict")
    assert r.status_code == 404 and "not found in namespace" in r.text
    r = await c.get("/slos/default/nope")
    assert r.status_code == 404 and "not found" in r.text
