"""Flagger's loop, tick by tick, over the in-process Kubernetes API: initialisation, a good revision promoted,
a bad one rolled back, A/B and blue/green routing, webhooks in order, bad input, deletion, restart."""

from __future__ import annotations

from typing import Any

import pytest

from pitwall.kube import KubeAPI, NotFoundError
from tests.releases.harness import NET, Answers, Driver, Sink, canary, deployment, set_image

pytestmark = pytest.mark.timeout(60)

METRICS = [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
           {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"}]
CANARY_ANALYSIS = {"interval": "1s", "threshold": 2, "maxWeight": 60, "stepWeight": 20, "metrics": METRICS}


async def _initialized(d: Driver, obj: dict[str, Any]) -> dict[str, Any]:
    await d.client.create(deployment())
    await d.client.create(obj)
    for _ in range(5):
        cd = await d.tick()
        if cd.get("status", {}).get("phase") == "Initialized":
            return cd
    raise AssertionError(f"not initialized: {cd.get('status')}")


async def test_initialization_creates_primary_services_and_routing(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    cd = await _initialized(d, canary(CANARY_ANALYSIS))
    st = cd["status"]
    assert st["phase"] == "Initialized" and st["canaryWeight"] == 0 and st["failedChecks"] == 0
    assert st["lastAppliedSpec"] and st["lastAppliedSpec"] == st["lastPromotedSpec"]
    (promoted,) = [c for c in st["conditions"] if c["type"] == "Promoted"]
    assert promoted["status"] == "True" and promoted["reason"] == "Initialized"
    assert promoted["message"] == "Deployment initialization completed."
    primary = await d.deployment("podinfo-primary")
    assert primary["spec"]["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    assert primary["spec"]["template"]["metadata"]["labels"]["app"] == "podinfo-primary"
    assert primary["spec"]["replicas"] == 2
    assert primary["metadata"]["ownerReferences"][0]["kind"] == "Canary"
    assert (await d.deployment("podinfo"))["spec"]["replicas"] == 0
    selectors = {n: (await d.client.get("v1", "Service", n, "default"))["spec"]["selector"]
                 for n in ("podinfo", "podinfo-primary", "podinfo-canary")}
    assert selectors == {"podinfo": {"app": "podinfo-primary"}, "podinfo-primary": {"app": "podinfo-primary"},
                         "podinfo-canary": {"app": "podinfo"}}
    vs = await d.client.get(NET, "VirtualService", "podinfo", "default")
    assert vs["spec"]["hosts"] == ["podinfo"] and vs["spec"]["gateways"] == ["mesh"]
    assert await d.weights() == [("podinfo-primary", 100), ("podinfo-canary", 0)]
    for host in ("podinfo-primary", "podinfo-canary"):
        assert (await d.client.get(NET, "DestinationRule", host, "default"))["spec"]["host"] == host
    assert [e.details["phase"] for e in d.changes.events] == ["Initializing", "Initialized"]
    assert all(e.kind == "release" and e.service == "default/podinfo" for e in d.changes.events)
    # nothing changed: further ticks start nothing
    assert (await d.tick())["status"]["phase"] == "Initialized"


async def test_good_revision_is_promoted_step_by_step_with_webhooks_in_order(mesh_kube: KubeAPI) -> None:
    async with Sink() as sink:
        hooks = [{"name": t, "type": t, "url": f"{sink.url}/{t}", "timeout": "5s"}
                 for t in ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
                           "confirm-promotion", "post-rollout")]
        hooks.append({"name": "events", "type": "event", "url": f"{sink.url}/event"})
        d = Driver(mesh_kube, Answers())
        await _initialized(d, canary({**CANARY_ANALYSIS, "webhooks": hooks}))
        await set_image(mesh_kube, "v2")
        phases, weights = [], []
        for _ in range(12):
            cd = await d.tick()
            phases.append(cd["status"]["phase"])
            weights.append(cd["status"]["canaryWeight"])
            if phases[-1] == "Succeeded":
                break
        assert phases == ["Progressing", "Progressing", "Progressing", "Progressing", "Promoting", "Finalising",
                          "Succeeded"]
        assert weights == [0, 20, 40, 60, 60, 0, 0]  # Promoting keeps the weight (Flagger's SetStatusPhase)
        primary = await d.deployment("podinfo-primary")
        assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:v2"
        assert (await d.deployment("podinfo"))["spec"]["replicas"] == 0
        assert await d.weights() == [("podinfo-primary", 100), ("podinfo-canary", 0)]
        st = cd["status"]
        assert st["lastPromotedSpec"] == st["lastAppliedSpec"]
        (promoted,) = [c for c in st["conditions"] if c["type"] == "Promoted"]
        assert (promoted["status"], promoted["reason"]) == ("True", "Succeeded")
        order = [p.strip("/") for p in sink.paths()]
        assert order == ["confirm-rollout",  # the new revision
                         "pre-rollout", "confirm-traffic-increase",  # weight 20
                         "rollout", "confirm-traffic-increase",  # 40
                         "rollout", "confirm-traffic-increase",  # 60
                         # at maxWeight the next step is still > 0, so Flagger asks before promoting too
                         "rollout", "confirm-traffic-increase", "confirm-promotion",
                         "post-rollout"]
        bodies = dict(sink.received)
        assert bodies["/post-rollout"]["phase"] == "Succeeded" and bodies["/post-rollout"]["name"] == "podinfo"
        assert bodies["/pre-rollout"] == {"name": "podinfo", "namespace": "default", "phase": "Progressing",
                                          "checksum": bodies["/pre-rollout"]["checksum"]}
        events = [b["metadata"]["eventMessage"] for p, b in sink.received if p == "/event"]
        assert "Advance podinfo.default canary weight 20" in events
        assert "Promotion completed! Scaling down podinfo.default" in events
        assert all(b["metadata"]["eventType"] in ("Normal", "Warning") for p, b in sink.received if p == "/event")
    kinds = [e.details.get("phase") for e in d.changes.events]
    assert kinds[-3:] == ["Promoting", "Finalising", "Succeeded"]
    assert [e.details["canaryWeight"] for e in d.changes.events if "weight" in e.summary] == [20, 40, 60]
    msgs = [e["message"] for e in (await mesh_kube.client.list("v1", "Event", "default")).items
            if e["involvedObject"]["kind"] == "Canary"]
    assert "Copying podinfo.default template spec to podinfo-primary.default" in msgs
    assert all(e["source"]["component"] == "flagger" and e["reason"] == "Synced"
               for e in (await mesh_kube.client.list("v1", "Event", "default")).items
               if e["involvedObject"]["kind"] == "Canary")


async def test_bad_revision_rolls_back_with_the_primary_untouched(mesh_kube: KubeAPI) -> None:
    async with Sink() as sink:
        hooks = [{"name": "notify", "type": "post-rollout", "url": f"{sink.url}/post"}]
        answers = Answers()
        d = Driver(mesh_kube, answers)
        await _initialized(d, canary({**CANARY_ANALYSIS, "webhooks": hooks}))
        await set_image(mesh_kube, "v2-bad")
        assert (await d.tick())["status"]["phase"] == "Progressing"
        assert (await d.tick())["status"]["canaryWeight"] == 20  # the first step needs no metrics
        answers.success_rate = 50.0
        failed = [(await d.tick())["status"] for _ in range(3)]
        assert [s["failedChecks"] for s in failed[:2]] == [1, 2]
        assert failed[2]["phase"] == "Failed" and failed[2]["failedChecks"] == 0 and failed[2]["canaryWeight"] == 0
        (promoted,) = [c for c in failed[2]["conditions"] if c["type"] == "Promoted"]
        assert (promoted["status"], promoted["message"]) == ("False", "Canary analysis failed, Deployment scaled to zero.")
        assert sink.received == [("/post", {"name": "podinfo", "namespace": "default", "phase": "Failed",
                                            "checksum": sink.received[0][1]["checksum"]})]
    primary = await d.deployment("podinfo-primary")
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:v1"
    assert (await d.deployment("podinfo"))["spec"]["replicas"] == 0
    assert await d.weights() == [("podinfo-primary", 100), ("podinfo-canary", 0)]
    msgs = {e["message"] for e in (await mesh_kube.client.list("v1", "Event", "default")).items}
    assert "Halt podinfo.default advancement success rate 50.00% < 99%" in msgs
    assert "Rolling back podinfo.default failed checks threshold reached 2" in msgs
    # the same bad revision is not analysed again; a new one is
    assert (await d.tick())["status"]["phase"] == "Failed"
    await set_image(mesh_kube, "v3")
    assert (await d.tick())["status"]["phase"] == "Progressing"


async def test_no_values_is_a_failed_check_unless_the_guard_says_wait(mesh_kube: KubeAPI) -> None:
    answers = Answers(success_rate=None, requests=0.0)
    d = Driver(mesh_kube, answers)
    obj = canary({**CANARY_ANALYSIS, "threshold": 5})
    await _initialized(d, obj)
    await set_image(mesh_kube, "v2")
    await d.tick()
    await d.tick()
    assert (await d.tick())["status"]["failedChecks"] == 1
    msgs = {e["message"] for e in (await mesh_kube.client.list("v1", "Event", "default")).items}
    assert any(m.startswith("Halt advancement no values found for istio metric request-success-rate") for m in msgs)
    cd = await d.client.get("flagger.app/v1beta1", "Canary", "podinfo", "default")
    cd["metadata"]["annotations"] = {"releases.pitwall.dev/min-requests": "10",
                                     "releases.pitwall.dev/no-traffic": "wait"}
    await d.client.update(cd)
    for _ in range(3):
        st = (await d.tick())["status"]
        assert (st["failedChecks"], st["canaryWeight"]) == (1, 20)  # neither failed nor advanced
    answers.requests, answers.success_rate = 50.0, 100.0
    assert (await d.tick())["status"]["canaryWeight"] == 40


async def test_ab_testing_routes_matching_requests_to_the_canary(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    match = [{"headers": {"x-canary": {"exact": "insider"}}}]
    await _initialized(d, canary({"interval": "1s", "threshold": 2, "iterations": 2, "match": match,
                                  "metrics": METRICS}))
    vs = await d.client.get(NET, "VirtualService", "podinfo", "default")
    assert vs["spec"]["http"][0]["match"] == match
    assert [r["route"] for r in vs["spec"]["http"]] == [
        [{"destination": {"host": "podinfo-primary"}, "weight": 100},
         {"destination": {"host": "podinfo-canary"}, "weight": 0}],
        [{"destination": {"host": "podinfo-primary"}, "weight": 100}]]
    await set_image(mesh_kube, "v2")
    phases = []
    for _ in range(8):
        cd = await d.tick()
        phases.append((cd["status"]["phase"], cd["status"]["iterations"]))
        if cd["status"]["phase"] == "Progressing" and cd["status"]["iterations"] == 1:
            vs = await d.client.get(NET, "VirtualService", "podinfo", "default")
            assert vs["spec"]["http"][0]["match"] == match and [d_["weight"] for d_ in vs["spec"]["http"][0]["route"]] \
                == [0, 100]
            assert vs["spec"]["http"][1]["route"] == [{"destination": {"host": "podinfo-primary"}, "weight": 100}]
        if cd["status"]["phase"] == "Succeeded":
            break
    assert phases == [("Progressing", 0), ("Progressing", 1), ("Progressing", 2), ("Promoting", 2),
                      ("Finalising", 0), ("Succeeded", 0)]


async def test_blue_green_switches_all_at_once_after_its_iterations(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    await _initialized(d, canary({"interval": "1s", "threshold": 2, "iterations": 2, "metrics": METRICS}))
    await set_image(mesh_kube, "v2")
    seen = []
    for _ in range(8):
        cd = await d.tick()
        seen.append((cd["status"]["phase"], cd["status"]["iterations"], [w for _, w in await d.weights()]))
        if cd["status"]["phase"] == "Succeeded":
            break
    assert seen == [("Progressing", 0, [100, 0]), ("Progressing", 1, [100, 0]), ("Progressing", 2, [100, 0]),
                    ("Progressing", 3, [0, 100]), ("Promoting", 3, [0, 100]), ("Finalising", 0, [100, 0]),
                    ("Succeeded", 0, [100, 0])]


async def test_mirroring_before_the_first_step(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    await _initialized(d, canary({**CANARY_ANALYSIS, "mirror": True, "mirrorWeight": 50}))
    await set_image(mesh_kube, "v2")
    await d.tick()
    await d.tick()
    vs = await d.client.get(NET, "VirtualService", "podinfo", "default")
    assert vs["spec"]["http"][0]["mirror"] == {"host": "podinfo-canary"}
    assert vs["spec"]["http"][0]["mirrorPercentage"] == {"value": 50.0}
    assert await d.weights() == [("podinfo-primary", 100), ("podinfo-canary", 0)]
    await d.tick()
    vs = await d.client.get(NET, "VirtualService", "podinfo", "default")
    assert "mirror" not in vs["spec"]["http"][0] and await d.weights() == [("podinfo-primary", 80),
                                                                           ("podinfo-canary", 20)]


def _ready(cd: dict[str, Any]) -> dict[str, Any]:
    (cond,) = [c for c in cd["status"]["conditions"] if c["type"] == "Ready"]
    return cond


async def test_bad_input_is_reported_with_the_field(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    await d.client.create(canary(CANARY_ANALYSIS))
    await d.tick()
    cd = await d.tick()
    assert _ready(cd)["status"] == "False" and _ready(cd)["reason"] == "TargetNotFound"
    assert _ready(cd)["message"].startswith('spec.targetRef.name: Not found: deployment.apps "podinfo" not found')
    with pytest.raises(NotFoundError):
        await d.deployment("podinfo-primary")  # nothing made for it
    await d.client.create(deployment())
    cd["spec"]["analysis"]["metrics"] = [{"name": "errors", "templateRef": {"name": "nope"},
                                          "thresholdRange": {"max": 1}}]
    await d.client.update(cd)
    cd = await d.tick()
    assert _ready(cd)["reason"] == "MetricTemplateNotFound"
    assert _ready(cd)["message"].startswith("spec.analysis.metrics[0].templateRef.name: Not found")
    cd["spec"]["analysis"] = {"interval": "1s", "threshold": 1, "stepWeights": [50, 30], "metrics": []}
    await d.client.update(cd)
    cd = await d.tick()
    assert _ready(cd)["reason"] == "InvalidSpec"
    assert "spec.analysis.stepWeights[1]: Invalid value: 30" in _ready(cd)["message"]
    cd["spec"]["analysis"] = {"interval": "1s", "threshold": 1, "stepWeights": [30, 50], "metrics": []}
    await d.client.update(cd)
    for _ in range(3):
        cd = await d.tick()
    assert _ready(cd)["status"] == "True" and cd["status"]["phase"] == "Initialized"


async def test_step_weights_and_a_restart_mid_analysis(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    await _initialized(d, canary({"interval": "1s", "threshold": 2, "stepWeights": [10, 30, 70],
                                  "metrics": METRICS}))
    await set_image(mesh_kube, "v2")
    await d.tick()
    assert (await d.tick())["status"]["canaryWeight"] == 10
    assert (await d.tick())["status"]["canaryWeight"] == 30
    d.ctl = d.new_controller()  # pitwall restarted: only the stored status and routing remain
    assert (await d.tick())["status"]["canaryWeight"] == 70
    assert await d.weights() == [("podinfo-primary", 30), ("podinfo-canary", 70)]
    assert (await d.tick())["status"]["phase"] == "Promoting"


async def test_deleting_the_canary_restores_the_target_and_routing(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    await _initialized(d, canary(CANARY_ANALYSIS))
    assert (await d.deployment("podinfo"))["spec"]["replicas"] == 0
    await d.client.delete("flagger.app/v1beta1", "Canary", "podinfo", "default")
    assert await d.tick() == {}
    assert (await d.deployment("podinfo"))["spec"]["replicas"] == 2
    apex = await d.client.get("v1", "Service", "podinfo", "default")
    assert apex["spec"]["selector"] == {"app": "podinfo"}
    with pytest.raises(NotFoundError):
        await d.client.get(NET, "VirtualService", "podinfo", "default")
    assert d.changes.events[-1].details["phase"] == "Terminated"


async def test_a_canary_that_never_becomes_ready_is_rolled_back_after_the_deadline(mesh_kube: KubeAPI) -> None:
    import asyncio

    d = Driver(mesh_kube, Answers())
    await _initialized(d, canary(CANARY_ANALYSIS, progressDeadlineSeconds=1))
    await set_image(mesh_kube, "v2-crashing")
    assert (await d.tick(stuck="podinfo"))["status"]["phase"] == "Progressing"
    assert (await d.tick(stuck="podinfo"))["status"]["phase"] == "Progressing"  # waiting, within the deadline
    await asyncio.sleep(2.1)  # lastTransitionTime has second precision
    st = (await d.tick(stuck="podinfo"))["status"]
    assert st["phase"] == "Failed"
    msgs = {e["message"] for e in (await mesh_kube.client.list("v1", "Event", "default")).items}
    assert 'Rolling back podinfo.default progress deadline exceeded deployment "podinfo" exceeded its progress ' \
           "deadline" in msgs
    assert (await d.deployment("podinfo-primary"))["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "podinfo:v1"


async def test_approval_gates_wait_and_a_rollback_hook_rolls_back(mesh_kube: KubeAPI) -> None:
    async with Sink() as sink:
        hooks = [{"name": "go", "type": "confirm-rollout", "url": f"{sink.url}/go"},
                 {"name": "ship", "type": "confirm-promotion", "url": f"{sink.url}/ship"},
                 {"name": "abort", "type": "rollback", "url": f"{sink.url}/abort"}]
        sink.refuse.update({"/go": 403, "/ship": 403, "/abort": 404})
        d = Driver(mesh_kube, Answers())
        await _initialized(d, canary({**CANARY_ANALYSIS, "maxWeight": 20, "webhooks": hooks}))
        await set_image(mesh_kube, "v2")
        for _ in range(2):
            st = (await d.tick())["status"]
            assert st["phase"] == "Waiting" and (await d.deployment("podinfo"))["spec"]["replicas"] == 0
        (promoted,) = [c for c in st["conditions"] if c["type"] == "Promoted"]
        assert (promoted["status"], promoted["message"]) == ("Unknown", "Waiting for approval.")
        del sink.refuse["/go"]
        assert (await d.tick())["status"]["phase"] == "Progressing"
        assert (await d.tick())["status"]["canaryWeight"] == 20
        st = (await d.tick())["status"]
        assert st["phase"] == "WaitingPromotion"
        assert (await d.tick())["status"]["phase"] == "WaitingPromotion"
        del sink.refuse["/ship"]
        assert (await d.tick())["status"]["phase"] == "Promoting"
        for _ in range(2):
            st = (await d.tick())["status"]
        assert st["phase"] == "Succeeded"
        # a new revision, and the rollback hook now says yes: rolled back while progressing
        await set_image(mesh_kube, "v3")
        assert (await d.tick())["status"]["phase"] == "Progressing"
        del sink.refuse["/abort"]
        st = (await d.tick())["status"]
        assert st["phase"] == "Failed"
        msgs = {e["message"] for e in (await mesh_kube.client.list("v1", "Event", "default")).items}
        assert "Rolling back podinfo.default manual webhook invoked" in msgs
        assert "Halt podinfo.default advancement waiting for promotion approval ship" in msgs
        assert (await d.deployment("podinfo-primary"))["spec"]["template"]["spec"]["containers"][0]["image"] == \
            "podinfo:v2"


async def test_slo_and_incident_gates_hold_promotion_and_a_breach_while_waiting_rolls_back(mesh_kube: KubeAPI) -> None:
    from pitwall.releases.gates import Gates
    from pitwall.slo import SLONotFound

    budget = {"podinfo-availability": 0.05}
    incidents: dict[str, list[str]] = {"podinfo": ["#7"]}

    async def slo_status(name: str) -> Any:
        if name not in budget:
            raise SLONotFound(name)
        return type("Status", (), {"budget_remaining": budget[name]})()

    async def open_incidents(service: str) -> list[str]:
        return incidents.get(service, [])

    answers = Answers()
    d = Driver(mesh_kube, answers)
    d.ctl.gates = Gates(slo_status, open_incidents)
    obj = canary({**CANARY_ANALYSIS, "maxWeight": 20})
    obj["metadata"]["annotations"] = {"releases.pitwall.dev/slo-gate": "podinfo-availability",
                                      "releases.pitwall.dev/min-budget-remaining": "0.1",
                                      "releases.pitwall.dev/incident-gate": "podinfo"}
    await _initialized(d, obj)
    await set_image(mesh_kube, "v2")
    assert (await d.tick())["status"]["phase"] == "Progressing"
    assert (await d.tick())["status"]["canaryWeight"] == 20
    assert (await d.tick())["status"]["phase"] == "WaitingPromotion"  # incident #7 is open
    incidents.clear()
    assert (await d.tick())["status"]["phase"] == "WaitingPromotion"  # 5% of the budget left, floor 10%
    assert await d.ctl.gates.closed(obj["metadata"]["annotations"]) == \
        "SLO podinfo-availability has 0.05 of its error budget left, not above 0.1"
    msgs = {e["message"] for e in (await mesh_kube.client.list("v1", "Event", "default")).items}
    assert "Halt podinfo.default advancement waiting for promotion gate: incident #7 is open on service podinfo" \
        in msgs
    budget["podinfo-availability"] = 0.5
    assert (await d.tick())["status"]["phase"] == "Promoting"
    for _ in range(2):
        st = (await d.tick())["status"]
    assert st["phase"] == "Succeeded"

    # Waiting at a closed gate, the canary's checks still run: a breach rolls it back (flagger#1801).
    budget["podinfo-availability"] = 0.0
    await set_image(mesh_kube, "v3")
    assert (await d.tick())["status"]["phase"] == "Progressing"
    assert (await d.tick())["status"]["canaryWeight"] == 20
    assert (await d.tick())["status"]["phase"] == "WaitingPromotion"
    answers.success_rate = 50.0
    for _ in range(3):
        st = (await d.tick())["status"]
    assert st["phase"] == "Failed"
    assert (await d.deployment("podinfo-primary"))["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:v2"
