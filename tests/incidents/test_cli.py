"""``pitwall oncall`` and ``pitwall incident postmortem`` against a live server, as a person runs them."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from pitwall.cli.main import app
from tests.conftest import LiveServer
from tests.incidents.conftest import ROUTING_KEY, TOKEN

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]


def test_oncall(pd_live: LiveServer) -> None:
    runner = CliRunner()
    base = ["--server", pd_live.url, "--token", TOKEN]
    out = runner.invoke(app, ["oncall", *base, "--schedule", "Primary", "--at", "2026-01-14T12:00:00Z",
                              "-o", "json"])
    assert out.exit_code == 0, out.output
    (entry,) = json.loads(out.output)
    assert (entry["user"]["summary"], entry["start"], entry["end"]) == (
        "Bob", "2026-01-12T08:00:00Z", "2026-01-19T08:00:00Z")
    out = runner.invoke(app, ["oncall", *base, "--at", "2026-01-07T12:00:00+01:00"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    rows = [line.split() for line in out.output.splitlines()[1:] if line.strip()]
    assert rows == [["Web", "on-call", "1", "Primary", "Alice", "2026-01-05T08:00:00Z", "2026-01-12T08:00:00Z"],
                    ["Web", "on-call", "2", "-", "Carol", "-", "-"]]
    out = runner.invoke(app, ["oncall", *base, "--schedule", "Nope"])
    assert out.exit_code == 1 and "no schedule named 'Nope'" in out.output
    out = runner.invoke(app, ["oncall", "--server", pd_live.url, "--token", "wrong-token-0123456789"])
    assert out.exit_code == 1 and "HTTP 401" in out.output


def test_incident_postmortem(pd_live: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(pd_live.url + "/v2/enqueue", headers=auth, json={
        "routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "db",
        "payload": {"summary": "db down", "source": "db1", "severity": "critical"}})
    assert r.status_code == 202
    httpx.post(pd_live.url + "/v2/enqueue", headers=auth, json={"routing_key": ROUTING_KEY, "event_action": "resolve",
                                                  "dedup_key": "db"})
    runner = CliRunner()
    for ref in ("1", "Q0000001"):
        out = runner.invoke(app, ["incident", "postmortem", ref, "--server", pd_live.url, "--token", TOKEN])
        assert out.exit_code == 0, out.output
        assert out.output.startswith("# Postmortem: [#1] db down")
        assert "- Resolved: 20" in out.output and "| alert (critical) from db1: db down |" in out.output
    out = runner.invoke(app, ["incident", "postmortem", "42", "--server", pd_live.url, "--token", TOKEN])
    assert out.exit_code == 1 and "Incident Q0000042 not found" in out.output
