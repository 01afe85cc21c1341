"""The resilience report: golden signals before, during and after an experiment's window, the time to recover
and the SLO budget spent, computed with the real PromQL engine over the mesh's Istio series; the API route and
the experiment page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from pitwall.chaos import ChaosConsole, ResilienceReporter, chaos_mesh_crds
from pitwall.chaos.api import chaos_router
from pitwall.chaos.events import ChaosReport
from pitwall.kube import KubeAPI
from pitwall.metrics.memory import MemoryQuerier
from pitwall.metrics.promql import Engine, QueryResult
from tests.kube_fixture import started_kube
from tests.ui.app import ui_client, ui_deps

pytestmark = pytest.mark.timeout(60)

T = 1_700_000_000  # the series' start (s)
APPLY, RECOVER, HEALED = T + 600, T + 900, T + 960  # the target keeps failing 60 s after the fault is reverted
API = "chaos-mesh.org/v1alpha1"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _querier() -> MemoryQuerier:
    """shop/web's inbound requests: 10/s, half of them slow 503s from APPLY to HEALED."""
    q = MemoryQuerier()
    base = (("destination_app", "web"), ("destination_workload_namespace", "shop"), ("reporter", "destination"))
    ok = bad = 0.0
    for t in range(T, T + 1200, 5):
        failing = APPLY <= t < HEALED
        ok += 25 if failing else 50
        bad += 25 if failing else 0
        for name, extra, v in (("istio_requests_total", (("response_code", "200"),), ok),
                               ("istio_requests_total", (("response_code", "503"),), bad),
                               ("istio_request_duration_milliseconds_bucket", (("le", "10"),), ok),
                               ("istio_request_duration_milliseconds_bucket", (("le", "1000"),), ok + bad),
                               ("istio_request_duration_milliseconds_bucket", (("le", "+Inf"),), ok + bad)):
            q.add(tuple(sorted((("__name__", name), *base, *extra))), t * 1000, v)
    return q


def _range(q: MemoryQuerier) -> Any:
    engine = Engine()

    def query(expr: str, start_ms: int, end_ms: int, step_ms: int, tenant: str = "default") -> QueryResult:
        return engine.range(q, expr, start_ms, end_ms, step_ms)

    return query


def network_chaos(name: str = "delay-web", *, recovered: bool = True, acted: bool = True) -> dict[str, Any]:
    events = [{"type": "Succeeded", "operation": "Apply", "timestamp": _iso(APPLY)}] if acted else []
    if recovered:
        events.append({"type": "Succeeded", "operation": "Recover", "timestamp": _iso(RECOVER)})
    return {"apiVersion": API, "kind": "NetworkChaos",
            "metadata": {"name": name, "namespace": "shop", "creationTimestamp": _iso(APPLY - 1)},
            "spec": {"action": "delay", "mode": "all", "selector": {"labelSelectors": {"app": "web"}},
                     "delay": {"latency": "1s"}, "duration": "5m"},
            "status": {"experiment": {"desiredPhase": "Stop" if recovered else "Run", "containerRecords": [
                {"id": "shop/web-1", "selectorKey": ".", "phase": "Not Injected" if recovered else "Injected",
                 "events": events, "injectedCount": 1, "recoveredCount": int(recovered)}]}}}


class Budgets:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    async def __call__(self, service: str, start_ms: int, end_ms: int) -> list[Any]:
        self.calls.append((service, start_ms, end_ms))
        return [SimpleNamespace(name="web-availability", consumed=0.25)]


async def test_signals_recovery_and_budget_of_a_finished_experiment() -> None:
    budgets = Budgets()
    report = await ResilienceReporter(_range(_querier()), budgets).report(network_chaos(), now=T + 3600)
    s = report["signals"]
    assert report["target"] == "shop/web" and report["phase"] == "Finished" and report["margin_s"] == 150
    assert s["rate"]["before"] == pytest.approx(10, rel=0.02) and s["rate"]["during"] == pytest.approx(10, rel=0.05)
    assert s["errors"]["before"] == 0 and 35 < s["errors"]["during"] < 52 and s["errors"]["after"] > 5
    assert s["p99"]["before"] < 10 < 500 < s["p99"]["during"]
    # reverted at RECOVER, healed at HEALED, and rate()'s 1 m window forgets the 503s a minute later
    assert 100 <= report["recovery_s"] <= 130, report["recovery_s"]
    assert report["slo"] == [{"name": "web-availability", "consumed": 0.25}]
    assert budgets.calls == [("web", APPLY * 1000, RECOVER * 1000)]


async def test_running_not_acted_and_without_metrics() -> None:
    running = await ResilienceReporter(_range(_querier())).report(network_chaos(recovered=False), now=APPLY + 200)
    assert running["end"] is None and running["recovery_s"] is None and running["slo"] is None
    assert running["signals"]["errors"]["during"] > 30
    idle = await ResilienceReporter(_range(_querier())).report(network_chaos(recovered=False, acted=False),
                                                               now=T + 3600)
    assert idle["signals"] is not None  # no Apply yet: the window starts at the object's creation
    nothing = await ResilienceReporter().report(network_chaos(), now=T + 3600)
    assert nothing["signals"] is None and nothing["recovery_s"] is None and "not available" in nothing["recovery_note"]
    never = await ResilienceReporter(_range(MemoryQuerier())).report(network_chaos(), now=T + 3600)
    assert never["signals"]["rate"] == {"before": None, "during": None, "after": None}
    assert never["recovery_s"] is None and never["recovery_note"] == "no signals before the window to compare with"


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with started_kube(tmp_path, chaos_mesh_crds()) as api:
        await api.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        obj = network_chaos()
        status = obj.pop("status")
        obj["metadata"].pop("creationTimestamp")
        made = await api.client.create(obj)
        made["status"] = status
        await api.client.update_status(made)
        yield api


async def test_the_api_route_and_the_experiment_page(kube: KubeAPI) -> None:
    reporter = ResilienceReporter(_range(_querier()), Budgets())
    app = FastAPI()
    app.include_router(chaos_router(kube.client, ChaosReport(), reporter))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        ok = await c.get("/api/chaos/v1/experiments/shop/NetworkChaos/delay-web/report")
        missing = await c.get("/api/chaos/v1/experiments/shop/NetworkChaos/nope/report")
        bad_kind = await c.get("/api/chaos/v1/experiments/shop/Secret/x/report")
    assert ok.status_code == 200, ok.text
    assert ok.json()["slo"] == [{"name": "web-availability", "consumed": 0.25}] and "signals" in ok.json()
    assert missing.status_code == 404 and "not found" in missing.text and bad_kind.status_code == 404
    async with ui_client(ui_deps(chaos=ChaosConsole(kube.client, ChaosReport(), reporter))) as client:
        page = await client.get("/chaos/shop/NetworkChaos/delay-web")
    assert page.status_code == 200, page.text
    table = page.text.split('data-testid="chaos-resilience"')[1].split("</table>")[0]
    assert "Time to recover" in table and "s after the fault was reverted" in table
    assert "web-availability" in table and "25.00% of its error budget" in table
