"""Schedule (cron, concurrencyPolicy, historyLimit), kinds pitwall cannot inject yet, and halt-all, over the
kube API with the chaos controllers (no node: pod-kill needs none)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from pitwall.chaos.api import chaos_router
from pitwall.chaos.events import ChaosReport
from pitwall.chaos.wiring import build_chaos_runners
from pitwall.controllers import ControllerRunner
from pitwall.incidents import ChangeLog
from pitwall.kube import KubeAPI
from tests.controllers.conftest import Kubelet as FakeKubelet

pytestmark = pytest.mark.timeout(60)
API = "chaos-mesh.org/v1alpha1"


@pytest.fixture
async def chaos(kube: KubeAPI) -> AsyncIterator[ChaosReport]:
    report = ChaosReport(ChangeLog(kube.store))
    runners: list[ControllerRunner] = build_chaos_runners(kube.client, node=None, store=kube.store, report=report)
    for r in runners:
        await r.start()
    try:
        yield report
    finally:
        for r in runners:
            await r.stop()


async def until(pred: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await pred()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


async def pods(kube: KubeAPI, n: int, app: str = "web") -> None:
    for i in range(n):
        await kube.client.create({"apiVersion": "v1", "kind": "Pod",
                                  "metadata": {"name": f"{app}-{i}", "namespace": "default", "labels": {"app": app}},
                                  "spec": {"containers": [{"name": "c", "image": "x", "command": ["true"]}]}})


async def conds(kube: KubeAPI, kind: str, name: str) -> dict[str, Any]:
    obj = await kube.client.get(API, kind, name, "default")
    return {c["type"]: (c["status"], c.get("reason", "")) for c in (obj.get("status") or {}).get("conditions") or []}


async def test_schedule_spawns_on_time_forbid_and_history(kube: KubeAPI, chaos: ChaosReport) -> None:
    await pods(kube, 3)
    async with FakeKubelet(kube.client):
        await kube.client.create({"apiVersion": API, "kind": "Schedule",
                                  "metadata": {"name": "every2", "namespace": "default"},
                                  "spec": {"schedule": "@every 2s", "type": "PodChaos", "historyLimit": 2,
                                           "concurrencyPolicy": "Forbid",
                                           "podChaos": {"action": "pod-kill", "mode": "one",
                                                        "selector": {"labelSelectors": {"app": "web"}}}}})

        async def spawned(n: int) -> list[dict[str, Any]] | None:
            items = (await kube.client.list(API, "PodChaos", "default", label_selector="managed-by=every2")).items
            return items if len(items) >= n else None

        first = await until(lambda: spawned(1), 10)
        assert first[0]["metadata"]["name"].startswith("every2-")
        assert first[0]["spec"]["action"] == "pod-kill"
        assert first[0]["metadata"]["ownerReferences"][0]["kind"] == "Schedule"

        async def recorded() -> dict[str, Any] | None:  # the status is written just after the spawn
            st = (await kube.client.get(API, "Schedule", "every2", "default")).get("status") or {}
            return st if st.get("time") and st.get("active") else None

        st = await until(recorded, 10)
        assert st["active"][0]["name"].startswith("every2-") and st["active"][0]["kind"] == "PodChaos"
        await until(lambda: spawned(2), 10)
        # historyLimit 2: a third activation deletes the oldest finished one
        names: set[str] = set()

        async def rotated() -> bool:
            items = (await kube.client.list(API, "PodChaos", "default", label_selector="managed-by=every2")).items
            names.update(i["metadata"]["name"] for i in items)
            return len(names) >= 3 and len(items) <= 2
        await until(rotated, 15)


async def test_schedule_forbid_waits_for_a_running_chaos(kube: KubeAPI, chaos: ChaosReport) -> None:
    await pods(kube, 1, app="api")
    await kube.client.create({"apiVersion": API, "kind": "Schedule", "metadata": {"name": "net", "namespace": "default"},
                              "spec": {"schedule": "@every 1s", "type": "NetworkChaos", "concurrencyPolicy": "Forbid",
                                       "networkChaos": {"action": "delay", "mode": "all", "duration": "30s",
                                                        "selector": {"labelSelectors": {"app": "api"}},
                                                        "delay": {"latency": "10ms"}}}})
    await asyncio.sleep(3.5)
    items = (await kube.client.list(API, "NetworkChaos", "default", label_selector="managed-by=net")).items
    assert len(items) == 1  # the first one runs 30s: every later activation is forbidden
    events = (await kube.client.list("v1", "Event", "default")).items
    assert any(e["reason"] == "Forbid" and e["involvedObject"]["name"] == "net" for e in events)


async def test_network_chaos_without_the_proxy_says_why_it_is_not_injected(kube: KubeAPI, chaos: ChaosReport) -> None:
    await pods(kube, 2, app="db")
    await kube.client.create({"apiVersion": API, "kind": "NetworkChaos",
                              "metadata": {"name": "slow", "namespace": "default"},
                              "spec": {"action": "delay", "mode": "all", "selector": {"labelSelectors": {"app": "db"}},
                                       "delay": {"latency": "100ms"}}})

    async def reported() -> dict[str, Any] | None:
        c = await conds(kube, "NetworkChaos", "slow")
        return c if c.get("Selected", ("",))[0] == "True" else None
    c = await until(reported)
    assert c["AllInjected"][0] == "False" and "service proxy" in c["AllInjected"][1]
    obj = await kube.client.get(API, "NetworkChaos", "slow", "default")
    assert [r["phase"] for r in obj["status"]["experiment"]["containerRecords"]] == ["Not Injected"] * 2
    assert "finalizers" not in obj["metadata"]  # nothing to recover: deletion is immediate
    await kube.client.delete(API, "NetworkChaos", "slow", "default")


async def test_invalid_mode_value_is_reported(kube: KubeAPI, chaos: ChaosReport) -> None:
    await pods(kube, 1, app="x")
    await kube.client.create({"apiVersion": API, "kind": "PodChaos", "metadata": {"name": "bad", "namespace": "default"},
                              "spec": {"action": "pod-kill", "mode": "fixed-percent", "value": "150",
                                       "selector": {"labelSelectors": {"app": "x"}}}})

    async def reported() -> Any:
        c = await conds(kube, "PodChaos", "bad")
        return c.get("Selected", ("", ""))[1]
    assert "Must be (0,100]" in await until(reported)
    assert len((await kube.client.list("v1", "Pod", "default")).items) == 1  # nothing injected


async def test_halt_pauses_everything_and_records_a_change(kube: KubeAPI, chaos: ChaosReport) -> None:
    await pods(kube, 1, app="h")
    for name in ("a", "b"):
        await kube.client.create({"apiVersion": API, "kind": "NetworkChaos",
                                  "metadata": {"name": name, "namespace": "default"},
                                  "spec": {"action": "loss", "mode": "all", "loss": {"loss": "10"},
                                           "selector": {"labelSelectors": {"app": "h"}}}})
    app = FastAPI()
    app.include_router(chaos_router(kube.client, chaos))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/api/chaos/v1/halt")
        assert r.status_code == 200
        assert sorted(r.json()["paused"]) == ["NetworkChaos default/a", "NetworkChaos default/b"]
        assert (await c.post("/api/chaos/v1/halt")).json()["paused"] == []  # already paused
        listed = (await c.get("/api/chaos/v1/experiments")).json()["experiments"]
        assert {e["name"] for e in listed} == {"a", "b"}
        bad = await c.post("/api/chaos/v1/runs", content=b"[1]")
        assert bad.status_code == 400
        ok = await c.post("/api/chaos/v1/runs", json={"title": "t", "status": "completed", "deviated": True})
        assert ok.json()["status"] == "deviated"
    for name in ("a", "b"):
        obj = await kube.client.get(API, "NetworkChaos", name, "default")
        assert obj["metadata"]["annotations"]["experiment.chaos-mesh.org/pause"] == "true"
    await until(lambda: _paused(kube, "a"))
    changes = await ChangeLog(kube.store).between(0, 2**62)
    assert any(e.kind == "chaos" and e.summary.startswith("chaos halted: 2") for e in changes)
    assert chaos.runs["deviated"] == 1


async def _paused(kube: KubeAPI, name: str) -> bool:
    c = await conds(kube, "NetworkChaos", name)
    return c.get("Paused", ("",))[0] == "True"


async def test_created_paused_selects_once_resumed(kube: KubeAPI, chaos: ChaosReport) -> None:
    await pods(kube, 1, app="later")
    await kube.client.create({"apiVersion": API, "kind": "NetworkChaos",
                              "metadata": {"name": "p", "namespace": "default",
                                           "annotations": {"experiment.chaos-mesh.org/pause": "true"}},
                              "spec": {"action": "loss", "mode": "all", "loss": {"loss": "10"},
                                       "selector": {"labelSelectors": {"app": "later"}}}})
    await until(lambda: _paused(kube, "p"))
    assert (await conds(kube, "NetworkChaos", "p"))["Selected"][0] == "False"
    await kube.client.patch(API, "NetworkChaos", "p",
                            {"metadata": {"annotations": {"experiment.chaos-mesh.org/pause": None}}},
                            namespace="default")

    async def selected() -> bool:
        return (await conds(kube, "NetworkChaos", "p")).get("Selected", ("",))[0] == "True"
    await until(selected)


async def test_network_chaos_target_side_has_its_own_records(kube: KubeAPI, chaos: ChaosReport) -> None:
    await pods(kube, 2, app="front")
    await pods(kube, 3, app="back")
    await kube.client.create({"apiVersion": API, "kind": "NetworkChaos",
                              "metadata": {"name": "part", "namespace": "default"},
                              "spec": {"action": "partition", "mode": "all", "direction": "both",
                                       "selector": {"labelSelectors": {"app": "front"}},
                                       "target": {"mode": "fixed", "value": "2",
                                                  "selector": {"labelSelectors": {"app": "back"}}}}})

    async def records() -> list[dict[str, Any]] | None:
        obj = await kube.client.get(API, "NetworkChaos", "part", "default")
        return ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords")
    recs = await until(records)
    assert sorted(r["id"] for r in recs if r["selectorKey"] == ".") == ["default/front-0", "default/front-1"]
    assert len([r for r in recs if r["selectorKey"] == ".Target"]) == 2


async def test_container_kill_without_container_names_is_refused(kube: KubeAPI, chaos: ChaosReport) -> None:
    await pods(kube, 1, app="ck")
    await kube.client.create({"apiVersion": API, "kind": "PodChaos", "metadata": {"name": "ck", "namespace": "default"},
                              "spec": {"action": "container-kill", "mode": "one",
                                       "selector": {"labelSelectors": {"app": "ck"}}}})

    async def reported() -> Any:
        return (await conds(kube, "PodChaos", "ck")).get("Selected", ("", ""))[1]
    assert "spec.containerNames" in await until(reported)
