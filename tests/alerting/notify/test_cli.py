"""``pitwall alerts`` and ``pitwall silence add|query|expire`` against a live server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from pitwall.cli.main import app
from pitwall.config import load_settings
from tests.conftest import LiveServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    s = load_settings(data_dir=tmp_path / "d", listen="127.0.0.1:0", storage={"fsync": False})
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


def test_alerts_and_silences_from_the_terminal(server: LiveServer) -> None:
    httpx.post(server.url + "/api/v2/alerts", json=[{"labels": {"alertname": "Hot", "zone": "a"},
                                                     "annotations": {"summary": "too hot"}}])
    run = CliRunner().invoke
    r = run(app, ["alerts", "--server", server.url, "-o", "json"])
    assert r.exit_code == 0, r.output
    assert [a["labels"] for a in json.loads(r.output)] == [{"alertname": "Hot", "zone": "a"}]
    r = run(app, ["alerts", "--server", server.url])
    assert "Hot" in r.output and "too hot" in r.output and 'zone="a"' in r.output
    r = run(app, ["alerts", "--server", server.url, "-o", "wide"])
    assert r.output.splitlines()[0].split()[-2:] == ["RECEIVERS", "FINGERPRINT"]
    r = run(app, ["silence", "add", "alertname=Hot", "--comment", "fixing", "--server", server.url])
    assert r.exit_code == 0, r.output
    sid = r.output.strip()
    r = run(app, ["silence", "query", "--server", server.url, "-o", "json"])
    assert [s["id"] for s in json.loads(r.output)] == [sid]
    r = run(app, ["silence", "query", "--server", server.url])
    assert r.output.splitlines()[0].split()[:3] == ["ID", "MATCHERS", "STATE"]
    assert r.output.splitlines()[1].split()[:3] == [sid, 'alertname="Hot"', "active"]  # the whole id, never cut
    r = run(app, ["silence", "query", "--server", server.url, "-o", "yaml"])
    assert [s["id"] for s in yaml.safe_load(r.output)] == [sid]
    r = run(app, ["alerts", "--server", server.url, "-o", "json"])
    assert json.loads(r.output) == []
    assert run(app, ["silence", "expire", sid, "--server", server.url]).exit_code == 0
    r = run(app, ["silence", "query", "--expired", "--server", server.url, "-o", "json"])
    assert [s["status"]["state"] for s in json.loads(r.output)] == ["expired"]
    r = run(app, ["alerts", "a=~(", "--server", server.url])
    assert r.exit_code == 2
