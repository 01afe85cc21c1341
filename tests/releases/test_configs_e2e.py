"""Tracked configs on a live `pitwall server` with real pods: the app answers the value of a ConfigMap key it
reads from its environment. A change to the ConfigMap alone starts an analysis; the canary answers the new
value while the primary, on its ``-primary`` copy, keeps the old one; the promotion rolls the primary onto the
new value; deleting the Canary lets the garbage collector remove the copy."""

from __future__ import annotations

import sys
import time
from typing import Any

import httpx
import pytest

from tests.releases import test_e2e
from tests.releases.test_e2e import API, APP, DEPLOY, _status, _story, _until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

server = test_e2e.server  # the live server fixture (one pitwall process per test)
CM = "/api/v1/namespaces/default/configmaps"


def _deployment() -> dict[str, Any]:
    env = [{"name": "VERSION", "valueFrom": {"configMapKeyRef": {"name": "podinfo-config", "key": "color"}}},
           {"name": "FAIL", "value": "0"}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "podinfo"}},
                     "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": {
                         "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "app", "image": "podinfo:v1",
                                         "command": [sys.executable, "-u", "-c", APP], "env": env,
                                         "ports": [{"name": "http", "containerPort": 8080}]}]}}}}


def _set_color(c: httpx.Client, color: str) -> None:
    cm = c.get(f"{CM}/podinfo-config").json()
    cm["data"] = {"color": color}
    assert c.put(f"{CM}/podinfo-config", json=cm).status_code == 200


def test_a_configmap_change_is_analysed_and_promoted(server: httpx.Client) -> None:
    c = server
    base = str(c.base_url).rstrip("/")
    assert c.post(CM, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "podinfo-config"},
                            "data": {"color": "blue"}}).status_code == 201
    assert c.post(DEPLOY, json=_deployment()).status_code == 201
    hold = {"name": "hold", "type": "confirm-promotion", "url": f"{base}/flagger-loadtester/gate/halt"}
    canary = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
              "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                       "progressDeadlineSeconds": 120, "service": {"port": 80, "targetPort": 8080},
                       "analysis": {"interval": "2s", "threshold": 2, "maxWeight": 50, "stepWeight": 50,
                                    "webhooks": [hold]}}}
    assert c.post(API, json=canary).status_code == 201
    _until(lambda: _status(c).get("phase") == "Initialized", 90, "Initialized", lambda: _story(c))
    assert _status(c)["trackedConfigs"].keys() == {"configmap/podinfo-config"}
    assert c.get(f"{CM}/podinfo-config-primary").json()["data"] == {"color": "blue"}
    ip = c.get("/api/v1/namespaces/default/services/podinfo").json()["spec"]["clusterIP"]
    url = f"http://{ip}/"
    _until(lambda: httpx.get(url, timeout=5).text == "blue", 60, "blue from the primary")
    # only the ConfigMap changes: an analysis starts; at 50/50 the canary says green, the primary still blue
    _set_color(c, "green")
    _until(lambda: _status(c).get("phase") in ("Progressing", "WaitingPromotion"), 30, "the analysis",
           lambda: _story(c))
    _until(lambda: httpx.get(url, timeout=5).text == "green", 60, "the canary answering green", lambda: _story(c))
    answers = {httpx.get(url, timeout=5).text for _ in range(40)}
    assert answers == {"blue", "green"}
    assert c.get(f"{CM}/podinfo-config-primary").json()["data"] == {"color": "blue"}
    # release the hold: promoted, the primary's pods roll onto the new copy
    fresh = c.get(f"{API}/podinfo").json()
    fresh["spec"]["analysis"]["webhooks"] = []
    assert c.put(f"{API}/podinfo", json=fresh).status_code == 200
    _until(lambda: _status(c).get("phase") == "Succeeded", 90, "Succeeded", lambda: _story(c))
    assert c.get(f"{CM}/podinfo-config-primary").json()["data"] == {"color": "green"}
    deadline = time.monotonic() + 60
    while {httpx.get(url, timeout=5).text for _ in range(10)} != {"green"}:
        assert time.monotonic() < deadline, "the primary still answers blue"
        time.sleep(0.5)
    # the Canary goes: its -primary copy goes with it (owner reference)
    assert c.delete(f"{API}/podinfo").status_code == 200
    _until(lambda: c.get(f"{CM}/podinfo-config-primary").status_code == 404, 60, "the copy removed")
    assert c.get(f"{CM}/podinfo-config").status_code == 200
