"""The shop's shipped Kubernetes manifests: real Kubernetes YAML, and kubectl runs the shop on pitwall."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.demo import shop
from pitwall.demo.services import SERVICES, TOPOLOGY
from pitwall.node.podconfig import pod_path
from tests.conftest import free_port, start_pitwall_process, wait_ready
from tests.demo.test_supervisor import gone
from tests.kube.test_pitwall_server import KUBECTL

pytestmark = pytest.mark.timeout(300)

APPS = {*SERVICES, "loadgen"}


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in shop.manifests() if o["kind"] == kind}


def test_the_manifests_are_strictly_valid_kubernetes() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    docs = shop.manifests()
    assert [d["kind"] for d in docs[:2]] == ["Namespace", "ConfigMap"]
    for doc in docs:
        kv.validate(doc, "1.32", strict=True)  # raises ValidationError naming the field


def test_one_deployment_and_one_service_per_app_in_namespace_shop() -> None:
    deployments, services = _by_kind("Deployment"), _by_kind("Service")
    assert set(deployments) == set(services) == APPS
    assert shop.deployment_names() == list(deployments)
    kinds = [o["kind"] for o in shop.manifests()]
    assert kinds.index("Deployment") > max(i for i, k in enumerate(kinds) if k == "Service"), \
        "Services first: their variables must exist when the pods start"
    for name in APPS:
        assert services[name]["metadata"]["namespace"] == deployments[name]["metadata"]["namespace"] == "shop"
        assert services[name]["spec"]["selector"] == deployments[name]["spec"]["selector"]["matchLabels"] \
            == {"app": name}
        # A byte relay, as kube-proxy: no mesh hop spans between the services' own spans.
        assert [p.get("appProtocol") for p in services[name]["spec"]["ports"]] == ["tcp"]


@pytest.mark.parametrize("name", sorted(APPS))
def test_each_pod_runs_its_module_on_its_pod_ip_and_is_scraped(name: str) -> None:
    tpl = _by_kind("Deployment")[name]["spec"]["template"]
    assert tpl["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}
    (c,) = tpl["spec"]["containers"]
    assert c["image"]  # a real cluster needs one; pitwall's node ignores it
    assert c["command"][:2] == ["python", "-m"]
    module = c["command"][2]
    assert module == ("pitwall.demo.loadgen" if name == "loadgen" else f"pitwall.demo.services.{name}")
    assert importlib.util.find_spec(module) is not None
    args = c["args"]
    assert args[args.index("--host") + 1] == "$(POD_IP)"
    assert args[args.index("--port") + 1] == str(c["ports"][0]["containerPort"])
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in c["env"]
    assert c["envFrom"] == [{"configMapRef": {"name": "demo-scenario"}}]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_peers_are_found_through_the_service_variables(name: str) -> None:
    (c,) = _by_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    peers = [c["args"][i + 1] for i, a in enumerate(c["args"]) if a == "--peer"]
    assert peers == [f"{p}=http://$({p.upper()}_SERVICE_HOST):$({p.upper()}_SERVICE_PORT)" for p in TOPOLOGY[name]]


def test_the_runs_scenario_goes_into_the_configmap() -> None:
    s = shop.Scenario(seed=7, epoch="1700000000.000", day_s=120, otlp_url="http://127.0.0.1:9911")
    (cm,) = [shop._with_scenario(o, s) for o in shop.manifests() if o["kind"] == "ConfigMap"]
    assert cm["data"] == {"DEMO_SEED": "7", "DEMO_EPOCH": "1700000000.000", "DEMO_DAY_S": "120",
                          "PITWALL_OTLP_URL": "http://127.0.0.1:9911"}
    shipped = _by_kind("ConfigMap")["demo-scenario"]["data"]
    assert shipped["DEMO_EPOCH"] == ""  # plain kubectl apply: each pod starts the scenario when it starts


def test_rollout_problem_follows_kubectl_rollout_status() -> None:
    done = {"metadata": {"name": "web", "generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
                       "conditions": [{"type": "Available", "status": "True"}]}}
    assert shop.rollout_problem(done) == ""
    stale = {**done, "status": {**done["status"], "observedGeneration": 1}}
    assert "observed" in shop.rollout_problem(stale)
    updating = {**done, "status": {**done["status"], "updatedReplicas": 1}}
    assert "1 of 2 updated replicas" in shop.rollout_problem(updating)
    old_left = {**done, "status": {**done["status"], "replicas": 3}}
    assert "old replicas" in shop.rollout_problem(old_left)
    unavailable = {**done, "status": {**done["status"], "availableReplicas": 1}}
    assert "1 of 2 updated replicas are available" in shop.rollout_problem(unavailable)


def test_a_pods_python_is_the_servers_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    bindir = os.path.dirname(sys.executable)
    assert pod_path().split(os.pathsep) == [bindir, "/usr/bin", "/bin"]
    monkeypatch.setenv("PATH", os.pathsep.join(["/usr/bin", bindir]))
    assert pod_path().split(os.pathsep) == [bindir, "/usr/bin"]  # moved first, not repeated


def _pids_below(pid: int) -> list[int]:
    """Every process whose parent chain reaches ``pid`` (the pods run in their own sessions, still children)."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parents[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        todo += kids
    return out


@pytest.mark.slow
def test_kubectl_apply_of_the_manifests_runs_the_shop_on_pitwall_server(tmp_path: Path) -> None:
    """docs/quickstart.md: `kubectl apply -f shop.yaml` against a running `pitwall server` gives the shop:
    the Deployments roll out, the frontend answers through its ClusterIP (calling catalog and inventory
    through theirs), pitwall's default kubernetes-pods job scrapes every pod, and no pod outlives the server."""
    if not os.path.exists(KUBECTL):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir()
    proc = start_pitwall_process(data, port)
    kubeconfig = tmp_path / "kubeconfig"
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HOME=str(tmp_path))

    def kubectl(*args: str, timeout: float = 60) -> str:
        out = subprocess.run([KUBECTL, *args], env=env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stdout}{out.stderr}"
        return out.stdout

    pods: list[int] = []
    try:
        wait_ready(url, timeout=60, proc=proc)
        kubeconfig.write_text(subprocess.run([sys.executable, "-m", "pitwall.cli.main", "kubeconfig", "--server", url],
                                             capture_output=True, text=True, check=True, timeout=60).stdout)
        manifest = resources.files("pitwall.demo").joinpath(shop.MANIFEST)
        with resources.as_file(manifest) as path:
            kubectl("apply", "-f", str(path))
        for name in sorted(APPS):
            kubectl("rollout", "status", f"deployment/{name}", "-n", "shop", "--timeout=150s", timeout=160)
        ip = json.loads(kubectl("get", "service", "frontend", "-n", "shop", "-o", "json"))["spec"]["clusterIP"]
        home = httpx.get(f"http://{ip}:8080/", timeout=10)
        assert home.status_code == 200 and len(home.json()["products"]) == 9, home.text
        assert len(kubectl("get", "pods", "-n", "shop", "--no-headers").splitlines()) == len(APPS)
        up: dict[str, str] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and set(up) != APPS:
            r = httpx.get(url + "/api/v1/query", params={"query": 'up{namespace="shop"} == 1'}, timeout=10)
            up = {s["metric"]["app"]: s["metric"]["job"] for s in r.json()["data"]["result"]}
            time.sleep(2)
        assert set(up) == APPS and set(up.values()) == {"kubernetes-pods"}, up
        pods = _pids_below(proc.pid)
        assert len(pods) >= len(APPS)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert [p for p in pods if not gone(p, within_s=5)] == []
