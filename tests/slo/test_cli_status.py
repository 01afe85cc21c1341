"""``pitwall slo status`` against a live server holding a PrometheusServiceLevel (created over HTTP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pitwall.config import load_settings
from tests.conftest import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PSL = {"apiVersion": "sloth.slok.dev/v1", "kind": "PrometheusServiceLevel",
       "metadata": {"name": "api"}, "spec": {"service": "api", "slos": [{
           "name": "availability", "objective": 99.9,
           "sli": {"events": {"errorQuery": 'sum(rate(req_total{code="500"}[{{.window}}]))',
                              "totalQuery": "sum(rate(req_total[{{.window}}]))"}},
           "alerting": {"pageAlert": {"disable": True}, "ticketAlert": {"disable": True}}}]}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    srv = LiveServer(load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False}))
    srv.start()
    yield srv
    srv.stop()


def _pitwall(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.run([sys.executable, "-m", "pitwall.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def test_status_table_json_and_arithmetic(server: LiveServer) -> None:
    r = httpx.post(server.url + "/apis/sloth.slok.dev/v1/namespaces/default/prometheusservicelevels", json=PSL)
    assert r.status_code == 201, r.text
    for _ in range(100):
        if httpx.get(server.url + "/api/slo/v1/slos").json()["slos"]:
            break
        time.sleep(0.1)
    table = _pitwall("slo", "status", "--server", server.url)
    assert table.returncode == 0, table.stderr
    assert "api-availability" in table.stdout and "99.90%" in table.stdout
    one = _pitwall("slo", "status", "api-availability", "--server", server.url)
    assert "error budget = 1 - objective = 1 - 0.999 = 0.001" in one.stdout
    assert "error ratio over the last 30d = no data" in one.stdout
    as_json = json.loads(_pitwall("slo", "status", "-o", "json", "--server", server.url).stdout)
    assert as_json["slos"][0]["source"] == "default/api"
    missing = _pitwall("slo", "status", "nope", "--server", server.url)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr
