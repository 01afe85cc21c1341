"""kube-state-metrics over a real KubeAPI on SQLite, with an Appender that records batches."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from pitwall.controllers.kube_state_metrics import KubeStateMetrics, state_rows
from pitwall.kube import KubeAPI
from pitwall.metrics import Exemplar, MetricMetadata, SampleBatch

Labels = tuple[tuple[str, str], ...]


class RecordingAppender:
    """An Appender keeping every batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, SampleBatch]] = []

    async def append(self, tenant: str, batch: SampleBatch) -> None:
        self.batches.append((tenant, batch))

    async def append_metadata(self, tenant: str, metadata: Sequence[MetricMetadata]) -> None:
        return None

    async def append_exemplars(self, tenant: str, exemplars: Sequence[Exemplar]) -> None:
        return None

    def last(self) -> dict[Labels, float]:
        _, b = self.batches[-1]
        return {b.series[int(i)]: float(v) for i, v in zip(b.series_idx, b.values, strict=True)}


def find(samples: dict[Labels, float], name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for lbl, v in samples.items():
        d = dict(lbl)
        if d.get("__name__") == name and all(d.get(k) == x for k, x in labels.items()):
            out.append((d, v))
    return out


def one(samples: dict[Labels, float], name: str, **labels: str) -> float:
    got = find(samples, name, **labels)
    assert len(got) == 1, (name, labels, got)
    return got[0][1]


def _pod(name: str, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                                              "uid": "u1", "controller": True}]},
            "spec": {"nodeName": "pitwall", "containers": [{"name": "c", "image": "img:1",
                                                            "resources": {"requests": {"cpu": "250m",
                                                                                       "memory": "64Mi"}}}]}}


@pytest.mark.timeout(30)
async def test_series_for_every_kind_and_stale_markers(kube: KubeAPI) -> None:
    c = kube.client
    await c.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                             "template": {"metadata": {"labels": {"app": "web"}},
                                          "spec": {"containers": [{"name": "c", "image": "img:1"}]}}}})
    d = await c.get("apps/v1", "Deployment", "web", "default")
    d["status"] = {"replicas": 3, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
                   "unavailableReplicas": 1, "observedGeneration": 1,
                   "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}
    await c.update_status(d)
    pod = await c.create(_pod("web-1-a"))
    pod["status"] = {"phase": "Running", "podIP": "127.42.0.5", "hostIP": "127.0.0.1",
                     "conditions": [{"type": "Ready", "status": "False"}],
                     "containerStatuses": [{"name": "c", "ready": False, "restartCount": 4, "image": "img:1",
                                            "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}
    await c.update_status(pod)
    await c.create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once", "namespace": "default"},
                    "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                   "containers": [{"name": "c", "image": "x"}]}}}})
    j = await c.get("batch/v1", "Job", "once", "default")
    j["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    await c.update_status(j)
    await c.create({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick", "namespace": "default"},
                    "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                        "restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}}})
    await c.create({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                             "minReplicas": 2, "maxReplicas": 7}})
    await c.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    await c.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "pitwall"},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}],
                               "nodeInfo": {"kubeletVersion": "v1.32.0-pitwall"}}})

    app = RecordingAppender()
    ksm = KubeStateMetrics(c, app, interval_s=3600)
    await ksm.write_once()
    s = app.last()
    assert all(dict(lbl)["job"] == "kube-state-metrics" for lbl in s)
    dep = {"namespace": "default", "deployment": "web"}
    assert one(s, "kube_deployment_spec_replicas", **dep) == 3
    assert one(s, "kube_deployment_status_replicas_available", **dep) == 2
    assert one(s, "kube_deployment_status_replicas_unavailable", **dep) == 1
    assert one(s, "kube_deployment_status_replicas_updated", **dep) == 2
    assert one(s, "kube_deployment_status_observed_generation", **dep) == 1
    assert one(s, "kube_deployment_metadata_generation", **dep) == 1
    assert one(s, "kube_deployment_status_condition", condition="Progressing", status="true", **dep) == 1
    p = {"namespace": "default", "pod": "web-1-a"}
    info = find(s, "kube_pod_info", **p)
    assert len(info) == 1 and info[0][0]["pod_ip"] == "127.42.0.5" and info[0][0]["node"] == "pitwall"
    assert info[0][0]["created_by_kind"] == "ReplicaSet" and info[0][0]["uid"] == pod["metadata"]["uid"]
    assert one(s, "kube_pod_owner", owner_kind="ReplicaSet", owner_name="web-1", **p) == 1
    assert one(s, "kube_pod_status_ready", condition="false", **p) == 1
    assert one(s, "kube_pod_status_ready", condition="true", **p) == 0
    assert one(s, "kube_pod_container_status_waiting_reason", container="c", reason="CrashLoopBackOff", **p) == 1
    assert one(s, "kube_pod_container_status_last_terminated_reason", reason="OOMKilled", **p) == 1
    assert one(s, "kube_pod_container_resource_requests", resource="cpu", unit="core", **p) == 0.25
    assert one(s, "kube_pod_container_resource_requests", resource="memory", **p) == 64 * 2**20
    # written by the node, not here
    assert not find(s, "kube_pod_status_phase") and not find(s, "kube_pod_container_status_restarts_total")
    assert not find(s, "kube_pod_container_status_ready")
    job = {"namespace": "default", "job_name": "once"}
    assert one(s, "kube_job_status_succeeded", **job) == 1
    assert one(s, "kube_job_status_active", **job) == 0
    assert one(s, "kube_job_complete", condition="true", **job) == 1
    nxt = one(s, "kube_cronjob_next_schedule_time", namespace="default", cronjob="tick")
    assert nxt % 300 == 0
    hpa = {"namespace": "default", "horizontalpodautoscaler": "web"}
    assert one(s, "kube_horizontalpodautoscaler_spec_min_replicas", **hpa) == 2
    assert one(s, "kube_horizontalpodautoscaler_spec_max_replicas", **hpa) == 7
    assert one(s, "kube_horizontalpodautoscaler_status_desired_replicas", **hpa) == 0
    svc = find(s, "kube_service_info", namespace="default", service="web")
    assert len(svc) == 1 and svc[0][0]["cluster_ip"]
    assert one(s, "kube_namespace_status_phase", namespace="default", phase="Active") == 1
    assert one(s, "kube_node_status_condition", node="pitwall", condition="Ready", status="true") == 1
    assert find(s, "kube_node_info", node="pitwall")[0][0]["kubelet_version"] == "v1.32.0-pitwall"

    # the pod goes: its series get a staleness marker once, then are no longer written
    await c.delete("v1", "Pod", "web-1-a", "default", grace_period=0)
    await ksm.write_once()
    s = app.last()
    stale = find(s, "kube_pod_info", **p)
    assert len(stale) == 1 and math.isnan(stale[0][1])
    assert math.isnan(one(s, "kube_pod_container_status_waiting_reason", reason="CrashLoopBackOff", **p))
    assert one(s, "kube_deployment_spec_replicas", **dep) == 3
    await ksm.write_once()
    assert not find(app.last(), "kube_pod_info", **p)


