"""ConfigMap and Secret history: kubectl changes them, `pitwall config history` shows who changed what."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from pitwall.cli.main import app
from pitwall.config import load_settings
from tests.conftest import LiveServer

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """On loopback with no tokens: kubectl sends bearer tokens only over TLS."""
    s = load_settings(data_dir=tmp_path_factory.mktemp("kube-history") / "data", listen="127.0.0.1:0",
                      storage={"fsync": False})
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


def _kubectl(srv: LiveServer, manifest: dict[str, Any], tmp: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    env = {"HOME": str(tmp), "PATH": os.environ.get("PATH", "")}
    out = subprocess.run([kubectl, "--server", srv.url, f"--cache-dir={tmp / 'kcache'}", "apply", "-f", "-"],
                         input=json.dumps(manifest), capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr


def _history(srv: LiveServer, key: str, expect: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:  # the history is written by a watch, just after the change
        out = CliRunner().invoke(app, ["config", "history", key, "--server", srv.url, "-o", "json"])
        assert out.exit_code == 0, out.output
        changes: list[dict[str, Any]] = json.loads(out.stdout)
        if len(changes) >= expect or time.monotonic() > deadline:
            return changes
        time.sleep(0.1)


def _shown(b64: str | None) -> Any:
    import base64

    return None if b64 is None else json.loads(base64.b64decode(b64))


def test_configmap_changes_are_recorded_with_who_and_values(server: LiveServer, tmp_path: Path) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web", "namespace": "default"},
          "data": {"timeout": "5s"}}
    _kubectl(server, cm, tmp_path)
    _kubectl(server, {**cm, "data": {"timeout": "10s", "retries": "3"}}, tmp_path)
    _kubectl(server, {**cm, "metadata": {**cm["metadata"], "labels": {"tier": "x"}},
                      "data": {"timeout": "10s", "retries": "3"}}, tmp_path)  # metadata only: not a config change
    changes = _history(server, "configmap/default/web", 2)
    assert len(changes) == 2
    assert [_shown(c["Old"]) for c in changes] == [None, {"data": {"timeout": "5s"}}]
    assert _shown(changes[1]["New"]) == {"data": {"retries": "3", "timeout": "10s"}}
    assert all(c["Who"] == "kubectl-client-side-apply" for c in changes)
    assert changes[0]["Revision"] < changes[1]["Revision"]
    r = httpx.delete(server.url + "/api/v1/namespaces/default/configmaps/web", timeout=10)
    assert r.status_code == 200
    assert _shown(_history(server, "configmap/default/web", 3)[-1]["New"]) is None


def test_secret_values_never_reach_the_history(server: LiveServer, tmp_path: Path) -> None:
    s = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "default"},
         "stringData": {"password": "hunter2-very-secret"}}
    _kubectl(server, s, tmp_path)
    _kubectl(server, {**s, "stringData": {"password": "correct-horse-battery"}}, tmp_path)
    changes = _history(server, "secret/default/db", 2)
    assert len(changes) == 2
    text = json.dumps([[_shown(c["Old"]), _shown(c["New"])] for c in changes])
    assert "hunter2" not in text and "correct-horse" not in text
    old, new = _shown(changes[1]["Old"])["data"]["password"], _shown(changes[1]["New"])["data"]["password"]
    assert old.startswith("sha256:") and new.startswith("sha256:") and old != new
    table = CliRunner().invoke(app, ["config", "history", "secret/default/db", "--server", server.url])
    assert table.exit_code == 0 and "sha256:" in table.stdout and "hunter2" not in table.stdout


def test_bad_kubernetes_history_names(server: LiveServer) -> None:
    r = httpx.get(server.url + "/api/config/v1/history", params={"key": "configmap/web", "source": "kubernetes"})
    assert r.status_code == 400 and "configmap/NAMESPACE/NAME" in r.text
    r = httpx.get(server.url + "/api/config/v1/history", params={"key": "a", "source": "zookeeper"})
    assert r.status_code == 400 and "consul or kubernetes" in r.text
