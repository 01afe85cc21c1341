"""The chaos page: view functions on Chaos Mesh objects, the routes over a real KubeAPI (SQLite) with Chaos
Mesh's CRDs through ``ChaosConsole``, and the halt-all button on the whole server with auth on."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from tests.kube_fixture import started_kube
from tests.ui.app import ui_client, ui_deps

from pitwall.chaos import ChaosConsole, chaos_mesh_crds
from pitwall.chaos.events import ChaosReport
from pitwall.config import load_settings
from pitwall.incidents import ChangeLog
from pitwall.kube import KubeAPI, KubeClient
from pitwall.server import create_app
from pitwall.ui.chaos_view import experiment_row, golden_charts, phase_of, signal_selector

pytestmark = pytest.mark.timeout(60)

API = "chaos-mesh.org/v1alpha1"
PAUSE = "experiment.chaos-mesh.org/pause"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def http_chaos(name: str = "abort-web", t0: float = 1_700_000_000.0, *, recovered: bool = False,
               desired: str = "Run") -> dict[str, Any]:
    events = [{"type": "Succeeded", "operation": "Apply", "timestamp": _iso(t0 + 2)}]
    if recovered:
        events.append({"type": "Succeeded", "operation": "Recover", "timestamp": _iso(t0 + 62)})
    return {"apiVersion": API, "kind": "HTTPChaos",
            "metadata": {"name": name, "namespace": "shop", "creationTimestamp": _iso(t0)},
            "spec": {"mode": "all", "selector": {"labelSelectors": {"app": "web"}}, "target": "Request",
                     "port": 8080, "abort": True, "duration": "60s"},
            "status": {"experiment": {"desiredPhase": desired, "containerRecords": [
                {"id": "shop/web-1", "selectorKey": ".", "phase": "Not Injected" if recovered else "Injected", "events": events,
                 "injectedCount": 1, "recoveredCount": 1 if recovered else 0}]},
                "conditions": [{"type": "Selected", "status": "True"}]}}


def test_phases_as_chaos_mesh_shows_them() -> None:
    assert phase_of(http_chaos()) == "Running"
    assert phase_of(http_chaos(recovered=True, desired="Stop")) == "Finished"
    assert phase_of(http_chaos(desired="Stop")) == "Recovering"
    paused = http_chaos(recovered=True)
    paused["metadata"]["annotations"] = {PAUSE: "true"}
    assert phase_of(paused) == "Paused"
    nothing = http_chaos()
    nothing["status"]["experiment"]["containerRecords"] = []
    assert phase_of(nothing) == "Not selected"
    kill = {"kind": "PodChaos", "spec": {"action": "pod-kill"}, "status": {"experiment": {
        "desiredPhase": "Run", "containerRecords": [{"id": "a/b", "phase": "Injected"}]}}}
    assert phase_of(kill) == "Finished"
    assert phase_of({"kind": "Schedule", "metadata": {}}) == "Active"
    wf = {"kind": "Workflow", "status": {"conditions": [{"type": "Accomplished", "status": "True"}]}}
    assert phase_of(wf) == "Finished"


def test_row_window_and_golden_signal_queries() -> None:
    t0 = 1_700_000_000.0
    row = experiment_row(http_chaos(t0=t0, recovered=True, desired="Stop"))
    assert (row.kind, row.phase, row.start, row.end, row.duration) == (
        "HTTPChaos", "Finished", "2023-11-14 22:13:22Z", "2023-11-14 22:14:22Z", "60s")
    assert row.target == "ns shop · app=web · mode all" and row.service == "shop/web" and row.records == 1
    assert row.action == "abort on requests to port 8080"
    charts = golden_charts(http_chaos(t0=t0, recovered=True, desired="Stop"), row, now=t0 + 3600)
    assert [c["key"] for c in charts] == ["rate", "errors", "p99"]
    q = parse_qs(urlparse(charts[1]["src"]).query)
    # the window (60s) plus the minimum margin of two minutes on both sides
    assert (q["from"], q["to"]) == ([f"{t0 + 2 - 120:.0f}"], [f"{t0 + 62 + 120:.0f}"])
    assert q["expr"] == ['100 * (sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace='
                         '"shop",destination_app="web",response_code=~"5.*"}[1m])) or vector(0)) / sum(rate('
                         'istio_requests_total{reporter="destination",destination_workload_namespace="shop",'
                         'destination_app="web"}[1m]))']
    running = experiment_row(http_chaos(t0=t0))
    assert running.end == "running" and running.end_s == 0
    # no app label: the whole namespace; a Schedule's selector is found in its embedded spec
    sched = {"kind": "Schedule", "metadata": {"namespace": "shop", "name": "s"},
             "spec": {"schedule": "@every 1m", "type": "PodChaos", "podChaos": {
                 "action": "pod-kill", "mode": "one", "selector": {"namespaces": ["other"]}}}}
    assert signal_selector(sched) == ('reporter="destination",destination_workload_namespace="other"',
                                      "namespace other")
    assert experiment_row(sched).target == "ns other · mode one"
    assert experiment_row(sched).action == "PodChaos on @every 1m"


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with started_kube(tmp_path, chaos_mesh_crds()) as api:
        yield api


def _client(chaos: ChaosConsole | None, changes: ChangeLog | None = None) -> httpx.AsyncClient:
    return ui_client(ui_deps(chaos=chaos, changes=changes))


async def seed(c: KubeClient) -> None:
    """A running HTTPChaos, a finished one and a Schedule, as the chaos controllers leave them."""
    await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    now = time.time()
    for obj in (http_chaos("abort-web", now - 30), http_chaos("old-abort", now - 7200, recovered=True, desired="Stop")):
        status = obj.pop("status")
        obj["metadata"].pop("creationTimestamp")
        made = await c.create(obj)
        made["status"] = status
        await c.update_status(made)
    await c.create({"apiVersion": API, "kind": "Schedule", "metadata": {"name": "nightly", "namespace": "shop"},
                    "spec": {"schedule": "0 3 * * *", "type": "PodChaos", "historyLimit": 1,
                             "concurrencyPolicy": "Forbid",
                             "podChaos": {"action": "pod-kill", "mode": "one",
                                          "selector": {"labelSelectors": {"app": "web"}}}}})


async def test_chaos_page_lists_running_and_past(kube: KubeAPI) -> None:
    await seed(kube.client)
    async with _client(ChaosConsole(kube.client, ChaosReport())) as client:
        r = await client.get("/chaos")
        d = await client.get("/chaos/shop/HTTPChaos/old-abort")
        missing = await client.get("/chaos/shop/HTTPChaos/nope")
        bad_kind = await client.get("/chaos/shop/Secret/x")
    assert r.status_code == 200, r.text
    running, past = r.text.split("<h2>Running")[1].split("<h2>Past")
    assert "abort-web" in running and "nightly" in running and "old-abort" not in running
    assert "old-abort" in past and ">Finished<" in past
    assert running.count('class="pw-chart mini"') == 2 and 'data-testid="halt-all"' in r.text
    assert d.status_code == 200, d.text
    assert d.text.count('class="pw-chart"') == 3 and "shop/web-1" in d.text and "ns shop · app=web" in d.text
    assert missing.status_code == 404 and bad_kind.status_code == 404


async def test_halt_asks_to_confirm_then_pauses_everything(kube: KubeAPI) -> None:
    await seed(kube.client)
    changes = ChangeLog(kube.store)
    report = ChaosReport(changes)
    async with _client(ChaosConsole(kube.client, report), changes) as client:
        ask = await client.get("/chaos/halt")
        unconfirmed = await client.post("/chaos/halt", data={})
        untouched = await kube.client.get(API, "HTTPChaos", "abort-web", "shop")
        done = await client.post("/chaos/halt", data={"confirm": "halt"})
        again = await client.post("/chaos/halt", data={"confirm": "halt"})
        detail = await client.get("/chaos/shop/HTTPChaos/abort-web")
    assert ask.status_code == 200 and 'name="confirm" value="halt"' in ask.text
    assert "HTTPChaos shop/abort-web" in ask.text and "Schedule shop/nightly" in ask.text
    assert unconfirmed.status_code == 400 and PAUSE not in (untouched["metadata"].get("annotations") or {})
    assert done.status_code == 200, done.text
    halted = done.text.split('class="halted"')[1].split("</ul>")[0]
    for name in ("HTTPChaos shop/abort-web", "HTTPChaos shop/old-abort", "Schedule shop/nightly"):
        assert name in halted
        kind, _, rest = name.partition(" ")
        obj = await kube.client.get(API, kind, rest.split("/")[1], "shop")
        assert obj["metadata"]["annotations"][PAUSE] == "true"
    assert report.halts == 2 and "Nothing was running" in again.text
    events = await changes.between(0, time.time_ns() + 1)
    assert [e.summary for e in events] == ["chaos halted: 3 experiment(s) paused", "chaos halted: 0 experiment(s) paused"]
    assert "chaos halted: 3 experiment(s) paused" in detail.text.split('class="data changes"')[1]


async def test_without_the_pillar_the_page_says_so() -> None:
    async with _client(None) as client:
        r = await client.get("/chaos")
        h = await client.post("/chaos/halt", data={"confirm": "halt"})
    assert r.status_code == 200 and "is not available" in r.text and h.status_code == 503


@pytest.mark.slow
async def test_the_halt_button_needs_the_write_scope(tmp_path: Path) -> None:
    """On the whole server with tokens: a read token may look but not halt; a write token halts, through the
    same halt the API uses (its counter moves)."""
    read, write = "chaos-read-token-0", "chaos-write-token"
    settings = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                             auth_tokens=[{"token": read, "scopes": ["read"]},
                                          {"token": write, "scopes": ["read", "write"], "name": "oncall"}])
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
        auth = {"Authorization": f"Bearer {read}"}
        assert (await c.get("/chaos", headers=auth)).status_code == 200
        denied = await c.post("/chaos/halt", data={"confirm": "halt"}, headers=auth)
        assert denied.status_code == 403
        ok = await c.post("/chaos/halt", data={"confirm": "halt"}, headers={"Authorization": f"Bearer {write}"})
        assert ok.status_code == 200 and 'data-testid="halted"' in ok.text
        metrics = (await c.get("/metrics", headers={"Authorization": f"Bearer {write}"})).text
        assert "pitwall_chaos_halts_total 1.0" in metrics