@pytest.mark.timeout(30)
async def test_component_runs_and_stops(kube: KubeAPI) -> None:
    app = RecordingAppender()
    ksm = KubeStateMetrics(kube.client, app, interval_s=0.01)
    await ksm.start()
    try:
        for _ in range(500):
            if ksm.rounds >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        await ksm.stop()
    assert ksm.rounds >= 2 and ksm.errors == 0
    assert find(app.last(), "kube_namespace_status_phase", namespace="default", phase="Active")


@pytest.mark.timeout(10)
def test_cronjob_next_schedule_time_follows_the_controllers_parser() -> None:
    def cj(name: str, schedule: str, **spec: Any) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "n", "creationTimestamp": "2026-12-05T12:00:30Z"},
                "spec": {"schedule": schedule, **spec},
                "status": {"lastScheduleTime": "2026-12-05T13:00:00Z"} if name == "ran" else {}}

    rows = state_rows({"CronJob": [cj("new", "*/5 * * * *"), cj("ran", "@hourly"),
                                   cj("paris", "0 9 * * *", timeZone="Europe/Paris"), cj("bad", "61 * * * *")]},
                      ts_ms=1_796_480_000_000)
    got = {dict(lbl)["cronjob"]: v for lbl, _, v in rows if dict(lbl)["__name__"] == "kube_cronjob_next_schedule_time"}
    ts = {k: datetime.fromtimestamp(v, UTC).strftime("%Y-%m-%dT%H:%M") for k, v in got.items()}
    assert ts == {"new": "2026-12-05T12:05", "ran": "2026-12-05T14:00", "paris": "2026-12-06T08:00"}
    assert any(dict(lbl)["__name__"] == "kube_cronjob_info" and dict(lbl)["cronjob"] == "bad" for lbl, _, _ in rows)


def test_flagger_series_from_canary_status() -> None:
    def cd(name: str, ns: str, target: str, **status: Any) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": ns},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}},
                "status": status}

    rows = state_rows({"Canary": [cd("web", "shop", "web-d", phase="Progressing", canaryWeight=30),
                                  cd("api", "shop", "api", phase="Failed", canaryWeight=0),
                                  cd("pay", "shop", "pay", phase="Succeeded"),
                                  cd("new", "other", "new")]}, ts_ms=1_796_480_000_000)
    got = {(dict(lbl)["__name__"], dict(lbl).get("workload") or dict(lbl).get("name") or dict(lbl)["namespace"]): v
           for lbl, _, v in rows}
    assert all(dict(lbl)["job"] == "flagger" for lbl, _, _ in rows)
    # weights by workload as Flagger's recorder labels them: the target's name, and its primary
    assert got[("flagger_canary_weight", "web-d")] == 30 and got[("flagger_canary_weight", "web-d-primary")] == 70
    assert got[("flagger_canary_weight", "pay")] == 0 and got[("flagger_canary_weight", "pay-primary")] == 100
    # 0 running, 1 successful, 2 failed
    assert [got[("flagger_canary_status", n)] for n in ("web-d", "api", "pay")] == [0, 2, 1]
    assert ("flagger_canary_status", "new") not in got  # the controller has not seen it yet
    assert got[("flagger_canary_total", "shop")] == 3 and got[("flagger_canary_total", "other")] == 1
