"""The real `pitwall server` with ``state.backend: postgres``: kubectl apply/get, the objects in PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.conftest import free_port, start_pitwall_process, wait_ready
from tests.kube.conftest import KUBECTL
from tests.kube.test_pitwall_server import _kubectl_for, _tls_config

from .conftest import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_kubectl_against_pitwall_on_postgres(tmp_path: Path, postgres_server: PostgresServer) -> None:
    if not os.path.exists(KUBECTL):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    dsn = postgres_server.create_database()
    cfg = _tls_config(tmp_path)
    settings = yaml.safe_load(cfg.read_text())
    settings["state"] = {"backend": "postgres", "dsn": dsn}
    cfg.write_text(yaml.safe_dump(settings))
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    kubectl = _kubectl_for(url, tmp_path)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop", "labels": {"app": "shop"}},
          "data": {"LOG_LEVEL": "info"}}
    for run, data in enumerate([tmp_path / "one", tmp_path / "two"]):  # a fresh data directory each time
        data.mkdir()
        proc = start_pitwall_process(data, port, config=cfg)
        try:
            wait_ready(url, proc=proc, verify=False)
            if run == 0:
                assert "created" in kubectl("apply", "-f", "-", stdin=json.dumps(cm))
                cm["data"] = {"LOG_LEVEL": "debug"}
                assert "configured" in kubectl("apply", "-f", "-", stdin=json.dumps(cm))
            # The second server has nothing local: what it serves comes from PostgreSQL.
            got = json.loads(kubectl("get", "configmap", "shop", "-o", "json"))
            assert got["data"] == {"LOG_LEVEL": "debug"}
            assert "shop" in kubectl("get", "configmaps", "-l", "app=shop", "-o", "name")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    assert not (tmp_path / "two" / "revstore.db").exists()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT version, deleted FROM kine WHERE name = %s ORDER BY id",
                            (b"/registry/configmaps/default/shop",)).fetchall()
    assert rows == [(1, False), (2, False)]  # created, then changed once: kine's rows, one per change
