"""``pitwall targets``, ``services``, ``rules list`` against a live server, and ``config check`` offline."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from pitwall.cli.main import app
from tests.conftest import LiveServer

pytestmark = pytest.mark.timeout(90)


def test_listings_of_a_live_server(rules_server: LiveServer) -> None:
    srv = rules_server
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop-api-with-a-long-name"},
           "spec": {"selector": {"app": "shop"}, "ports": [{"port": 8080}]}}
    r = httpx.post(srv.url + "/api/v1/namespaces/default/services", json=svc, timeout=10)
    assert r.status_code == 201, r.text
    run = CliRunner().invoke
    deadline = time.monotonic() + 30
    while True:  # until a scrape failed and the alert fires
        rows = json.loads(run(app, ["rules", "list", "--server", srv.url, "-o", "json"]).stdout)
        tg = json.loads(run(app, ["targets", "--server", srv.url, "-o", "json"]).stdout)
        firing = [a for g in rows for rule in g["rules"] for a in rule.get("alerts", [])]
        if (firing and tg["activeTargets"][0]["health"] == "down") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [rule["name"] for rule in rows[0]["rules"]] == ["Always", "r"] and firing
    table = run(app, ["rules", "list", "--server", srv.url])
    assert table.exit_code == 0, table.output
    head, *lines = table.stdout.splitlines()
    assert head.split() == ["GROUP", "RULE", "TYPE", "STATE", "HEALTH", "ALERTS", "LAST", "EVAL", "ERROR"]
    assert lines[0].split()[:6] == ["g", "Always", "alerting", "firing", "ok", "1"]
    wide = run(app, ["rules", "list", "--server", srv.url, "-o", "wide"]).stdout
    assert "vector(1)" in wide and "r.yaml" in wide
    t = run(app, ["targets", "--server", srv.url]).stdout.splitlines()
    assert t[1].split()[:3] == ["dead", "http://127.0.0.1:1/metrics", "down"]
    assert "connection refused" in t[1].lower() or "connect" in t[1].lower()
    svcs = run(app, ["services", "--server", srv.url, "-o", "yaml"])
    got = {x["name"]: x for x in yaml.safe_load(svcs.stdout)}
    assert got["shop-api-with-a-long-name"]["endpoints"] == "0/0"
    assert got["shop-api-with-a-long-name"]["ports"] == ["8080/TCP"]
    plain = run(app, ["services", "--server", srv.url]).stdout
    assert "shop-api-with-a-long-name" in plain and "…" not in plain  # full names through a pipe
    bad = run(app, ["targets", "--server", srv.url, "-o", "xml"])
    assert bad.exit_code == 2 and "--output must be one of" in bad.output


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_config_check(tmp_path: Path) -> None:
    _write(tmp_path, "rules.yaml", "groups: [{name: g, rules: [{alert: A, expr: up == 0}]}]\n")
    _write(tmp_path, "am.yml", "route: {receiver: r}\nreceivers: [{name: r}]\n")
    good = _write(tmp_path, "pitwall.yaml", "rule_files: [rules.yaml]\nalertmanager_config: am.yml\n"
                  "scrape_configs: [{job_name: self, static_configs: [{targets: ['127.0.0.1:9900']}]}]\n")
    out = CliRunner().invoke(app, ["config", "check", str(good)])
    assert out.exit_code == 0, out.output
    assert out.stdout.count("SUCCESS") == 4 and "1 rules found" in out.stdout and "1 receivers" in out.stdout

    _write(tmp_path, "bad-rules.yaml", "groups: [{name: g, rules: [{alert: A, expr: 'rate(x[5m]'}]}]\n")
    bad = _write(tmp_path, "bad.yaml", "rule_files: [bad-rules.yaml]\nalertmanager_config: missing.yml\n")
    out = CliRunner().invoke(app, ["config", "check", str(bad)])
    assert out.exit_code == 1
    assert "bad-rules.yaml" in out.output and "missing.yml" in out.output and out.output.count("FAILED") == 2

    unknown = _write(tmp_path, "unknown.yaml", "retention_tim: 3d\n")
    out = CliRunner().invoke(app, ["config", "check", str(unknown)])
    assert out.exit_code == 1 and "retention_tim" in out.output


def test_config_check_reads_the_dashboards_folder_as_the_server_does(tmp_path: Path) -> None:
    d = tmp_path / "dash"
    d.mkdir()
    (d / "ok.yaml").write_text("title: Mine\nrows: [{panels: [{title: up, query: up}]}]\n")
    (d / "grafana.json").write_text(json.dumps({"title": "From Grafana", "schemaVersion": 39, "panels": [
        {"type": "timeseries", "title": "rps", "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
         "targets": [{"refId": "A", "expr": "sum(rate(http_requests_total[5m]))"}]}]}))
    cfg = _write(tmp_path, "pitwall.yaml", "ui:\n  dashboards_dir: dash\n")
    out = CliRunner().invoke(app, ["config", "check", str(cfg)])
    assert out.exit_code == 0, out.output
    assert "2 dashboards" in out.stdout
    (d / "bad.yaml").write_text("title: Bad\nrows: [{panels: [{title: x, qurey: up}]}]\n")
    out = CliRunner().invoke(app, ["config", "check", str(cfg)])
    assert out.exit_code == 1 and "bad.yaml" in out.output and "qurey" in out.output
