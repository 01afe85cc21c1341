"""``pitwall kubeconfig``: the context it writes is one kubectl uses against a live server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from pitwall.cli.kubeconfig import kubeconfig
from tests.kube.conftest import KUBECTL, TOKEN, KubeServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(kubeconfig)
    return app


def test_print_and_merge(kube_server: KubeServer, tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(_app(), ["--server", kube_server.url, "--token", TOKEN])
    assert printed.exit_code == 0, printed.output
    cfg = yaml.safe_load(printed.stdout)
    assert cfg["clusters"][0]["cluster"] == {"server": kube_server.url, "insecure-skip-tls-verify": True}
    assert cfg["users"][0]["user"] == {"token": TOKEN} and cfg["current-context"] == "pitwall"

    target = tmp_path / "config"
    target.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": "other",
                                      "clusters": [{"name": "other", "cluster": {"server": "https://x"}}],
                                      "users": [], "contexts": []}))
    merged = runner.invoke(_app(), ["--server", kube_server.url, "--token", TOKEN, "--merge",
                                    "--ca-file", str(kube_server.kubeconfig.parent / "tls.crt")],
                           env={"KUBECONFIG": str(target)})
    assert merged.exit_code == 0, merged.output
    out = yaml.safe_load(target.read_text())
    assert [c["name"] for c in out["clusters"]] == ["other", "pitwall"] and out["current-context"] == "pitwall"
    env = {**os.environ, "KUBECONFIG": str(target), "HOME": str(tmp_path)}
    p = subprocess.run([KUBECTL, f"--cache-dir={tmp_path / 'cache'}", "get", "ns", "default", "-o", "name"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "namespace/default"
