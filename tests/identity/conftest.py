"""A real `pitwall server` over TLS (kubectl sends tokens only over TLS) and kubectl for one token."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port, start_pitwall_process, wait_ready
from tests.kube.conftest import KUBECTL


def tls_pair(d: Path) -> tuple[Path, Path]:
    cert, key = d / "tls.crt", d / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


class Pitwall:
    """`pitwall server` in a subprocess with ``config`` plus a fresh TLS certificate."""

    def __init__(self, root: Path, config: dict[str, Any], port: int | None = None) -> None:
        self.root = root
        cert, key = tls_pair(root)
        self.cert = cert
        cfg = {"tls_cert_file": str(cert), "tls_key_file": str(key), "storage": {"fsync": False}, **config}
        self.config = root / "pitwall.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.port = port or free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.data = root / "data"
        self.data.mkdir()
        self.proc = start_pitwall_process(self.data, self.port, config=self.config)
        wait_ready(self.url, proc=self.proc, verify=False)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kubectl_as(self, token: str, name: str) -> Callable[..., subprocess.CompletedProcess[str]]:
        """kubectl with a context holding ``token``; returns the completed process (check it yourself)."""
        if not os.path.exists(KUBECTL):
            pytest.skip(f"kubectl is not installed at {KUBECTL}")
        home = self.root / f"kube-{name}"
        home.mkdir(exist_ok=True)
        kubeconfig = home / "config"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "p",
            "clusters": [{"name": "p", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "p", "context": {"cluster": "p", "user": name, "namespace": "default"}}],
        }))
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env.update(KUBECONFIG=str(kubeconfig), HOME=str(home))

        def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run([KUBECTL, f"--cache-dir={home / 'cache'}", *args], input=stdin, env=env,
                                  capture_output=True, text=True, timeout=60)

        return kubectl
