"""The issue's proof end to end on a live `pitwall server` with real pods: a `git push` into a watched bare
repository (pitwall's post-receive hook, installed by the CLI) starts a pipeline whose deploy job rolls out a
Deployment with kubectl; the rollout and the deploy are change events, and an incident raised afterwards shows
both on its timeline (the postmortem draft's)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port, pod_subnets, start_pitwall_process, stop_pitwall_process, wait_ready
from tests.incidents.conftest import ROUTING_KEY, incidents_config
from tests.pipelines.conftest import make_repo
from tests.pipelines.test_push_hooks import commit, git, started

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

APP = ("import http.server, os\n"
       "class H(http.server.BaseHTTPRequestHandler):\n"
       "    def do_GET(self):\n"
       "        self.send_response(200); self.end_headers(); self.wfile.write(os.environ['VERSION'].encode())\n"
       "    def log_message(self, *a): pass\n"
       "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n")


def _manifest(version: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": f"web:{version}",
                                     "command": [sys.executable, "-u", "-c", APP],
                                     "env": [{"name": "VERSION", "value": version}],
                                     "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                                     "ports": [{"containerPort": 8080}]}]}}}})


def _ci(kubeconfig: Path) -> str:
    return ("variables:\n"
            f"  KUBE_CONFIG: {kubeconfig}\n"
            "deploy:\n"
            "  script:\n"
            "    - kubectl --kubeconfig \"$KUBE_CONFIG\" apply -f deploy.yaml\n"
            "    - kubectl --kubeconfig \"$KUBE_CONFIG\" rollout status deployment/web --timeout=120s\n"
            "  environment: production\n")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A live server watching a bare repository (polled once an hour: only the push hook can start it), the
    bare repository and a working clone pushing to it."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "pitwall",
        "clusters": [{"name": "pitwall", "cluster": {"server": url}}],
        "users": [{"name": "pitwall", "user": {}}],
        "contexts": [{"name": "pitwall", "context": {"cluster": "pitwall", "user": "pitwall",
                                                      "namespace": "default"}}]}))
    seed = make_repo(tmp_path / "seed", {".gitlab-ci.yml": _ci(kubeconfig), "deploy.yaml": _manifest("v1")})
    bare = tmp_path / "shop.git"
    git("clone", "-q", "--bare", str(seed), str(bare))
    work = tmp_path / "work"
    git("clone", "-q", str(bare), str(work))
    cfg = tmp_path / "pitwall.yaml"
    # A /24 of its own: other servers on this machine take pod addresses from 127.42.0.2 up.
    cfg.write_text(yaml.safe_dump({
        "storage": {"fsync": False}, "kube": {"pod_cidr": pod_subnets()[0]},
        "pipelines": {"watch": [{"repo": str(bare)}], "watch_interval": "1h"},
        "incidents": incidents_config()}))
    data = tmp_path / "data"
    data.mkdir()
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(url, timeout=60, proc=proc)
        yield url, bare, work
    finally:
        stop_pitwall_process(proc)


def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what}: not reached in {timeout}s; last: {last!r}")


def test_a_push_deploys_and_the_deploy_is_on_the_incident_timeline(server: tuple[str, Path, Path]) -> None:
    url, bare, work = server
    env = {**os.environ, "PITWALL_URL": url}
    hook = subprocess.run([sys.executable, "-m", "pitwall.cli.main", "pipelines", "hook", "install", str(bare),
                           "--project", "shop"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert hook.returncode == 0, hook.stderr
    sha = commit(work, "deploy.yaml", _manifest("v2"))
    push = subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=work, capture_output=True, text=True,
                          timeout=60, check=True)
    [pid] = started(push.stderr)
    with httpx.Client(base_url=url, timeout=10) as c:
        pipeline = _until(lambda: (p := c.get(f"/api/pipelines/v1/pipelines/{pid}").json())["status"]
                          in ("success", "failed", "canceled") and p, 240, "the pipeline to finish")
        trace = c.get(f"/api/pipelines/v1/jobs/{pipeline['jobs'][0]['id']}/trace").text
        assert pipeline["status"] == "success" and pipeline["source"] == "push" and pipeline["sha"] == sha, trace
        assert 'deployment "web" successfully rolled out' in trace
        d = c.get("/apis/apps/v1/namespaces/default/deployments/web").json()
        assert d["status"]["availableReplicas"] == 1
        assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "web:v2"
        # an incident raised now: its timeline holds the rollout (the Deployment controller's change event) and
        # the pipeline's deploy (the runner's), both from the hour before it
        r = c.post("/v2/enqueue", json={"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "after",
                                        "payload": {"summary": "web errors after the deploy", "source": "test",
                                                    "severity": "error"}})
        assert r.status_code == 202, r.text
        incident = _until(lambda: c.get("/pagerduty/incidents").json()["incidents"], 30, "the incident")[0]
        draft = c.get(f"/pagerduty/incidents/{incident['id']}/postmortem").text
        timeline = draft.split("## Timeline (UTC)")[1].split("## Root cause")[0]
        assert "Deployment default/web: rollout of revision 1 started (web:v2)" in timeline, timeline
        assert f"pipeline #{pid} job deploy deployed main@{sha[:8]} to production" in timeline, timeline
