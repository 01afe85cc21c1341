"""Flagger's ``type: kubectl`` load tester task on a live `pitwall server` (TLS and a token, as kubectl sends
tokens only over TLS): the real kubectl runs against the server as the configured ServiceAccount, and Kubernetes
RBAC decides: forbidden until a RoleBinding grants it, then Flagger's 200 with the output."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port, pod_subnets, start_pitwall_process, stop_pitwall_process, wait_ready
from tests.kube.conftest import KUBECTL

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
TOKEN = "kubectl-task-admin-token-0123456789"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[httpx.Client]:
    if not os.path.exists(KUBECTL):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({
        "tls_cert_file": str(cert), "tls_key_file": str(key), "storage": {"fsync": False},
        "kube": {"pod_cidr": pod_subnets()[0]}, "auth_tokens": [{"token": TOKEN, "scopes": ["admin"]}],
        "releases": {"loadtester": {"kubectl_service_account": "default/loadtester"}}}))
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(f"https://127.0.0.1:{port}", timeout=60, proc=proc, verify=False)
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False, timeout=60,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            yield c
    finally:
        stop_pitwall_process(proc)


def task(c: httpx.Client, cmd: str) -> httpx.Response:
    return c.post("/flagger-loadtester/", json={
        "name": "podinfo", "namespace": "default", "phase": "Progressing", "checksum": "x",
        "metadata": {"type": "kubectl", "cmd": cmd, "returnCmdOutput": "true"}})


def test_kubectl_task_runs_as_the_service_account_under_rbac(server: httpx.Client) -> None:
    c = server
    r = task(c, "get configmaps -o name")
    assert r.status_code == 400 and "ServiceAccount default/loadtester does not exist" in r.text
    assert c.post("/api/v1/namespaces/default/serviceaccounts",
                  json={"metadata": {"name": "loadtester"}}).status_code == 201
    assert c.post("/api/v1/namespaces/default/configmaps",
                  json={"metadata": {"name": "shop"}, "data": {"k": "v"}}).status_code == 201
    r = task(c, "get configmaps -o name")
    assert r.status_code == 500, r.text
    assert r.text.startswith("command get configmaps -o name failed: ") and r.text.endswith(": exit status 1")
    assert 'User "system:serviceaccount:default:loadtester" cannot list resource "configmaps"' in r.text
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/default"
    assert c.post(f"{rbac}/roles", json={"metadata": {"name": "loadtester"}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}).status_code == 201
    assert c.post(f"{rbac}/rolebindings", json={
        "metadata": {"name": "loadtester"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "loadtester"},
        "subjects": [{"kind": "ServiceAccount", "name": "loadtester", "namespace": "default"}]}).status_code == 201
    r = task(c, "get configmaps -o name")
    assert (r.status_code, r.text) == (200, "configmap/shop\n")
    r = task(c, "get configmap shop -o jsonpath={.data.k}")
    assert (r.status_code, r.text) == (200, "v")
    r = task(c, "get secrets")  # still only what the Role grants
    assert r.status_code == 500 and 'cannot list resource "secrets"' in r.text
    r = task(c, "get configmaps --as=system:admin")
    assert r.status_code == 400
