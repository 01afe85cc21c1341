"""The namespaces' guard rails on mesh faults: an SLO guard that halts a running experiment and reverts it,
a protected namespace, a maximum blast radius. The SLO status is a test double (the SLO pillar computes the
real one and has its own tests); everything else is real: controllers, proxy, servers behind a Service."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pitwall.chaos.guard import BLAST_RADIUS, INCIDENT_SERVICES, MAX_BURN, MIN_BUDGET, PROTECTED, SLO_GUARD
from pitwall.incidents import ChangeLog, IncidentService
from pitwall.incidents.events import parse_event
from pitwall.incidents.settings import IncidentsSettings
from pitwall.incidents.store import IncidentStore
from pitwall.incidents.wiring import apply_settings
from pitwall.server import _open_incidents
from pitwall.slo import SLONotFound, SLOStatus
from tests.chaos.mesh_world import World
from tests.incidents.conftest import ROUTING_KEY, incidents_config
from tests.traffic.conftest import eventually

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

Obj = dict[str, Any]


class FakeSLOs:
    """``SLOStatusQuery`` over statuses the test sets."""

    def __init__(self) -> None:
        self.status: dict[str, SLOStatus] = {}

    def set(self, name: str, remaining: float | None, burn: float | None) -> None:
        self.status[name] = SLOStatus(name=name, service="web", slo="availability", objective=0.99,
                                      error_budget=0.01, period="30d", window="rolling", at_ms=0,
                                      error_ratio_period=None, error_ratio_now=None, burn_rate_period=None,
                                      burn_rate_now=burn, budget_remaining=remaining,
                                      breaching=remaining is not None and remaining < 0)

    async def __call__(self, name: str) -> SLOStatus:
        if name not in self.status:
            raise SLONotFound(f"SLO {name!r} not found")
        return dataclasses.replace(self.status[name])


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[tuple[World, FakeSLOs]]:
    slos = FakeSLOs()
    w = World(tmp_path, slo_status=slos)
    await w.start()
    try:
        yield w, slos
    finally:
        await w.stop()


async def set_namespace(w: World, labels: dict[str, str | None], annotations: dict[str, str | None]) -> None:
    try:
        await w.client.get("v1", "Namespace", "default")
    except Exception:
        await w.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    await w.client.patch("v1", "Namespace", "default", {"metadata": {"labels": labels, "annotations": annotations}})


def abort_spec(mode: str = "all") -> Obj:
    return {"mode": mode, "selector": {"labelSelectors": {"app": "web"}}, "target": "Request", "port": 8080,
            "abort": True}


async def reason(w: World, kind: str, name: str) -> str:
    o = await w.obj(kind, name)
    conds = ((o or {}).get("status") or {}).get("conditions") or []
    return next((str(c.get("reason", "")) for c in conds if c["type"] == "AllInjected"), "")


async def until_reason(w: World, kind: str, name: str, text: str) -> None:
    async def has() -> bool:
        return text in await reason(w, kind, name)
    await eventually(has, tries=1500)


async def codes(w: World, n: int = 4) -> set[int]:
    async with w.http() as c:
        return {(await c.get("/")).status_code for _ in range(n)}


async def test_slo_guard_halts_a_running_fault_and_reverts_it(guarded: tuple[World, FakeSLOs]) -> None:
    w, slos = guarded
    slos.set("web-availability", remaining=0.9, burn=1.0)
    await set_namespace(w, {}, {SLO_GUARD: "web-availability", MIN_BUDGET: "0.5", MAX_BURN: "10"})
    await w.create("HTTPChaos", "guarded", abort_spec())
    await w.until_conds("HTTPChaos", "guarded", AllInjected="True")
    assert await codes(w) == {503}
    slos.set("web-availability", remaining=0.9, burn=14.4)  # burning too fast: halt at once
    await w.until_conds("HTTPChaos", "guarded", Paused="True", AllRecovered="True")
    assert w.proxy.faults.keys() == set()
    assert await codes(w) == {200}
    events = (await w.client.list("v1", "Event", "default")).items
    halted = [e for e in events if e["reason"] == "GuardHalted" and e["involvedObject"]["name"] == "guarded"]
    assert halted and "14.4x" in halted[0]["message"]
    changes = await w.changes.between(0, 2**62)
    assert any(c.kind == "chaos" and "guard" in c.summary for c in changes)
    # a new experiment is refused before it injects while the budget is under the floor
    slos.set("web-availability", remaining=0.2, burn=1.0)
    await w.create("HTTPChaos", "later", abort_spec())
    await until_reason(w, "HTTPChaos", "later", "under the floor 0.5")
    assert w.proxy.faults.keys() == set() and await codes(w) == {200}


async def test_slo_guard_naming_a_missing_slo_refuses(guarded: tuple[World, FakeSLOs]) -> None:
    w, _ = guarded
    await set_namespace(w, {}, {SLO_GUARD: "nope"})
    await w.create("NetworkChaos", "cut", {"action": "partition", "mode": "all",
                                           "selector": {"labelSelectors": {"app": "sleep"}}})
    await until_reason(w, "NetworkChaos", "cut", "SLO nope, which does not exist")
    assert w.proxy.faults.keys() == set()


async def test_protected_namespace_refuses_until_unlabelled(guarded: tuple[World, FakeSLOs]) -> None:
    w, _ = guarded
    await set_namespace(w, {PROTECTED: "true"}, {})
    await w.create("HTTPChaos", "nope", abort_spec())
    await until_reason(w, "HTTPChaos", "nope", f"labelled {PROTECTED}=true")
    assert w.proxy.faults.keys() == set() and await codes(w) == {200}
    events = (await w.client.list("v1", "Event", "default")).items
    assert sum(e["reason"] == "GuardRefused" for e in events) == 1  # said once, not on every retry
    await set_namespace(w, {PROTECTED: None}, {})
    await w.until_conds("HTTPChaos", "nope", AllInjected="True")  # tried again: now allowed
    assert await codes(w) == {503}


async def test_blast_radius_per_namespace(guarded: tuple[World, FakeSLOs]) -> None:
    w, _ = guarded
    # 5 live pods in the namespace (2 web, echo, sleep, other): 40% is 2 pods
    await set_namespace(w, {}, {BLAST_RADIUS: "40%"})
    await w.create("HTTPChaos", "wide", {**abort_spec(), "selector": {"namespaces": ["default"]}})
    await until_reason(w, "HTTPChaos", "wide", "over its chaos.pitwall.io/max-blast-radius of 40%")
    await w.create("HTTPChaos", "two", abort_spec("all"))
    await w.until_conds("HTTPChaos", "two", AllInjected="True")
    await w.create("NetworkChaos", "third", {"action": "partition", "mode": "all",
                                             "selector": {"labelSelectors": {"app": "echo"}}})
    await until_reason(w, "NetworkChaos", "third", "3 pods of namespace default would be under chaos")
    await w.delete("HTTPChaos", "two")
    await w.until_conds("NetworkChaos", "third", AllInjected="True")  # room again
    await w.delete("HTTPChaos", "wide")
    await w.delete("NetworkChaos", "third")
    assert w.proxy.faults.keys() == set()
    assert await w.obj("NetworkChaos", "third") is None


class Incidents:
    """pitwall's incident service over the world's state store, its query handed to the guard as server.py
    hands it (PagerDuty services ``web`` and ``api`` from the incidents tests' configuration)."""

    def __init__(self) -> None:
        self.service: IncidentService | None = None

    async def query(self, name: str) -> list[str]:
        return await _open_incidents(self.service)(name) if self.service is not None else []


@pytest.fixture
async def with_incidents(tmp_path: Path) -> AsyncIterator[tuple[World, IncidentService]]:
    inc = Incidents()
    w = World(tmp_path, open_incidents=inc.query)
    await w.start()
    await apply_settings(IncidentStore(w.store), IncidentsSettings.model_validate(incidents_config()))
    inc.service = IncidentService(IncidentStore(w.store), ChangeLog(w.store))
    try:
        yield w, inc.service
    finally:
        await w.stop()


async def test_open_incident_halts_and_refuses(with_incidents: tuple[World, IncidentService]) -> None:
    w, incidents = with_incidents
    await set_namespace(w, {}, {INCIDENT_SERVICES: "web"})
    await w.create("HTTPChaos", "calm", abort_spec())
    await w.until_conds("HTTPChaos", "calm", AllInjected="True")
    assert await codes(w) == {503}
    await incidents.handle_event(parse_event({
        "routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "web-down",
        "payload": {"summary": "web is down", "source": "web", "severity": "critical"}}))
    await w.until_conds("HTTPChaos", "calm", Paused="True", AllRecovered="True")
    assert w.proxy.faults.keys() == set() and await codes(w) == {200}
    events = (await w.client.list("v1", "Event", "default")).items
    assert any(e["reason"] == "GuardHalted" and "incident #1 is open on service web" in e["message"]
               for e in events)
    await w.create("HTTPChaos", "during", abort_spec())
    await until_reason(w, "HTTPChaos", "during", "incident #1 is open")
    await incidents.resolve("Q0000001", "PALICE1")
    await w.until_conds("HTTPChaos", "during", AllInjected="True")  # tried again once it is resolved
