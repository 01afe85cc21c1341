"""The judge's verdicts on the Canary: a ``Judged`` condition (kept by Flagger's status schema), the whole result
as a JSON annotation, a Normal Event when it passes, and the Halt Warning with a failed check when it does not."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pitwall.kube import KubeAPI
from pitwall.releases.checks import MetricContext
from pitwall.releases.judge import JudgeResult
from pitwall.releases.verdicts import judged_condition, judgement_annotation
from tests.releases.harness import Answers, Driver, FakeResult, canary, deployment, set_image

pytestmark = pytest.mark.timeout(60)


class Latency:
    """The canary ("podinfo") as fast as its primary, or 40% slower when ``slow``; a little deterministic noise."""

    def __init__(self) -> None:
        self.slow = False

    def __call__(self, expr: str, at_ms: int, tenant: str = "default") -> FakeResult:
        base = 100.0 + 5 * (((at_ms // 1000) * 7919 % 13) / 13.0)
        return FakeResult("vector", [[base * 1.4 if self.slow and 'app="podinfo"' in expr else base]])


async def _canary(d: Driver) -> dict[str, Any]:
    return await d.client.get("flagger.app/v1beta1", "Canary", "podinfo", "default")


def _cond(cd: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in cd["status"]["conditions"] if c["type"] == "Judged"]
    return c


async def test_verdicts_in_status_annotation_and_events(mesh_kube: KubeAPI) -> None:
    c = mesh_kube.client
    await c.create({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
                    "metadata": {"name": "latency", "namespace": "default",
                                 "annotations": {"releases.pitwall.dev/judge": "kayenta",
                                                 "releases.pitwall.dev/judge-direction": "increase"}},
                    "spec": {"provider": {"type": "prometheus"}, "query": 'latency_ms{app="{{ target }}"}'}})
    d = Driver(mesh_kube, Answers())
    latency = Latency()
    d.ctl.metrics = MetricContext(instant=latency, client=c)
    await c.create(deployment())
    await c.create(canary({"interval": "1s", "threshold": 2, "maxWeight": 60, "stepWeight": 20,
                           "metrics": [{"name": "latency", "templateRef": {"name": "latency"}, "interval": "1m"}]}))
    for _ in range(5):
        if (await d.tick()).get("status", {}).get("phase") == "Initialized":
            break
    await set_image(mesh_kube, "v2")
    assert (await d.tick())["status"]["phase"] == "Progressing"
    assert (await d.tick())["status"]["canaryWeight"] == 20  # the first step runs no metrics
    cd = await d.tick()
    good = _cond(cd)
    assert (good["status"], good["reason"]) == ("True", "Pass")
    assert good["message"].startswith("latency: score 100 Pass (latency Pass:")
    ann = json.loads(cd["metadata"]["annotations"]["releases.pitwall.dev/judgement"])
    assert ann["canaryWeight"] == 20
    assert ann["metrics"]["latency"]["score"] == 100 and ann["metrics"]["latency"]["classification"] == "Pass"
    (v,) = ann["metrics"]["latency"]["metrics"]
    assert v["canary"]["count"] == 30 and v["baseline"]["count"] == 30 and v["ratio"] == 1.0
    assert v["reason"] == "The canary and baseline data are identical"
    assert cd["status"]["canaryWeight"] == 40 and cd["status"]["failedChecks"] == 0
    msgs = [e["message"] for e in (await c.list("v1", "Event", "default")).items]
    assert any(m.startswith("Judge latency passed podinfo.default score 100: latency Pass") for m in msgs)

    latency.slow = True
    cd = await d.tick()
    bad = _cond(cd)
    assert (bad["status"], bad["reason"]) == ("False", "Fail")
    assert bad["message"].startswith("latency: score 0 Fail (latency High:")
    assert bad["lastTransitionTime"] >= good["lastTransitionTime"]
    ann = json.loads(cd["metadata"]["annotations"]["releases.pitwall.dev/judgement"])
    (v,) = ann["metrics"]["latency"]["metrics"]
    assert v["classification"] == "High" and v["lower"] > 0 and 1.3 < v["ratio"] < 1.5
    assert cd["status"]["failedChecks"] == 1 and cd["status"]["phase"] == "Progressing"
    promoted = [x for x in cd["status"]["conditions"] if x["type"] == "Promoted"]
    assert promoted and promoted[0]["reason"] == "Progressing"  # Flagger's own condition untouched
    msgs = [e["message"] for e in (await c.list("v1", "Event", "default")).items]
    assert any(m.startswith("Halt podinfo.default advancement judge latency score 0 Fail: latency High")
               for m in msgs)


def test_condition_is_the_worst_and_bounded() -> None:
    ok = JudgeResult(100.0, "Pass", [], {}, "all good")
    empty = JudgeResult(0.0, "Fail", [], {}, "no data", inconclusive=True)
    cond = judged_condition([("a", ok), ("b", empty)], "2026-01-01T00:00:00Z", None)
    assert (cond["status"], cond["reason"]) == ("Unknown", "Nodata")
    assert cond["message"] == "a: score 100 Pass (all good) | b: score 0 Nodata (no data)"
    long = [(f"m{i}", JudgeResult(10.0, "Fail", [], {}, "x" * 500)) for i in range(10)]
    cond = judged_condition(long, "t", {"status": "False", "lastTransitionTime": "t0"})
    assert len(cond["message"]) == 2048 and cond["reason"] == "Fail" and cond["lastTransitionTime"] == "t0"
    assert json.loads(judgement_annotation([("a", ok)], "t", 30)) == {
        "time": "t", "canaryWeight": 30, "metrics": {"a": {"score": 100.0, "classification": "Pass",
                                                           "reason": "all good", "inconclusive": False,
                                                           "groups": {}, "metrics": []}}}
