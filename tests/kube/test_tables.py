from __future__ import annotations

from typing import Any

from pitwall.kube.meta import human_duration
from pitwall.kube.registry import BUILTIN, Registry, ResourceType, _version_priority
from pitwall.kube.tables import table

POD = next(rt for rt in BUILTIN if rt.kind == "Pod")


def _row(rt: ResourceType, obj: dict[str, Any]) -> list[Any]:
    cells: list[Any] = table(rt, [obj])["rows"][0]["cells"]
    return cells


def test_pod_status_column() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
           "status": {"phase": "Running", "containerStatuses": [
               {"name": "a", "ready": True, "restartCount": 0, "state": {"running": {}}},
               {"name": "b", "ready": False, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
    cells = _row(POD, pod)
    assert cells[:4] == ["p", "1/2", "CrashLoopBackOff", "4"]
    pod["status"]["containerStatuses"][1]["state"] = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    assert _row(POD, pod)[2] == "OOMKilled"
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert _row(POD, pod)[2] == "Terminating"


def test_crd_printer_columns() -> None:
    rt = ResourceType("x.io", "v1", "Thing", "things", "thing", True, crd={
        "name": "v1", "additionalPrinterColumns": [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
            {"name": "Size", "type": "integer", "jsonPath": ".spec.size", "priority": 1}]})
    t = table(rt, [{"metadata": {"name": "t"}, "spec": {"size": 3},
                    "status": {"phase": "Up", "conditions": [{"type": "Ready", "status": "True"}]}}])
    assert [(c["name"], c["priority"]) for c in t["columnDefinitions"]] == \
        [("Name", 0), ("Phase", 0), ("Ready", 0), ("Size", 1), ("Age", 0)]
    assert t["rows"][0]["cells"][:4] == ["t", "Up", "True", 3]


def test_human_duration_matches_kubectl() -> None:
    assert [human_duration(s) for s in (5, 119, 150, 600, 3 * 3600 + 60, 9 * 3600, 50 * 3600, 400 * 86400)] == \
        ["5s", "119s", "2m30s", "10m", "3h1m", "9h", "2d2h", "400d"]


def test_registry_groups_and_versions() -> None:
    assert sorted(["v1beta1", "v1", "v2alpha1", "v2"], key=_version_priority) == ["v2", "v1", "v1beta1", "v2alpha1"]
    reg = Registry()
    groups = [g for g, _ in reg.groups()]
    assert groups[:3] == ["", "apps", "events.k8s.io"]
    assert reg.by_kind("apps/v1", "Deployment") is not None
    assert reg.get("", "v1", "services") is not None and reg.get("", "v1", "services").key("ns", "a") == \
        "/registry/services/specs/ns/a"  # type: ignore[union-attr]


def test_hpa_targets_as_kubectl_prints_them() -> None:
    v2 = next(rt for rt in BUILTIN if rt.kind == "HorizontalPodAutoscaler" and rt.version == "v2")
    v1 = next(rt for rt in BUILTIN if rt.kind == "HorizontalPodAutoscaler" and rt.version == "v1")
    metrics = [
        {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
        {"type": "Object", "object": {"metric": {"name": "q"}, "target": {"type": "Value", "value": "1"}}},
        {"type": "External", "external": {"metric": {"name": "e"},
                                          "target": {"type": "AverageValue", "averageValue": "2k"}}},
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}},
        {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "c", "target": {
            "type": "Utilization", "averageUtilization": 60}}},
    ]
    hpa: dict[str, Any] = {"apiVersion": "autoscaling/v2", "metadata": {"name": "h"},
                           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
                                    "metrics": metrics}}
    assert _row(v2, hpa)[2] == "<unknown>/10, <unknown>/1 + 3 more..."
    hpa["status"] = {"currentMetrics": [
        {"type": "Pods", "pods": {"metric": {"name": "rps"}, "current": {"averageValue": "5"}}},
        {"type": "Object", "object": {"metric": {"name": "q"}, "current": {"value": "0.5"}}},
        {"type": "External", "external": {"metric": {"name": "e"}, "current": {"averageValue": "1500"}}},
        {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "1048576Ki"}}},
        {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "c", "current": {
            "averageUtilization": 42}}}]}
    assert _row(v2, hpa)[2] == "5/10, 500m/1 + 3 more..."
    from pitwall.kube.tables import _hpa_metric

    got = [_hpa_metric(m, s) for m, s in zip(metrics, hpa["status"]["currentMetrics"], strict=True)]
    assert got == ["5/10", "500m/1", "1500/2k (avg)", "memory: 1Gi/1Gi", "cpu: 42%/60%"]
    assert _hpa_metric(metrics[2], None) == "<unknown>/2k (avg)"
    one = {"apiVersion": "autoscaling/v1", "metadata": {"name": "h"},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
                    "targetCPUUtilizationPercentage": 50}, "status": {"currentCPUUtilizationPercentage": 20}}
    assert _row(v1, one)[2] == "cpu: 20%/50%"
    assert _row(v2, {"metadata": {"name": "h"}, "spec": {}})[2] == "<none>"
