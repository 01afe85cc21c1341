"""pitwall end to end: a PrometheusServiceLevel applied through the kube client, samples in the metric store,
the generated rules run by the rule manager, and the budget API's numbers checked by hand.

Data: for the last hour, every 10 s, ``http_requests_total{code="500"}`` grows by 1 and
``{code="200"}`` by 19: 1 error in 20 requests, an error ratio of 0.05 over any window.

SLO "availability", objective 90%:
    error budget      = 1 - 0.9  = 0.1
    period burn rate  = 0.05 / 0.1 = 0.5
    budget remaining  = 1 - 0.5  = 0.5
    burn rate now     = 0.05 / 0.1 = 0.5
SLO "strict", objective 99.9%: budget 0.001, burn rate 50 > 14.4: the page alert fires; remaining 1 - 50 = -49.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.config import load_settings
from pitwall.core.labels import labels_from_dict
from pitwall.metrics import SampleBatch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

ERRORS = 'sum(rate(http_requests_total{job="shop",code=~"5.."}[{{.window}}]))'
TOTAL = 'sum(rate(http_requests_total{job="shop"}[{{.window}}]))'


def _psl() -> dict[str, Any]:
    def slo(name: str, objective: float) -> dict[str, Any]:
        return {"name": name, "objective": objective,
                "sli": {"events": {"errorQuery": ERRORS, "totalQuery": TOTAL}},
                "alerting": {"name": f"Shop{name.title()}Burn", "pageAlert": {"labels": {"severity": "page"}},
                             "ticketAlert": {"disable": True}}}

    return {"apiVersion": "sloth.slok.dev/v1", "kind": "PrometheusServiceLevel",
            "metadata": {"name": "shop-slos", "namespace": "default"},
            "spec": {"service": "shop", "labels": {"team": "web"},
                     "slos": [slo("availability", 90), slo("strict", 99.9)]}}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    from pitwall.server import create_app

    settings = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                             **{"global": {"evaluation_interval": "1s"}})
    app = create_app(settings)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c):
        c.app = app  # type: ignore[attr-defined]
        yield c


async def _write_samples(c: httpx.AsyncClient, now_ms: int) -> None:
    store = c.app.state.components.metrics.store  # type: ignore[attr-defined]
    rows = []
    start = now_ms - 3_600_000
    for i, ts in enumerate(range(start, now_ms + 1, 10_000)):
        rows.append((labels_from_dict({"__name__": "http_requests_total", "job": "shop", "code": "500"}), ts,
                     float(i)))
        rows.append((labels_from_dict({"__name__": "http_requests_total", "job": "shop", "code": "200"}), ts,
                     float(19 * i)))
    await store.append("default", SampleBatch.from_rows(rows))


async def _until(c: httpx.AsyncClient, path: str, ok: Any, tries: int = 300) -> Any:
    body = None
    for _ in range(tries):
        r = await c.get(path)
        body = r.json()
        if r.status_code == 200 and ok(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path}: {body}")


async def test_slo_object_to_rules_to_budget(server: httpx.AsyncClient) -> None:
    c = server
    await _write_samples(c, int(time.time() * 1000))
    kube = c.app.state.components.control_plane.kube.api.client  # type: ignore[attr-defined]
    await kube.create(_psl())

    # The rule manager runs the generated groups (source slo:default/shop-slos).
    rules = await _until(c, "/api/v1/rules", lambda b: sum(
        g["file"] == "slo:default/shop-slos" for g in b["data"]["groups"]) == 6)
    names = {g["name"] for g in rules["data"]["groups"] if g["file"] == "slo:default/shop-slos"}
    assert "sloth-slo-alerts-shop-strict" in names and "sloth-slo-sli-recordings-shop-availability" in names

    # Hand arithmetic (module docstring), from the SLI queries.
    a = (await c.get("/api/slo/v1/slos/shop-availability")).json()
    assert a["objective"] == pytest.approx(0.9) and a["error_budget"] == pytest.approx(0.1)
    assert a["period"] == "30d" and a["window"] == "rolling" and a["source"] == "default/shop-slos"
    assert a["error_ratio_period"] == pytest.approx(0.05, rel=1e-9)
    assert a["burn_rate_period"] == pytest.approx(0.5, rel=1e-9)
    assert a["budget_remaining"] == pytest.approx(0.5, rel=1e-9)
    assert a["burn_rate_now"] == pytest.approx(0.5, rel=1e-9)
    assert a["breaching"] is False
    assert a["arithmetic"][2] == "period burn rate = 0.05 / 0.1 = 0.5"
    assert a["arithmetic"][3].startswith("budget remaining = 1 - 0.5 = 0.5 (50% of the budget left)")

    # The recorded series, once the rule manager has evaluated the SLI and metadata groups, agree.
    rec = await _until(c, "/api/slo/v1/slos/shop-availability", lambda b: None not in b["recorded"].values())
    assert rec["recorded"]["slo:current_burn_rate:ratio"] == pytest.approx(0.5, rel=1e-9)
    assert rec["recorded"]["slo:period_burn_rate:ratio"] == pytest.approx(0.5, rel=1e-9)
    assert rec["recorded"]["slo:period_error_budget_remaining:ratio"] == pytest.approx(0.5, rel=1e-9)

    s = (await c.get("/api/slo/v1/slos/shop-strict")).json()
    assert s["burn_rate_period"] == pytest.approx(50, rel=1e-9)
    assert s["budget_remaining"] == pytest.approx(-49, rel=1e-9) and s["breaching"] is True
    # 50 > 14.4 over 5m and 1h: the page alert fires.
    alerts = await _until(c, "/api/v1/alerts", lambda b: any(
        x["labels"].get("alertname") == "ShopStrictBurn" and x["state"] == "firing" for x in b["data"]["alerts"]))
    fired = next(x for x in alerts["data"]["alerts"] if x["labels"]["alertname"] == "ShopStrictBurn")
    assert fired["labels"]["sloth_severity"] == "page" and fired["labels"]["sloth_slo"] == "strict"
    assert not any(x["labels"].get("alertname") == "ShopAvailabilityBurn" for x in alerts["data"]["alerts"])

    month = (await c.get("/api/slo/v1/slos/shop-availability", params={"calendar": "month"})).json()
    assert month["window"] == "calendar-month" and month["burn_rate_period"] == pytest.approx(0.5, rel=1e-9)
    bad = await c.get("/api/slo/v1/slos/shop-availability", params={"calendar": "year"})
    assert bad.status_code == 400 and "calendar" in bad.text

    listed = (await c.get("/api/slo/v1/slos")).json()["slos"]
    assert [x["name"] for x in listed] == ["shop-availability", "shop-strict"]
    missing = await c.get("/api/slo/v1/slos/nope")
    assert missing.status_code == 404 and "nope" in missing.text

    # The in-process gate other capabilities use.
    status = await c.app.state.components.control_plane.slo.slo_status("shop-strict")  # type: ignore[attr-defined]
    assert status.breaching is True

    # Deleting the object removes its groups.
    await kube.delete("sloth.slok.dev/v1", "PrometheusServiceLevel", "shop-slos", "default")
    await _until(c, "/api/v1/rules", lambda b: not any(
        g["file"] == "slo:default/shop-slos" for g in b["data"]["groups"]))
