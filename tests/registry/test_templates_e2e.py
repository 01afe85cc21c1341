"""ConfigTemplate end to end on a live ``pitwall`` with real pods: kubectl applies the template and a
Deployment, py-consul puts a KV value, the ConfigMap changes and the restart action rolls the pods, which
then see the new value."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest

from pitwall.config import load_settings
from tests.conftest import LiveServer
from tests.registry.test_reload_pods import apply, kubectl_for, wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

APP = "import os, time; print('GREETING=' + os.environ.get('GREETING', '?'), flush=True); time.sleep(3600)"

TEMPLATE = {
    "apiVersion": "pitwall.dev/v1", "kind": "ConfigTemplate",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"template": '{{ key "web/greeting" | toUpper }}',
             "target": {"configMap": "web-config", "key": "GREETING"},
             "action": "restart", "deployments": ["web"]},
}
DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                 "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "app", "image": "python", "command": [sys.executable, "-c", APP],
                                 "envFrom": [{"configMapRef": {"name": "web-config"}}]}]}}},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = load_settings(data_dir=tmp_path_factory.mktemp("ctpl") / "data", listen="127.0.0.1:0",
                      storage={"fsync": False})
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


def test_a_kv_put_rolls_the_deployment_through_its_template(server: LiveServer, tmp_path: Path) -> None:
    kubectl = kubectl_for(server, tmp_path)
    c = consul.Consul(host="127.0.0.1", port=server.port)
    assert "configtemplates.pitwall.dev" in kubectl("get", "crd")
    c.kv.put("web/greeting", "hello")
    apply(kubectl, [json.dumps(TEMPLATE)])
    wait_for(lambda: "HELLO" in kubectl("get", "configmap", "web-config", "-o", "jsonpath={.data.GREETING}"),
             "the first render")
    assert "True" in kubectl("get", "configtemplate", "web")  # the Rendered printer column
    apply(kubectl, [json.dumps(DEPLOYMENT)])
    kubectl("rollout", "status", "deployment/web", "--timeout=90s")
    wait_for(lambda: "GREETING=HELLO" in kubectl("logs", "deployment/web"), "the first pod's output")
    first = {p["metadata"]["name"] for p in json.loads(kubectl("get", "pods", "-l", "app=web", "-o", "json"))["items"]}

    c.kv.put("web/greeting", "bonjour")
    wait_for(lambda: kubectl("get", "configmap", "web-config", "-o", "jsonpath={.data.GREETING}") == "BONJOUR",
             "the ConfigMap to follow the KV")
    wait_for(lambda: "last-reloaded-from" in kubectl("get", "deployment", "web", "-o", "json"), "the restart")
    kubectl("rollout", "status", "deployment/web", "--timeout=90s")
    wait_for(lambda: "GREETING=BONJOUR" in kubectl("logs", "deployment/web"), "the new pod's output")
    pods = json.loads(kubectl("get", "pods", "-l", "app=web", "-o", "json"))["items"]
    names = {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}
    assert names and not names & first

    status = json.loads(kubectl("get", "configtemplate", "web", "-o", "json"))["status"]
    assert status["actions"] >= 1 and status["dependencies"]["keys"] == ["web/greeting"]
    events = kubectl("get", "events", "--field-selector", "involvedObject.name=web", "-o", "json")
    assert "Rendered" in events and "Reloaded" in events
