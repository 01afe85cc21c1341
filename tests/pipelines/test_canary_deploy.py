"""End to end on a live `pitwall server` with real pods: a pipeline's deploy job applies a Deployment with
kubectl and waits for its Flagger Canary, with ``pitwall releases wait`` in its script or by the runner
(``PITWALL_CANARY``). A revision whose rollout gate
answers 200 is promoted (job and deployment succeed); one whose gate answers 500 is rolled back (job failed
with the canary's message, deployment failed, DORA's change failure rate counts it)."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port, start_pitwall_process, stop_pitwall_process, wait_ready
from tests.pipelines.conftest import make_repo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

SRC = Path(__file__).resolve().parents[2] / "src"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"
CANARY = "/apis/flagger.app/v1beta1/namespaces/default/canaries"
APP = ("import http.server, os\n"
       "class H(http.server.BaseHTTPRequestHandler):\n"
       "    def do_GET(self):\n"
       "        self.send_response(200); self.end_headers(); self.wfile.write(os.environ['VERSION'].encode())\n"
       "    def log_message(self, *a): pass\n"
       "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n")

CI = """
deploy:
  script:
    - sed "s/__VERSION__/$VERSION/" deploy.yaml | kubectl --kubeconfig "$KUBE_CONFIG" apply -f -
    - if [ "$MODE" = cli ]; then $PITWALL releases wait default/podinfo --timeout 4m --interval 0.5; fi
  environment: production
"""


def _manifest(version: str) -> str:
    d = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo", "namespace": "default"},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "podinfo"}},
                  "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": {
                      "terminationGracePeriodSeconds": 1,
                      "containers": [{"name": "app", "image": f"podinfo:{version}",
                                      "command": [sys.executable, "-u", "-c", APP],
                                      "env": [{"name": "VERSION", "value": version}],
                                      "ports": [{"name": "http", "containerPort": 8080}]}]}}}}
    return yaml.safe_dump(d).replace(f"podinfo:{version}", "podinfo:__VERSION__").replace(
        f"value: {version}", "value: __VERSION__")


class Gate:
    """The canary's rollout webhook: answers ``status`` (200 lets the analysis go on, 500 fails a check)."""

    def __init__(self) -> None:
        self.status = 200
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(gate.status)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/gate"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"fsync": False}}))
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    proc = start_pitwall_process(data, port, config=cfg)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=60, proc=proc)
        yield url
    finally:
        stop_pitwall_process(proc)


def _until(check: Any, timeout: float, what: str, story: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what}: not reached in {timeout}s; last: {last!r}\n{story() if story else ''}")


def _run(url: str, repo: Path, version: str, kubeconfig: Path, mode: str = "cli") -> dict[str, Any]:
    """``pitwall pipelines run --wait`` with the variables the deploy job needs (the runner passes a job only
    PATH, HOME and the like from its own environment, so the CLI and kubeconfig come in as variables).
    ``mode`` cli: the script waits with ``pitwall releases wait``; auto: the runner waits (PITWALL_CANARY)."""
    cli = f"{sys.executable} -m pitwall.cli.main"
    variables = [f"VERSION={version}", f"KUBE_CONFIG={kubeconfig}", f"PITWALL={cli}", f"PITWALL_URL={url}",
                 f"PYTHONPATH={SRC}", f"MODE={mode}"]
    if mode == "auto":
        variables += ["PITWALL_CANARY=default/podinfo", "PITWALL_CANARY_TIMEOUT=4m"]
    args = [a for v in variables for a in ("--var", v)]
    r = subprocess.run([sys.executable, "-m", "pitwall.cli.main", "pipelines", "run", "--repo", str(repo), *args,
                        "--wait", "--output", "json"], env={**os.environ, "PITWALL_URL": url},
                       capture_output=True, text=True, timeout=360, check=False)
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def _trace(url: str, job_id: int) -> str:
    return httpx.get(f"{url}/api/pipelines/v1/jobs/{job_id}/trace").text


