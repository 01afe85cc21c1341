"""``pitwall traces search`` and ``pitwall traces get`` against a live server."""

from __future__ import annotations

import httpx
from typer.testing import CliRunner

from pitwall.cli.main import app
from tests.conftest import LiveServer
from tests.traces.helpers import PROTO, otlp_request

TID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_search_and_waterfall(live_server: LiveServer) -> None:
    spans = [{"trace": TID, "span": "1" * 16, "name": "GET /", "kind": 2, "duration": 10_000_000},
             {"trace": TID, "span": "2" * 16, "parent": "1" * 16, "name": "SELECT", "kind": 3,
              "duration": 4_000_000, "status": 2}]
    httpx.post(live_server.url + "/v1/traces", content=otlp_request("shop", spans), headers=PROTO).raise_for_status()
    runner = CliRunner()
    res = runner.invoke(app, ["traces", "search", "--service", "shop", "--server", live_server.url, "-o", "json"])
    assert res.exit_code == 0, res.output
    assert '"spanCount": 2' in res.output and TID in res.output
    res = runner.invoke(app, ["traces", "search", "--service", "shop", "--server", live_server.url, "-o", "wide"])
    header, row = res.output.splitlines()[:2]
    assert header.split() == ["TRACE", "ID", "START", "ROOT", "DURATION", "SPANS", "ERRORS", "SERVICES"]
    assert row.startswith(TID) and row.split()[-2:] == ["1", "shop"]
    res = runner.invoke(app, ["traces", "get", TID, "--server", live_server.url])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith(f"trace {TID}  2 spans")
    assert lines[1].startswith("shop: GET /") and lines[2].startswith("  shop: SELECT") and lines[2].endswith("!")
    res = runner.invoke(app, ["traces", "get", "f" * 32, "--server", live_server.url])
    assert res.exit_code == 1 and "404" in res.output
