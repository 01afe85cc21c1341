"""The Kubernetes API on the real `pitwall server`, beside the Prometheus API on the same port.

`pitwall kubeconfig` writes the context; kubectl (which sends tokens only
over TLS) talks to the server started from its CLI with TLS and a token.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port, start_pitwall_process, wait_ready
from tests.kube.conftest import KUBECTL

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TOKEN = "pitwall-kube-token-0123456789"


def _tls_config(tmp_path: Path) -> Path:
    """pitwall.yaml with a fresh self-signed certificate (kubectl sends tokens only over TLS) and a token."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({"tls_cert_file": str(cert), "tls_key_file": str(key), "storage": {"fsync": False},
                                   "auth_tokens": [{"token": TOKEN, "scopes": ["read", "write"]}]}))
    return cfg


def _kubectl_for(url: str, tmp_path: Path) -> Callable[..., str]:
    """kubectl with the context ``pitwall kubeconfig`` prints for ``url``."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(subprocess.run(
        [sys.executable, "-m", "pitwall.cli.main", "kubeconfig", "--server", url, "--token", TOKEN],
        capture_output=True, text=True, check=True).stdout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env.update(KUBECONFIG=str(kubeconfig), HOME=str(tmp_path))

    def kubectl(*args: str, stdin: str | None = None, timeout: float = 60) -> str:
        p = subprocess.run([KUBECTL, f"--cache-dir={tmp_path / 'kcache'}", *args], input=stdin, env=env,
                           capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, f"kubectl {' '.join(args)}: {p.stdout}\n{p.stderr}"
        return p.stdout

    return kubectl


def test_kubectl_against_pitwall_server(tmp_path: Path) -> None:
    if not os.path.exists(KUBECTL):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    cfg = _tls_config(tmp_path)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir()
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(url, proc=proc, verify=False)
        kubectl = _kubectl_for(url, tmp_path)
        assert "default" in kubectl("get", "namespaces")
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop", "labels": {"app": "shop"}},
              "data": {"LOG_LEVEL": "info"}}
        assert "created" in kubectl("apply", "-f", "-", stdin=json.dumps(cm))
        got = json.loads(kubectl("get", "configmap", "shop", "-o", "json"))
        assert got["data"] == {"LOG_LEVEL": "info"} and got["metadata"]["resourceVersion"]
        # The Prometheus API below /api/v1 still answers on the same port.
        r = httpx.get(url + "/api/v1/query", params={"query": "1+1"}, verify=False,
                      headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["data"]["result"][1] == "2"
        # Probes are open, as kube-apiserver's are; the objects are not.
        assert httpx.get(url + "/livez", verify=False).status_code == 200
        assert httpx.get(url + "/api/v1/namespaces", verify=False).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    # The objects survive a restart (the state store is in the data directory).
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(url, proc=proc, verify=False)
        r = httpx.get(url + "/api/v1/namespaces/default/configmaps/shop", verify=False,
                      headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["data"] == {"LOG_LEVEL": "info"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


APP = """
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (os.environ["VERSION"] + " " + os.environ["HOSTNAME"]).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
print("serving", os.environ["VERSION"], flush=True)
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""


def _manifests(version: str) -> str:
    deploy = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                     "terminationGracePeriodSeconds": 5,
                     "containers": [{"name": "web", "image": "python:3.11", "command": [sys.executable, "-c", APP],
                                     "env": [{"name": "VERSION", "value": version}],
                                     "ports": [{"name": "http", "containerPort": 8080}],
                                     "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                                        "periodSeconds": 1}}]}}}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}
    return json.dumps(deploy) + "\n" + json.dumps(svc)


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(p.name))
    return out


def test_a_deployment_behind_a_service_on_pitwall_server(tmp_path: Path) -> None:
    """Deployment + Service applied with kubectl to the real server: pods run as processes, the rollout
    completes, the ClusterIP answers, a new version rolls out, and no process outlives the server."""
    if not os.path.exists(KUBECTL):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    cfg = _tls_config(tmp_path)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir()
    pods: list[int] = []
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(url, proc=proc, verify=False)
        kubectl = _kubectl_for(url, tmp_path)
        kubectl("apply", "-f", "-", stdin=_manifests("v1"))
        kubectl("rollout", "status", "deployment/web", "--timeout=90s", timeout=100)
        cluster_ip = json.loads(kubectl("get", "service", "web", "-o", "json"))["spec"]["clusterIP"]
        assert cluster_ip.startswith("127.")
        answers = {httpx.get(f"http://{cluster_ip}:80/", timeout=5).text for _ in range(20)}
        assert {a.split()[0] for a in answers} == {"v1"} and len(answers) == 2  # both replicas answer
        assert "serving v1" in kubectl("logs", "deployment/web")
        kubectl("apply", "-f", "-", stdin=_manifests("v2"))
        kubectl("rollout", "status", "deployment/web", "--timeout=90s", timeout=100)
        assert httpx.get(f"http://{cluster_ip}:80/", timeout=5).text.startswith("v2")
        assert "2" in kubectl("rollout", "history", "deployment/web")
        pods = _children(proc.pid)
        assert len(pods) >= 2  # the pods are pitwall's child processes
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    alive = [pid for pid in pods if Path(f"/proc/{pid}").exists()]
    assert not alive, f"pod processes outlived the server: {alive}"
