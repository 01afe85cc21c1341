"""`pitwall query` against a live server, as a person uses it in a terminal."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import cramjam
import httpx
import pytest
import yaml
from typer.testing import CliRunner

from pitwall.cli.main import app
from pitwall.cli.query import parse_when, sparkline
from pitwall.metrics.ingest import prompb
from tests.conftest import LiveServer


def _push(url: str, tenant: str | None = None) -> None:
    w = prompb.WriteRequest()
    now = int(time.time() * 1000)
    for job in ("api", "db"):
        ts = w.timeseries.add()
        for k, v in (("__name__", "up"), ("job", job)):
            lb = ts.labels.add()
            lb.name, lb.value = k, v
        s = ts.samples.add()
        s.timestamp, s.value = now - 1000, 1.0
    r = httpx.post(url + "/api/v1/write", content=bytes(cramjam.snappy.compress_raw(w.SerializeToString())),
                   headers={"X-Scope-OrgID": tenant} if tenant else {})
    assert r.status_code == 204


def test_query_table_and_json(live_server: LiveServer) -> None:
    _push(live_server.url)
    runner = CliRunner()
    out = runner.invoke(app, ["query", "--server", live_server.url, "up"])
    assert out.exit_code == 0, out.output
    assert 'up{job="api"}' in out.output and 'up{job="db"}' in out.output
    out = runner.invoke(app, ["query", "--server", live_server.url, "--output", "json", "count(up)"])
    assert json.loads(out.output)["result"][0]["value"][1] == "2"
    out = runner.invoke(app, ["query", "--server", live_server.url, "--range", "--start", "-5m", "--step", "1m", "up"])
    assert out.exit_code == 0, out.output
    assert out.output.split()[:3] == ["SERIES", "LAST", "TREND"]
    out = runner.invoke(app, ["query", "--server", live_server.url, "--range", "--start", "-5m", "--step", "1m",
                              "-o", "wide", 'up{job="db"}'])
    assert out.output.splitlines()[0].split() == ["SERIES", "LAST", "TREND", "MIN", "MAX", "MEAN", "POINTS"]
    out = runner.invoke(app, ["query", "--server", live_server.url, "-o", "yaml", "count(up)"])
    assert yaml.safe_load(out.output)["result"][0]["value"][1] == "2"


def test_query_tenant_is_sent(live_server: LiveServer) -> None:
    _push(live_server.url, tenant="team-q")
    runner = CliRunner()
    other = runner.invoke(app, ["query", "--server", live_server.url, "--tenant", "team-none", "-o", "json",
                                'count(up{job="api"})'])
    mine = runner.invoke(app, ["query", "--server", live_server.url, "--tenant", "team-q", "-o", "json",
                               'count(up{job="api"})'])
    assert json.loads(mine.output)["result"][0]["value"][1] == "1"
    assert json.loads(other.output)["result"] == []


def test_sparkline_scales_to_the_range() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([5.0, 5.0]) == "▁▁"
    assert sparkline([0, float("nan"), 7]) == "▁ █"
    assert sparkline([float("nan")]) == ""
    assert len(sparkline(list(range(1000)), width=30)) == 30


def test_query_error_is_reported(live_server: LiveServer) -> None:
    out = CliRunner().invoke(app, ["query", "--server", live_server.url, "sum(up"])
    assert out.exit_code == 1
    assert "bad_data" in out.output and "parse error" in out.output


def test_parse_when() -> None:
    assert parse_when("now", now=1000.0) == 1000.0
    assert parse_when("-1h", now=10_000.0) == 6400.0
    assert parse_when("2026-01-01T00:00:00Z") == 1767225600.0


def test_version() -> None:
    from pitwall import __version__

    out = CliRunner().invoke(app, ["--version"])
    assert out.exit_code == 0 and out.output.strip() == f"pitwall {__version__}"


@pytest.fixture
def own_logging() -> Iterator[None]:
    """Put back the root logger: ``server`` points it at CliRunner's stderr, closed after the call."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("own_logging")
def test_server_on_a_taken_port_fails_first_naming_it(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = CliRunner().invoke(app, ["server", "--data-dir", str(tmp_path / "data"), "--listen",
                                       f"127.0.0.1:{port}"])
    assert out.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in out.output
    assert not (tmp_path / "data").exists()  # nothing was started (no data directory, no stores)


def test_help_shows_defaults_and_no_value_for_flags() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pitwall.cli.main", "server", "--help"], capture_output=True,
                         text=True, env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"}, check=True).stdout
    assert "(default: ./pitwall-data)" in out and "(default: 127.0.0.1:9900)" in out
    assert "<bool>" not in out and "--insecure" in out
    query = subprocess.run([sys.executable, "-m", "pitwall.cli.main", "query", "--help"], capture_output=True,
                           text=True, env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"}, check=True).stdout
    assert "--range" in query and "<bool>" not in query


def test_the_cli_starts_without_the_server_imports() -> None:
    """`pitwall --help` and the client commands do not import the web framework, the stores or uvicorn."""
    import subprocess
    import sys

    code = "import sys, pitwall.cli.main; print(sorted(m for m in ('fastapi', 'uvicorn', 'duckdb', 'pitwall.config') " \
           "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_status_says_what_runs_and_what_fails(rules_server: LiveServer) -> None:
    srv = rules_server
    try:
        deadline = time.monotonic() + 30
        while True:  # until a scrape and a rule evaluation ran: the dead target is down, the alert fires
            out = CliRunner().invoke(app, ["status", "--server", srv.url, "--output", "json"])
            assert out.exit_code == 0, out.output
            got = json.loads(out.stdout)  # stdout alone: an earlier `server` test may have set up logging
            if (got["alerts_firing"] and got["targets_down"]) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert got["ready"] is True and got["problems"] == []
        assert got["rules"] == 2 and got["alerts_firing"] == ["Always"]
        assert got["targets_up"] == 0 and len(got["targets_down"]) == 1 and "dead" in got["targets_down"][0]
        assert got["nodes"] and set(got["pods"]) <= {"Pending", "Running", "Succeeded", "Failed"}
        table = CliRunner().invoke(app, ["status", "--server", srv.url])
        assert table.exit_code == 0 and "firing: Always" in table.stdout and "0 up, 1 down" in table.stdout
    finally:
        srv.stop()  # the fixture's stop then finds it stopped
    down = CliRunner().invoke(app, ["status", "--server", srv.url])
    assert down.exit_code == 1 and "cannot reach" in down.output
