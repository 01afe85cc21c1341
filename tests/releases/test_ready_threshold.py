"""``analysis.primaryReadyThreshold`` / ``canaryReadyThreshold``: the share of a Deployment's updated pods that
must be available before the analysis goes on (Flagger's isDeploymentReady), with Flagger's wait message."""

from __future__ import annotations

from typing import Any

import pytest

from pitwall.kube import KubeAPI
from pitwall.releases import workload
from tests.releases.harness import Answers, Driver, canary, deployment, set_image

pytestmark = pytest.mark.timeout(60)


async def _available(d: Driver, name: str, n: int) -> None:
    """Every replica updated, ``n`` of them available (the kubelet's report)."""
    dep = await d.deployment(name)
    want = dep["spec"].get("replicas", 1)
    dep["status"] = {"observedGeneration": dep["metadata"].get("generation", 1), "replicas": want,
                     "updatedReplicas": want, "readyReplicas": n, "availableReplicas": n,
                     "unavailableReplicas": want - n}
    await d.client.update_status(dep)


async def _messages(kube: KubeAPI) -> list[str]:
    return [e["message"] for e in (await kube.client.list("v1", "Event", "default")).items]


async def _start(d: Driver, analysis: dict[str, Any]) -> None:
    await d.client.create(deployment(replicas=4))
    await d.client.create(canary(analysis))
    for _ in range(5):
        if (await d.tick()).get("status", {}).get("phase") == "Initialized":
            break
    await set_image(d.kube, "v2")
    cd = await d.tick()  # Progressing: the target scaled up
    assert cd["status"]["phase"] == "Progressing"


async def test_canary_ready_threshold_holds_steps_until_enough_pods_are_available(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    await _start(d, {"interval": "1s", "threshold": 2, "maxWeight": 50, "stepWeight": 10,
                     "canaryReadyThreshold": 50})
    await d.roll_out_all()
    await _available(d, "podinfo", 2)  # 2 of 4: 50% is enough
    assert (await d.tick(ready=False))["status"]["canaryWeight"] == 10
    await _available(d, "podinfo", 1)  # 1 of 4: below 50%, the step waits
    cd = await d.tick(ready=False)
    assert cd["status"]["canaryWeight"] == 10 and cd["status"]["phase"] == "Progressing"
    assert ("podinfo.default not ready: podinfo.default waiting for rollout to finish: 1 of 2 (readyThreshold 50%) "
            "updated replicas are available") in await _messages(mesh_kube)
    await _available(d, "podinfo", 2)
    assert (await d.tick(ready=False))["status"]["canaryWeight"] == 20


async def test_primary_ready_threshold_and_the_default_of_100(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    await _start(d, {"interval": "1s", "threshold": 2, "maxWeight": 50, "stepWeight": 10,
                     "primaryReadyThreshold": 75})
    await d.roll_out_all()
    await _available(d, "podinfo-primary", 3)  # 3 of 4 primary pods: 75% is enough
    assert (await d.tick(ready=False))["status"]["canaryWeight"] == 10
    await _available(d, "podinfo-primary", 2)
    assert (await d.tick(ready=False))["status"]["canaryWeight"] == 10
    assert ("podinfo-primary.default not ready: podinfo-primary.default waiting for rollout to finish: 2 of 3 "
            "(readyThreshold 75%) updated replicas are available") in await _messages(mesh_kube)
    # the canary's threshold is still the default: 3 of 4 canary pods are not enough
    await _available(d, "podinfo-primary", 4)
    await _available(d, "podinfo", 3)
    assert (await d.tick(ready=False))["status"]["canaryWeight"] == 10
    assert any("3 of 4 (readyThreshold 100%)" in m for m in await _messages(mesh_kube))


def test_threshold_arithmetic_truncates_as_flagger() -> None:
    dep = {"metadata": {"name": "web", "namespace": "ns", "generation": 1},
           "spec": {"replicas": 3}, "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3,
                                                "availableReplicas": 1}}
    assert workload.readiness(dep, threshold=66)[0] is True  # int(3 * 0.66) = 1
    assert workload.readiness(dep, threshold=67)[:2] == (
        False, "web.ns waiting for rollout to finish: 1 of 2 (readyThreshold 67%) updated replicas are available")
    assert workload.readiness(dep, threshold=0)[0] is True
    assert workload.readiness(dep)[0] is False


async def test_promotion_waits_for_the_primary_threshold_before_finalising(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    await _start(d, {"interval": "1s", "threshold": 2, "maxWeight": 10, "stepWeight": 10,
                     "primaryReadyThreshold": 50})
    for _ in range(4):
        cd = await d.tick()
        if cd["status"]["phase"] == "Promoting":
            break
    assert cd["status"]["phase"] == "Promoting"
    await _available(d, "podinfo", 4)
    await _available(d, "podinfo-primary", 1)  # the new primary pods: 1 of 4 available, 50% needed
    assert (await d.tick(ready=False))["status"]["phase"] == "Promoting"
    await _available(d, "podinfo-primary", 2)
    assert (await d.tick(ready=False))["status"]["phase"] == "Finalising"
