"""kubectl end to end against a live pitwall with the controllers running and a simulated kubelet."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from pitwall.kube import KubeClient
from tests.controllers.conftest import ControllerServer, Kubelet

pytestmark = pytest.mark.slow

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    kubernetes.io/change-cause: first
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: "web:v1"}]
"""

STUCK = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck}
spec:
  replicas: 1
  progressDeadlineSeconds: 2
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec:
      containers: [{name: c, image: "never-ready"}]
"""


def _kubelet(client: KubeClient) -> Kubelet:
    """A kubelet that readies every pod but ``never-ready`` ones."""
    kubelet = Kubelet(client)
    kubelet.admit = lambda pod: pod["spec"]["containers"][0]["image"] != "never-ready"
    return kubelet


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerServer]:
    with ControllerServer(tmp_path_factory.mktemp("controllers"), kubelet=_kubelet) as s:
        yield s


def image_of(server: ControllerServer) -> str:
    return server.kubectl("get", "deploy/web", "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout


@pytest.mark.timeout(180)
def test_apply_rollout_history_undo(server: ControllerServer) -> None:
    server.kubectl("apply", "-f", "-", input=DEPLOY)
    out = server.kubectl("rollout", "status", "deployment/web", "--timeout=60s").stdout
    assert 'deployment "web" successfully rolled out' in out
    got = json.loads(server.kubectl("get", "deploy/web", "-o", "json").stdout)
    assert got["status"]["availableReplicas"] == 3 and got["status"]["updatedReplicas"] == 3
    wide = server.kubectl("get", "deploy", "web").stdout
    assert "3/3" in wide

    server.kubectl("set", "image", "deployment/web", "c=web:v2")
    server.kubectl("annotate", "deployment/web", "kubernetes.io/change-cause=second", "--overwrite")
    out = server.kubectl("rollout", "status", "deployment/web", "--timeout=60s").stdout
    assert "successfully rolled out" in out
    assert image_of(server) == "web:v2"

    history = server.kubectl("rollout", "history", "deployment/web").stdout
    lines = [ln.split() for ln in history.splitlines() if ln[:1].isdigit()]
    assert [ln[0] for ln in lines] == ["1", "2"], history
    assert lines[0][1:] == ["first"], history
    rev1 = server.kubectl("rollout", "history", "deployment/web", "--revision=1").stdout
    assert "web:v1" in rev1

    out = server.kubectl("rollout", "undo", "deployment/web").stdout
    assert "rolled back" in out
    server.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    assert image_of(server) == "web:v1"
    history = server.kubectl("rollout", "history", "deployment/web").stdout
    assert [ln.split()[0] for ln in history.splitlines() if ln[:1].isdigit()] == ["2", "3"], history

    rs = server.kubectl("get", "rs", "-l", "app=web", "-o", "json").stdout
    assert len(json.loads(rs)["items"]) == 2
    pods = json.loads(server.kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
    assert len(pods) == 3 and all(p["spec"]["containers"][0]["image"] == "web:v1" for p in pods)

    server.kubectl("rollout", "undo", "deployment/web", "--to-revision=2")
    server.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    assert image_of(server) == "web:v2"

    events = server.kubectl("get", "events", "--field-selector", "involvedObject.name=web").stdout
    assert "ScalingReplicaSet" in events
    assert "SuccessfulCreate" in server.kubectl("get", "events").stdout
    described = server.kubectl("describe", "deployment", "web").stdout
    assert "NewReplicaSetAvailable" in described and "Scaled" in described


@pytest.mark.timeout(180)
def test_restart_pause_resume_scale(server: ControllerServer) -> None:
    server.kubectl("apply", "-f", "-", input=DEPLOY.replace("name: web", "name: api").replace("app: web", "app: api"))
    server.kubectl("rollout", "status", "deployment/api", "--timeout=60s")
    before = set(server.kubectl("get", "pods", "-l", "app=api", "-o", "name").stdout.split())
    server.kubectl("rollout", "restart", "deployment/api")
    server.kubectl("rollout", "status", "deployment/api", "--timeout=60s")
    after = set(server.kubectl("get", "pods", "-l", "app=api", "-o", "name").stdout.split())
    assert len(after) == 3 and not (before & after)

    server.kubectl("create", "deployment", "made", "--image=web:v1", "--replicas=2")
    server.kubectl("rollout", "status", "deployment/made", "--timeout=60s")
    assert "2/2" in server.kubectl("get", "deployment", "made").stdout

    server.kubectl("rollout", "pause", "deployment/api")
    server.kubectl("set", "image", "deployment/api", "c=web:v9")
    server.kubectl("scale", "deployment/api", "--replicas=2")
    server.kubectl("rollout", "resume", "deployment/api")
    server.kubectl("rollout", "status", "deployment/api", "--timeout=60s")
    pods = json.loads(server.kubectl("get", "pods", "-l", "app=api", "-o", "json").stdout)["items"]
    assert len(pods) == 2 and all(p["spec"]["containers"][0]["image"] == "web:v9" for p in pods)


@pytest.mark.timeout(180)
def test_rollout_status_fails_past_the_progress_deadline(server: ControllerServer) -> None:
    server.kubectl("apply", "-f", "-", input=STUCK)
    p = server.kubectl("rollout", "status", "deployment/stuck", "--timeout=60s", check=False, timeout=90)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert 'deployment "stuck" exceeded its progress deadline' in p.stderr
