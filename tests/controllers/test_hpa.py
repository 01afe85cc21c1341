"""The HPA controller over a real KubeAPI: a Deployment scaled up and back down by a metric, conditions, events."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from pitwall.controllers.deployment import DeploymentController
from pitwall.controllers.hpa import (
    HorizontalPodAutoscalerController,
    format_quantity,
    parse_quantity,
    promql_query,
)
from pitwall.controllers.loop import ControllerRunner
from pitwall.controllers.replicaset import ReplicaSetController
from pitwall.kube import KubeAPI, KubeClient
from pitwall.metrics import QueryResult
from tests.controllers.conftest import Kubelet, eventually, run_controller


class Clock:
    def __init__(self) -> None:
        self.t = datetime.now(UTC) + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


class FakeMetrics:
    """``InstantQuery`` answering every pod named in the query's ``pod=~`` with ``level`` (or ``total`` shared
    among them, as a fixed load would be); records queries."""

    def __init__(self) -> None:
        self.level = 0.0
        self.total: float | None = None
        self.queries: list[str] = []

    def __call__(self, expr: str, at_ms: int, tenant: str = "default") -> QueryResult:
        self.queries.append(expr)
        m = re.search(r'pod=~"([^"]*)"', expr)
        names = m.group(1).replace("\\\\", "").split("|") if m else ["x"]
        level = self.level if self.total is None else self.total / len(names)
        return QueryResult("vector", series=[(("pod", n),) for n in names],
                           timestamps=[np.array([at_ms]) for _ in names],
                           values=[np.array([level]) for _ in names])


def deployment() -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                         "name": "c", "image": "web", "resources": {"requests": {"cpu": "100m"}}}]}}}}


def hpa(metrics: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 5, "metrics": metrics, **spec}}


PODS_METRIC: list[dict[str, Any]] = [{"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second",
                                                    "selector": {"matchLabels": {"route": "/api"}}},
                                         "target": {"type": "AverageValue", "averageValue": "10"}}}]


@pytest.fixture
async def workloads(kube: KubeAPI) -> AsyncIterator[KubeClient]:
    c = kube.client
    runners: list[ControllerRunner] = [await run_controller(c, ReplicaSetController(c)),
                                       await run_controller(c, DeploymentController(c))]
    try:
        async with Kubelet(c):
            yield c
    finally:
        for r in runners:
            await r.stop()


async def ready_replicas(c: KubeClient, n: int) -> None:
    async def check() -> bool:
        d = await c.get("apps/v1", "Deployment", "web", "default")
        st = d.get("status") or {}
        return d["spec"]["replicas"] == n and st.get("readyReplicas") == n and st.get("replicas") == n

    await eventually(check, tries=500)


def cond(h: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in h["status"]["conditions"] if c["type"] == type_)


def test_promql_mapping() -> None:
    sel = {"matchLabels": {"app.kubernetes.io/name": "web"},
           "matchExpressions": [{"key": "code", "operator": "In", "values": ["200", "201"]},
                                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                                {"key": "canary", "operator": "DoesNotExist"}]}
    assert promql_query("Pods", "rps", sel, namespace="ns", pods=["web-b", "web-a"]) == (
        'sum by (pod) (rps{namespace="ns",pod=~"web\\\\-a|web\\\\-b",app_kubernetes_io_name="web",'
        'code=~"200|201",env!~"dev",canary=""})')
    assert promql_query("Object", "requests_total", None, namespace="ns",
                        described={"kind": "Service", "name": "web"}) == (
        'sum(requests_total{namespace="ns",service="web"})')
    assert promql_query("External", "queue_depth", {"matchLabels": {"queue": "jobs"}}) == (
        'sum(queue_depth{queue="jobs"})')
    assert parse_quantity("250m") == 0.25 and parse_quantity("1Ki") == 1024 and parse_quantity("1e3") == 1000
    assert format_quantity(0.25) == "250m" and format_quantity(3.0) == "3"


@pytest.mark.timeout(60)
async def test_scales_a_deployment_up_and_back_down(workloads: KubeClient) -> None:
    c = workloads
    clock, metrics = Clock(), FakeMetrics()
    ctl = HorizontalPodAutoscalerController(c, instant=metrics, now=clock)
    await c.create(deployment())
    await ready_replicas(c, 1)
    await c.create(hpa(PODS_METRIC))

    metrics.level = 10.4  # within the tolerance
    assert await ctl.reconcile("default/web") == 15.0
    h = await c.get("autoscaling/v2", "HorizontalPodAutoscaler", "web", "default")
    assert h["status"]["desiredReplicas"] == 1 and "lastScaleTime" not in h["status"]
    assert cond(h, "ScalingActive")["reason"] == "ValidMetricFound"
    assert h["status"]["currentMetrics"] == [{"type": "Pods", "pods": {
        "metric": PODS_METRIC[0]["pods"]["metric"], "current": {"averageValue": "10400m"}}}]
    assert 'route="/api"' in metrics.queries[-1] and 'namespace="default"' in metrics.queries[-1]

    metrics.level = 30  # 3x the target: 1 -> 3
    clock.advance(15)
    await ctl.reconcile("default/web")
    await ready_replicas(c, 3)
    h = await c.get("autoscaling/v2", "HorizontalPodAutoscaler", "web", "default")
    assert h["status"]["desiredReplicas"] == 3 and h["status"]["lastScaleTime"]
    assert cond(h, "AbleToScale")["reason"] == "SucceededRescale"
    events = [e["message"] for e in (await c.list("v1", "Event", "default")).items
              if e["reason"] == "SuccessfulRescale"]
    assert "New size: 3; reason: pods metric http_requests_per_second above target" in events

    metrics.level = 100  # 10x: capped at maxReplicas
    clock.advance(15)
    await ctl.reconcile("default/web")
    h = await c.get("autoscaling/v2", "HorizontalPodAutoscaler", "web", "default")
    assert h["status"]["desiredReplicas"] == 5
    assert cond(h, "ScalingLimited")["status"] == "True" and cond(h, "ScalingLimited")["reason"] == "TooManyReplicas"
    await ready_replicas(c, 5)

    metrics.level = 2  # a fifth: 5 -> 1, but not before the 300 s scale-down window passes
    clock.advance(15)
    await ctl.reconcile("default/web")
    h = await c.get("autoscaling/v2", "HorizontalPodAutoscaler", "web", "default")
    assert h["status"]["desiredReplicas"] == 5 and cond(h, "AbleToScale")["reason"] == "ScaleDownStabilized"
    clock.advance(301)
    await ctl.reconcile("default/web")
    await ready_replicas(c, 1)
    events = [e["message"] for e in (await c.list("v1", "Event", "default")).items
              if e["reason"] == "SuccessfulRescale"]
    assert "New size: 1; reason: All metrics below target" in events


@pytest.mark.timeout(60)
async def test_cpu_utilization_and_failures(workloads: KubeClient) -> None:
    c = workloads
    clock = Clock()
    usage = {"cpu": "200m"}

    async def pod_metrics(ns: str) -> list[dict[str, Any]]:
        pods = (await c.list("v1", "Pod", ns, label_selector="app=web")).items
        return [{"metadata": {"name": p["metadata"]["name"], "namespace": ns}, "timestamp": clock().isoformat(),
                 "window": "0s", "containers": [{"name": "c", "usage": dict(usage)}]} for p in pods]

    ctl = HorizontalPodAutoscalerController(c, pod_metrics=pod_metrics, now=clock)
    await c.create(deployment())
    await ready_replicas(c, 1)
    cpu = [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                       "averageUtilization": 50}}}]
    await c.create(hpa(cpu, behavior={"scaleDown": {"stabilizationWindowSeconds": 0}}))
    await ctl.reconcile("default/web")  # 200% of a 50% target: 1 -> 4
    await ready_replicas(c, 4)
    h = await c.get("autoscaling/v2", "HorizontalPodAutoscaler", "web", "default")
    assert h["status"]["currentMetrics"][0]["resource"]["current"] == {"averageUtilization": 200,
                                                                       "averageValue": "200m"}
    usage["cpu"] = "25m"  # 25%: 4 -> 2 at once (no window)
    clock.advance(15)
    await ctl.reconcile("default/web")
    await ready_replicas(c, 2)

    # no Pods-metric source: ScalingActive False, nothing scaled
    await c.delete("autoscaling/v2", "HorizontalPodAutoscaler", "web", "default")
    await c.create(hpa(PODS_METRIC))
    await ctl.reconcile("default/web")
    h = await c.get("autoscaling/v2", "HorizontalPodAutoscaler", "web", "default")
    assert cond(h, "ScalingActive")["status"] == "False"
    assert cond(h, "ScalingActive")["reason"] == "FailedGetPodsMetric"
    reasons = {e["reason"] for e in (await c.list("v1", "Event", "default")).items}
    assert {"FailedGetPodsMetric", "FailedComputeMetricsReplicas"} <= reasons

    # a missing target: AbleToScale False
    await c.delete("autoscaling/v2", "HorizontalPodAutoscaler", "web", "default")
    await c.create({**hpa(cpu), "spec": {**hpa(cpu)["spec"], "scaleTargetRef": {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "nope"}}})
    await ctl.reconcile("default/web")
    h = await c.get("autoscaling/v2", "HorizontalPodAutoscaler", "web", "default")
    assert cond(h, "AbleToScale")["reason"] == "FailedGetScale"


@pytest.mark.timeout(60)
async def test_runs_under_the_loop(workloads: KubeClient) -> None:
    c = workloads
    metrics = FakeMetrics()
    metrics.total = 20  # 20 req/s in all, 10 per pod wanted: settles at 2
    r = await run_controller(c, HorizontalPodAutoscalerController(c, instant=metrics, sync_period_s=0.05))
    try:
        await c.create(deployment())
        await c.create(hpa(PODS_METRIC))
        await ready_replicas(c, 2)
    finally:
        await r.stop()


@pytest.mark.timeout(20)
async def test_wiring_runs_job_cronjob_and_hpa_controllers(kube: KubeAPI) -> None:
    from pitwall.controllers.wiring import build_controllers

    m = build_controllers(kube, election=None, instant=FakeMetrics())
    names = {r.name for r in m.runners}
    assert {"job-controller", "cronjob-controller", "horizontal-pod-autoscaler"} <= names
    hpa_runner = next(r for r in m.runners if r.name == "horizontal-pod-autoscaler")
    assert hpa_runner.resync_s == 15.0
