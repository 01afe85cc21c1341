"""``spec.autoscalerRef`` (HorizontalPodAutoscaler v2): the ``<hpa>-primary`` HPA Flagger makes for the primary,
kept in step at promotion, the target's HPA left on the target, and both gone or restored with the Canary."""

from __future__ import annotations

from typing import Any

import pytest

from pitwall.kube import KubeAPI, NotFoundError
from pitwall.releases.autoscaler import reconcile_primary
from pitwall.releases.model import CanaryView
from tests.releases.harness import Answers, Driver, canary, deployment, set_image

pytestmark = pytest.mark.timeout(60)

AS = "autoscaling/v2"
CPU = [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
ANALYSIS = {"interval": "1s", "threshold": 2, "maxWeight": 20, "stepWeight": 10}
REF = {"apiVersion": AS, "kind": "HorizontalPodAutoscaler", "name": "podinfo"}


def _hpa(min_r: int = 3, max_r: int = 5) -> dict[str, Any]:
    return {"apiVersion": AS, "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "podinfo", "namespace": "default",
                         "labels": {"team": "web", "kustomize.toolkit.fluxcd.io/name": "apps"}},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "minReplicas": min_r, "maxReplicas": max_r, "metrics": CPU}}


async def _init(d: Driver, **spec: Any) -> dict[str, Any]:
    await d.client.create(deployment())
    await d.client.create(_hpa())
    await d.client.create(canary(ANALYSIS, **{"autoscalerRef": REF, **spec}))
    for _ in range(5):
        cd = await d.tick()
        if cd.get("status", {}).get("phase") == "Initialized":
            return cd
    raise AssertionError(cd)


async def test_primary_hpa_is_made_kept_in_step_at_promotion_and_deleted(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    await _init(d)
    primary = await d.client.get(AS, "HorizontalPodAutoscaler", "podinfo-primary", "default")
    assert primary["spec"] == {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                  "name": "podinfo-primary"},
                               "minReplicas": 3, "maxReplicas": 5, "metrics": CPU}
    assert primary["metadata"]["labels"] == {"team": "web"}  # never Flux's: Flux would prune the copy
    assert primary["metadata"]["ownerReferences"][0]["kind"] == "Canary"
    assert not await reconcile_primary(d.client, CanaryView(await d.client.get(
        "flagger.app/v1beta1", "Canary", "podinfo", "default")), init=False)  # in step: nothing to write
    target = await d.client.get(AS, "HorizontalPodAutoscaler", "podinfo", "default")
    assert target["spec"]["scaleTargetRef"]["name"] == "podinfo"  # the canary's HPA stays on the canary
    # a new revision: the target is scaled up to the HPA's minReplicas (Flagger's ScaleFromZero)
    await set_image(mesh_kube, "v2")
    cd = await d.tick()
    assert cd["status"]["phase"] == "Progressing"
    assert (await d.deployment("podinfo"))["spec"]["replicas"] == 3
    # the HPA changes during the analysis: the primary's follows only when the promotion starts
    hpa = await d.client.get(AS, "HorizontalPodAutoscaler", "podinfo", "default")
    hpa["spec"]["maxReplicas"] = 8
    await d.client.update(hpa)
    phases = []
    for _ in range(8):
        cd = await d.tick()
        phases.append(cd["status"]["phase"])
        got = (await d.client.get(AS, "HorizontalPodAutoscaler", "podinfo-primary", "default"))["spec"]
        if phases[-1] == "Progressing":
            assert got["maxReplicas"] == 5
        if phases[-1] == "Succeeded":
            break
    assert phases[-1] == "Succeeded" and "Promoting" in phases
    promoted = await d.client.get(AS, "HorizontalPodAutoscaler", "podinfo-primary", "default")
    assert promoted["spec"]["maxReplicas"] == 8 and promoted["metadata"]["labels"] == {"team": "web"}
    # deleting the Canary removes the primary's HPA and leaves the target's
    await d.client.delete("flagger.app/v1beta1", "Canary", "podinfo", "default")
    assert await d.tick() == {}
    with pytest.raises(NotFoundError):
        await d.client.get(AS, "HorizontalPodAutoscaler", "podinfo-primary", "default")
    assert (await d.client.get(AS, "HorizontalPodAutoscaler", "podinfo", "default"))["spec"]["scaleTargetRef"][
        "name"] == "podinfo"


async def test_primary_scaler_replicas_override(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    await _init(d, autoscalerRef={**REF, "primaryScalerReplicas": {"minReplicas": 2, "maxReplicas": 10}})
    spec = (await d.client.get(AS, "HorizontalPodAutoscaler", "podinfo-primary", "default"))["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10)


async def test_a_missing_hpa_or_an_unsupported_kind_is_reported(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    await d.client.create(deployment())
    await d.client.create(canary(ANALYSIS, autoscalerRef={**REF, "name": "absent"}))
    for _ in range(3):
        cd = await d.tick()
    assert cd["status"]["phase"] == "Initializing"
    msgs = [e["message"] for e in (await d.client.list("v1", "Event", "default")).items]
    assert any(m.startswith("HorizontalPodAutoscaler absent.default get query error") for m in msgs)
    cd["spec"]["autoscalerRef"] = {**REF, "kind": "ScaledObject", "apiVersion": "keda.sh/v1alpha1"}
    await d.client.update(cd)
    cd = await d.tick()
    (ready,) = [c for c in cd["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["status"] == "False" and ready["message"].startswith("spec.autoscalerRef.kind: Unsupported value")
