"""``pitwall logs query`` and ``pitwall logs tail`` against a live server."""

from __future__ import annotations

import time

import httpx
import yaml
from typer.testing import CliRunner

from pitwall.cli.main import app
from tests.conftest import LiveServer
from tests.logs.conftest import push_body


def _push(url: str) -> int:
    t = time.time_ns() - 5 * 10**9
    body = push_body({(("app", "cli"),): [[t, "first error"], [t + 1, "second"], [t + 2, "third error"]]})
    assert httpx.post(url + "/loki/api/v1/push", json=body).status_code == 204
    return t


def test_logs_query_prints_lines_and_series(live_server: LiveServer) -> None:
    _push(live_server.url)
    runner = CliRunner()
    res = runner.invoke(app, ["logs", "query", '{app="cli"} |= "error"', "--server", live_server.url])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert [ln.split("} ", 1)[1] for ln in lines] == ['third error', 'first error']
    assert lines[0].split(" ", 1)[1].startswith('{app="cli", detected_level="error", service_name="cli"}')
    res = runner.invoke(app, ["logs", "query", 'sum(count_over_time({app="cli"}[1h]))', "--instant",
                              "--server", live_server.url])
    assert res.exit_code == 0, res.output
    assert "3" in res.output
    res = runner.invoke(app, ["logs", "query", '{app="cli"} |= "error"', "--raw", "--direction", "forward",
                              "--server", live_server.url])
    assert res.output.splitlines() == ["first error", "third error"]
    res = runner.invoke(app, ["logs", "query", '{app="cli"}', "-o", "yaml", "--server", live_server.url])
    assert yaml.safe_load(res.output)["resultType"] == "streams"
    res = runner.invoke(app, ["logs", "query", '{app="cli"', "--server", live_server.url])
    assert res.exit_code == 1 and "HTTP 400" in res.output and "parse error" in res.output


def test_logs_tail_shows_history(live_server: LiveServer) -> None:
    _push(live_server.url)
    res = CliRunner().invoke(app, ["logs", "tail", '{app="cli"}', "--since", "-1m", "--server", live_server.url,
                                   "--max-messages", "1"])
    assert res.exit_code == 0, res.output
    got = [ln.split("} ", 1)[1] for ln in res.output.strip().splitlines()]
    assert got == ["first error", "second", "third error"]