def test_deploy_job_waits_for_the_canary(server: str, tmp_path: Path) -> None:
    url = server
    gate = Gate()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "pitwall",
        "clusters": [{"name": "pitwall", "cluster": {"server": url}}],
        "users": [{"name": "pitwall", "user": {}}],
        "contexts": [{"name": "pitwall", "context": {"cluster": "pitwall", "user": "pitwall",
                                                      "namespace": "default"}}]}))
    repo = make_repo(tmp_path / "podinfo", {".gitlab-ci.yml": CI, "deploy.yaml": _manifest("v1")})
    with httpx.Client(base_url=url, timeout=10) as c:
        v1 = yaml.safe_load(_manifest("v1").replace("__VERSION__", "v1"))
        assert c.post(DEPLOY, json=v1).status_code == 201
        # no traffic reaches the canary here: its verdict is the rollout gate's alone
        canary = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                  "metadata": {"name": "podinfo", "annotations": {"releases.pitwall.dev/no-traffic": "pass"}},
                  "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                           "progressDeadlineSeconds": 600, "service": {"port": 80, "targetPort": 8080},
                           "analysis": {"interval": "1s", "threshold": 2, "maxWeight": 50, "stepWeight": 25,
                                        "webhooks": [{"name": "gate", "type": "rollout", "url": gate.url,
                                                      "timeout": "5s"}]}}}
        assert c.post(CANARY, json=canary).status_code == 201
        _until(lambda: (c.get(f"{CANARY}/podinfo").json().get("status") or {}).get("phase") == "Initialized",
               180, "Initialized", lambda: (c.get(f"{CANARY}/podinfo").json().get("status"),
                                            c.get("/api/v1/namespaces/default/pods").json()["items"]))

        good = _run(url, repo, "v2", kubeconfig)
        job = good["jobs"][0]
        trace = _trace(url, job["id"])
        assert good["status"] == "success", trace
        assert "canary default/podinfo Succeeded" in trace
        primary = c.get(f"{DEPLOY}/podinfo-primary").json()
        assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:v2"

        gate.status = 500
        bad = _run(url, repo, "v3", kubeconfig)
        job = bad["jobs"][0]
        trace = _trace(url, job["id"])
        assert bad["status"] == "failed", trace
        assert "canary default/podinfo Failed: Canary analysis failed, Deployment scaled to zero." in trace
        assert "Rolling back podinfo.default failed checks threshold reached 2" in trace
        primary = c.get(f"{DEPLOY}/podinfo-primary").json()
        assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:v2"

        # the runner waits by itself for a deploy job with PITWALL_CANARY
        gate.status = 200
        auto_good = _run(url, repo, "v4", kubeconfig, "auto")
        trace = _trace(url, auto_good["jobs"][0]["id"])
        assert auto_good["status"] == "success", trace
        assert "Waiting for the verdict of canary default/podinfo" in trace
        assert trace.index("canary default/podinfo Succeeded") < trace.index("Job succeeded")
        gate.status = 500
        auto_bad = _run(url, repo, "v5", kubeconfig, "auto")
        trace = _trace(url, auto_bad["jobs"][0]["id"])
        assert auto_bad["status"] == "failed", trace
        assert ("ERROR: Job failed: canary default/podinfo Failed: Canary analysis failed, Deployment scaled to "
                "zero.") in trace
        primary = c.get(f"{DEPLOY}/podinfo-primary").json()
        assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:v4"

        deps = c.get(f"/gitlab/api/v4/projects/{good['project_id']}/deployments").json()
        assert [(d["status"], d["deployable"]["pipeline"]["id"]) for d in deps] == [
            ("success", good["id"]), ("failed", bad["id"]), ("success", auto_good["id"]),
            ("failed", auto_bad["id"])]
        f = c.get("/api/pipelines/v1/dora", params={"environment": "production", "window": "1d"}).json()
        assert (f["changes"], f["failed_changes"], f["change_failure_rate"]) == (4, 2, 0.5)
    gate.server.shutdown()
    gate.server.server_close()
