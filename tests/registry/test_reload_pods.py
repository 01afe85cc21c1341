"""Reload on config change over real pods: kubectl changes a ConfigMap, the new pods see the new value."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pitwall.config import load_settings
from tests.conftest import LiveServer

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

# Prints its environment's GREETING once, then idles until stopped.
APP = "import os, time; print('GREETING=' + os.environ.get('GREETING', '?'), flush=True); time.sleep(3600)"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = load_settings(data_dir=tmp_path_factory.mktemp("reload") / "data", listen="127.0.0.1:0",
                      storage={"fsync": False})
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


def kubectl_for(srv: LiveServer, tmp: Path) -> Callable[..., str]:
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.skip("kubectl is not installed")
    env = {"HOME": str(tmp), "PATH": os.environ.get("PATH", "")}

    def run(*args: str, stdin: str | None = None) -> str:
        out = subprocess.run([exe, "--server", srv.url, f"--cache-dir={tmp / 'kcache'}", *args], input=stdin,
                             capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout
    return run


def manifests(greeting: str) -> list[str]:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config", "namespace": "default"},
          "data": {"GREETING": greeting}}
    d: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "annotations": {"reloader.stakater.com/auto": "true"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": "python", "command": [sys.executable, "-c", APP],
                                     "envFrom": [{"configMapRef": {"name": "web-config"}}]}]}}}}
    return [json.dumps(cm), json.dumps(d)]


def apply(kubectl: Callable[..., str], docs: list[str]) -> None:
    for doc in docs:
        kubectl("apply", "-f", "-", stdin=doc)


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_changing_the_configmap_rolls_pods_that_see_the_new_value(server: LiveServer, tmp_path: Path) -> None:
    kubectl = kubectl_for(server, tmp_path)
    apply(kubectl, manifests("hello"))
    kubectl("rollout", "status", "deployment/web", "--timeout=90s")
    wait_for(lambda: "GREETING=hello" in kubectl("logs", "deployment/web"), "the first pod's output")
    first = json.loads(kubectl("get", "pods", "-l", "app=web", "-o", "json"))["items"]

    apply(kubectl, manifests("bonjour"))  # only the ConfigMap's data changed
    wait_for(lambda: "last-reloaded-from" in kubectl("get", "deployment", "web", "-o", "json"), "the reload")
    kubectl("rollout", "status", "deployment/web", "--timeout=90s")
    wait_for(lambda: "GREETING=bonjour" in kubectl("logs", "deployment/web"), "the new pod's output")

    pods = json.loads(kubectl("get", "pods", "-l", "app=web", "-o", "json"))["items"]
    names = {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}
    assert names and not names & {p["metadata"]["name"] for p in first}  # new pods, not the old ones
    d = json.loads(kubectl("get", "deployment", "web", "-o", "json"))
    source = json.loads(d["spec"]["template"]["metadata"]["annotations"]["reloader.stakater.com/last-reloaded-from"])
    assert source["type"] == "CONFIGMAP" and source["name"] == "web-config"
    events = kubectl("get", "events", "--field-selector", "reason=Reloaded", "-o", "json")
    assert "web-config changed" in events
