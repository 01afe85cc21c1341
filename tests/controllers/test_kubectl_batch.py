"""kubectl end to end for Jobs, CronJobs and HPAs against a live pitwall with the controllers running.

A simulated kubelet runs Job pods to success at once and readies every other pod; a fake metrics provider
serves metrics.k8s.io with every pod of a Deployment at 200m cpu.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from pitwall.kube import Conflict, KubeClient, NotFoundError
from tests.controllers.conftest import ControllerServer, Kubelet

pytestmark = pytest.mark.slow


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BatchKubelet(Kubelet):
    """Pods of Jobs exit 0 straight away; the rest run and are ready."""

    async def sweep(self) -> None:
        for pod in (await self.client.list("v1", "Pod", self.namespace)).items:
            owners = pod["metadata"].get("ownerReferences") or []
            if pod["metadata"].get("deletionTimestamp") or not any(o.get("kind") == "Job" for o in owners):
                continue
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                continue
            pod["status"] = {"phase": "Succeeded", "startTime": _now(), "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": _now()}],
                "containerStatuses": [{"name": pod["spec"]["containers"][0]["name"], "ready": False,
                                       "restartCount": 0, "image": "x", "imageID": "", "state": {"terminated": {
                                           "exitCode": 0, "startedAt": _now(), "finishedAt": _now()}}}]}
            with contextlib.suppress(Conflict, NotFoundError):
                await self.client.update_status(pod)
        await super().sweep()


class FakeUsage:
    """A ``MetricsProvider``: every pod of a Deployment uses 200m cpu."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def pod_metrics(self, namespace: str) -> list[dict[str, Any]]:
        pods = (await self.client.list("v1", "Pod", namespace, label_selector="pod-template-hash")).items
        return [{"metadata": {"name": p["metadata"]["name"], "namespace": p["metadata"]["namespace"],
                              "labels": p["metadata"].get("labels") or {}},
                 "timestamp": _now(), "window": "0s", "containers": [{"name": c["name"], "usage": {
                     "cpu": "200m", "memory": "10Mi"}} for c in p["spec"]["containers"]]} for p in pods]

    async def node_metrics(self) -> list[dict[str, Any]]:
        return []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerServer]:
    with ControllerServer(tmp_path_factory.mktemp("batch"), kubelet=BatchKubelet, metrics=FakeUsage) as s:
        yield s


@pytest.mark.timeout(180)
def test_job_and_cronjob_with_kubectl(server: ControllerServer) -> None:
    k = server.kubectl
    k("create", "job", "pi", "--image=perl:5.34", "--", "perl", "-e", "print 1")
    out = k("wait", "--for=condition=complete", "job/pi", "--timeout=60s", timeout=90).stdout
    assert "job.batch/pi condition met" in out
    row = k("get", "job", "pi").stdout.splitlines()[1].split()
    assert row[1] == "Complete" and row[2] == "1/1", row
    assert "Completed" in k("describe", "job", "pi").stdout

    k("create", "cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *", "--", "date")
    got = k("get", "cronjob", "tick").stdout
    assert "*/5 * * * *" in got and "false" in got, got
    k("create", "cronjob", "often", "--image=busybox", "--schedule=@every 2s", "--", "date")
    made: list[str] = []
    for _ in range(100):  # bounded: the first run is 2 s after creation
        made = [n for n in k("get", "jobs", "-o", "name").stdout.split() if n.startswith("job.batch/often-")]
        if made:
            break
        time.sleep(0.2)
    assert made
    k("wait", "--for=condition=complete", made[0], "--timeout=60s", timeout=90)
    line = k("get", "cronjob", "often").stdout.splitlines()[1]
    assert line.split("false", 1)[1].split()[1] != "<none>", line  # LAST SCHEDULE set



HPA = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 4
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
"""


def web_deployment(server: ControllerServer, name: str) -> None:
    k = server.kubectl
    k("create", "deployment", name, "--image=web:v1", "--replicas=1")
    k("set", "resources", f"deployment/{name}", "--requests=cpu=100m")
    k("rollout", "status", f"deployment/{name}", "--timeout=60s", timeout=90)


def wait_scaled(server: ControllerServer, name: str) -> None:
    k = server.kubectl
    targets = ""
    for _ in range(150):  # bounded: the HPA syncs at once, then every 15 s
        targets = k("get", "hpa", name).stdout
        if "200%/50%" in targets:
            break
        time.sleep(0.2)
    assert "cpu: 200%/50%" in targets, targets
    for _ in range(150):
        if k("get", "deployment", name, "-o", "jsonpath={.spec.replicas}").stdout == "4":
            break
        time.sleep(0.2)
    assert k("get", "deployment", name, "-o", "jsonpath={.spec.replicas}").stdout == "4"
    described = k("describe", "hpa", name).stdout
    assert "SuccessfulRescale" in described and "New size: 4" in described, described


@pytest.mark.timeout(180)
def test_hpa_from_a_v2_manifest(server: ControllerServer) -> None:
    web_deployment(server, "web")
    server.kubectl("apply", "-f", "-", input=HPA)
    wait_scaled(server, "web")


@pytest.mark.timeout(180)
def test_kubectl_autoscale(server: ControllerServer) -> None:
    web_deployment(server, "api")
    out = server.kubectl("autoscale", "deployment", "api", "--min=1", "--max=4", "--cpu-percent=50").stdout
    assert "autoscaled" in out
    wait_scaled(server, "api")
