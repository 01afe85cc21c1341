"""End to end on a real ``pitwall server`` process: the real ``chaos run`` drives pitwall through
``pitwall.chaos.ctk`` (a stressor seen in the pod's CPU metrics, then reverted), and pitwall killed with
SIGKILL mid-fault leaves nothing of the fault once it is started again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, start_pitwall_process, wait_ready

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow,
              pytest.mark.skipif(shutil.which("stress-ng") is None, reason="stress-ng not installed")]

BIN = Path(sys.executable).parent
CHAOS = BIN / "chaos"
GROUP = "/apis/chaos-mesh.org/v1alpha1/namespaces/default"
SLEEPER = "import time\nwhile True: time.sleep(0.2)\n"


class Server:
    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_pitwall_process(self.data, self.port)
        wait_ready(self.url, timeout=60, proc=self.proc)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def until(pred: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def deploy(s: Server, name: str) -> str:
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"terminationGracePeriodSeconds": 1,
                                           "containers": [{"name": "main", "image": "python:3.11",
                                                           "command": [sys.executable, "-u", "-c", SLEEPER]}]}}}}
    assert s.post("/apis/apps/v1/namespaces/default/deployments", body).status_code == 201

    def running() -> str | None:
        for p in s.get(f"/api/v1/namespaces/default/pods?labelSelector=app%3D{name}").json()["items"]:
            cs = (p.get("status") or {}).get("containerStatuses") or [{}]
            if "running" in (cs[0].get("state") or {}) and not p["metadata"].get("deletionTimestamp"):
                return str(p["metadata"]["name"])
        return None
    return str(until(running, 60))


def conditions(s: Server, kind: str, name: str) -> dict[str, str]:
    r = s.get(f"{GROUP}/{kind}/{name}")
    if r.status_code != 200:
        return {}
    return {c["type"]: c["status"] for c in (r.json().get("status") or {}).get("conditions") or []}


def stress_processes() -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().startswith("stress-ng"):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def _cores(q: str) -> float:
    if q.endswith("n"):
        return int(q[:-1]) / 1e9
    if q.endswith("m"):
        return int(q[:-1]) / 1e3
    return float(q)


def test_real_chaos_run_drives_pitwall_through_the_extension(server: Server, tmp_path: Path) -> None:
    pod = deploy(server, "burn")
    before = set(stress_processes())
    exp = {
        "title": "CPU stress on burn is seen and reverted", "description": "pitwall.chaos.ctk end to end",
        "configuration": {"pitwall_url": server.url},
        "steady-state-hypothesis": {"title": "pitwall answers PromQL", "probes": [
            {"type": "probe", "name": "promql-works", "tolerance": 1,
             "provider": {"type": "python", "module": "pitwall.chaos.ctk", "func": "query_promql",
                          "arguments": {"expr": "vector(1)"}}}]},
        "method": [
            {"type": "action", "name": "burn-cpu", "pauses": {"after": 4},
             "provider": {"type": "python", "module": "pitwall.chaos.ctk", "func": "start_fault",
                          "arguments": {"kind": "StressChaos", "name": "burn-cpu", "spec": {
                              "mode": "one", "duration": "60s", "selector": {"labelSelectors": {"app": "burn"}},
                              "stressors": {"cpu": {"workers": 1, "load": 100}}}}}},
            {"type": "probe", "name": "pod-cpu",
             "provider": {"type": "http", "url": "${pitwall_url}/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"}},
            {"type": "probe", "name": "slo", "provider": {"type": "python", "module": "pitwall.chaos.ctk",
                                                          "func": "slo_status", "arguments": {"name": "no-such-slo"}}},
        ],
        "rollbacks": [
            {"type": "action", "name": "stop-burn", "provider": {"type": "python", "module": "pitwall.chaos.ctk",
                                                               "func": "stop_fault",
                                                               "arguments": {"kind": "StressChaos", "name": "burn-cpu"}}}],
    }
    (tmp_path / "exp.json").write_text(json.dumps(exp))
    proc = subprocess.run([str(CHAOS), "run", "exp.json", "--journal-path", "journal.json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PITWALL_URL": server.url})
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert journal["status"] == "completed" and not journal["deviated"]
    runs = {r["activity"]["name"]: r for r in journal["run"]}
    assert runs["burn-cpu"]["status"] == "succeeded"
    usage = {p["metadata"]["name"]: p["containers"][0]["usage"]["cpu"]
             for p in runs["pod-cpu"]["output"]["body"]["items"]}
    # the sleeper alone uses ~0 (a shared machine gives the stressor what it can): the stressor counts as the pod's
    assert _cores(usage[pod]) > 0.1, usage
    assert runs["slo"]["status"] == "failed"
    assert "SLO 'no-such-slo' not found on pitwall" in "".join(runs["slo"]["exception"])
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]
    # the rollback deleted the object; pitwall reverted the fault before letting it go
    until(lambda: server.get(f"{GROUP}/stresschaos/burn-cpu").status_code == 404, 30)
    until(lambda: not (set(stress_processes()) - before), 10)
    metrics = server.get("/metrics").text
    assert 'pitwall_chaos_injections_total{action="stress",kind="StressChaos"} 1.0' in metrics
    assert 'pitwall_chaos_recoveries_total{action="stress",kind="StressChaos"} 1.0' in metrics


def test_killed_mid_fault_nothing_remains_after_restart(server: Server) -> None:
    pod = deploy(server, "victim")
    deploy(server, "warm")  # a pod-failure stops its pod's processes: the stressor gets a pod of its own
    before = set(stress_processes())
    for kind, name, spec in (
        ("podchaos", "hold", {"action": "pod-failure", "mode": "one", "duration": "8s",
                              "selector": {"labelSelectors": {"app": "victim"}}}),
        ("stresschaos", "heat", {"mode": "one", "duration": "8s", "selector": {"labelSelectors": {"app": "warm"}},
                                 "stressors": {"memory": {"workers": 1, "size": "32MB"}}}),
    ):
        kind_name = {"podchaos": "PodChaos", "stresschaos": "StressChaos"}[kind]
        body = {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": kind_name,
                "metadata": {"name": name, "namespace": "default"}, "spec": spec}
        assert server.post(f"{GROUP}/{kind}", body).status_code == 201
    until(lambda: conditions(server, "podchaos", "hold").get("AllInjected") == "True", 30)
    until(lambda: conditions(server, "stresschaos", "heat").get("AllInjected") == "True", 30)
    assert set(stress_processes()) - before
    server.kill9()  # mid-fault: the durations end while pitwall is down
    time.sleep(8)
    server.start()
    until(lambda: conditions(server, "podchaos", "hold").get("AllRecovered") == "True", 60)
    until(lambda: conditions(server, "stresschaos", "heat").get("AllRecovered") == "True", 60)
    until(lambda: not (set(stress_processes()) - before), 10)

    def pod_runs() -> bool:
        p = server.get(f"/api/v1/namespaces/default/pods/{pod}").json()
        cs = ((p.get("status") or {}).get("containerStatuses") or [{}])[0]
        return "running" in (cs.get("state") or {})
    until(pod_runs, 30)
    assert server.get(f"{GROUP}/stresschaos/heat").json()["status"]["experiment"]["desiredPhase"] == "Stop"
