"""kubectl applies Sloth's own Kubernetes example to a real ``pitwall server``: the CRD is built in, the
controller loads the rules into the rule manager and writes Sloth's status, the budget API lists the SLO."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, start_pitwall_process, wait_ready
from tests.kube.conftest import KUBECTL
from tests.kube.test_pitwall_server import TOKEN, _kubectl_for, _tls_config

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "wave2" / "sloth" / "examples"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180),
              pytest.mark.skipif(not EXAMPLES.exists(), reason="../shared is not beside the repo")]


def test_kubectl_apply_sloth_example(tmp_path: Path) -> None:
    if not os.path.exists(KUBECTL):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    example = (EXAMPLES / "k8s-getting-started.yml").read_text()
    cfg = _tls_config(tmp_path)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir()
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(url, proc=proc, verify=False)
        kubectl = _kubectl_for(url, tmp_path)
        assert "prometheusservicelevels.sloth.slok.dev" in kubectl("get", "crd")
        kubectl("create", "namespace", "monitoring")
        assert "created" in kubectl("apply", "-f", "-", stdin=example)
        status: dict[str, object] = {}
        for _ in range(200):
            obj = json.loads(kubectl("get", "psl", "sloth-slo-my-service", "-n", "monitoring", "-o", "json"))
            status = obj.get("status") or {}
            if status.get("promOpRulesGenerated"):
                break
            time.sleep(0.1)
        assert status["promOpRulesGenerated"] is True and status["processedSLOs"] == 1
        table = kubectl("get", "psl", "-n", "monitoring")
        assert "myservice" in table.splitlines()[1]  # the CRD's SERVICE printer column
        headers = {"Authorization": f"Bearer {TOKEN}"}
        rules = httpx.get(url + "/api/v1/rules", headers=headers, verify=False).json()
        groups = [g["name"] for g in rules["data"]["groups"] if g["file"] == "slo:monitoring/sloth-slo-my-service"]
        assert groups == ["sloth-slo-alerts-myservice-requests-availability",
                          "sloth-slo-meta-recordings-myservice-requests-availability",
                          "sloth-slo-sli-recordings-myservice-requests-availability"]
        # A restart rebuilds the generated groups from the stored object (nothing was written to a file).
        proc.terminate()
        proc.wait(timeout=30)
        proc = start_pitwall_process(data, port, config=cfg)
        wait_ready(url, proc=proc, verify=False)
        again: list[str] = []
        for _ in range(200):
            rules = httpx.get(url + "/api/v1/rules", headers=headers, verify=False).json()
            again = [g["name"] for g in rules["data"]["groups"] if g["file"] == "slo:monitoring/sloth-slo-my-service"]
            if again:
                break
            time.sleep(0.1)
        assert again == groups
        slos = httpx.get(url + "/api/slo/v1/slos", headers=headers, verify=False).json()["slos"]
        assert [s["name"] for s in slos] == ["myservice-requests-availability"]
        assert slos[0]["objective"] == pytest.approx(0.999) and slos[0]["error_ratio_period"] is None  # no data
        kubectl("delete", "psl", "sloth-slo-my-service", "-n", "monitoring")
        for _ in range(200):
            rules = httpx.get(url + "/api/v1/rules", headers=headers, verify=False).json()
            if not any(g["file"].startswith("slo:") for g in rules["data"]["groups"]):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("generated groups not removed")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
