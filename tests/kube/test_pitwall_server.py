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
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port, start_pitwall_process, wait_ready
from tests.kube.conftest import KUBECTL

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TOKEN = "pitwall-kube-token-0123456789"


def test_kubectl_against_pitwall_server(tmp_path: Path) -> None:
    if not os.path.exists(KUBECTL):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({
        "tls_cert_file": str(cert), "tls_key_file": str(key), "storage": {"fsync": False},
        "auth_tokens": [{"token": TOKEN, "scopes": ["read", "write"]}],
    }))
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir()
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(url, proc=proc, verify=False)
        kc = subprocess.run([sys.executable, "-m", "pitwall.cli.main", "kubeconfig", "--server", url,
                             "--token", TOKEN], capture_output=True, text=True, check=True)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(kc.stdout)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env.update(KUBECONFIG=str(kubeconfig), HOME=str(tmp_path))

        def kubectl(*args: str, stdin: str | None = None) -> str:
            p = subprocess.run([KUBECTL, f"--cache-dir={tmp_path / 'kcache'}", *args], input=stdin, env=env,
                               capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, f"kubectl {' '.join(args)}: {p.stdout}\n{p.stderr}"
            return p.stdout

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
