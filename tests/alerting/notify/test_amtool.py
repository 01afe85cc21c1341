"""Debian's amtool against pitwall: check-config agreement, alerts and silences over API v2."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitwall.alerting.notify.config import parse_config
from pitwall.config import load_settings
from pitwall.core.errors import ConfigError
from tests.alerting.notify.helpers import write_am_config
from tests.conftest import LiveServer

AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"

pytestmark = pytest.mark.peer


def need_amtool() -> None:
    if not Path(AMTOOL).exists():
        pytest.skip("Debian's amtool (prometheus-alertmanager) is not installed")


def amtool(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AMTOOL, f"--alertmanager.url={url}", *args], capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.fixture
def am_server(tmp_path: Path) -> Iterator[LiveServer]:
    need_amtool()
    cfg = write_am_config(tmp_path / "am.yml", {
        "route": {"receiver": "default", "group_by": ["alertname"], "group_wait": "1h",
                  "routes": [{"receiver": "team", "matchers": ['team="a"']}]},
        "receivers": [{"name": "default"}, {"name": "team"}],
    })
    s = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                      alertmanager_config=cfg)
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


def test_amtool_alert_add_and_query(am_server: LiveServer) -> None:
    r = amtool(am_server.url, "alert", "add", "alertname=DiskFull", "team=a", "instance=db1",
               "--annotation=summary=disk is full")
    assert r.returncode == 0, r.stderr
    r = amtool(am_server.url, "alert", "query", "-o", "json")
    assert r.returncode == 0, r.stderr
    alerts = json.loads(r.stdout)
    assert [a["labels"]["alertname"] for a in alerts] == ["DiskFull"]
    assert alerts[0]["receivers"] == [{"name": "team"}]
    assert alerts[0]["annotations"] == {"summary": "disk is full"}
    r = amtool(am_server.url, "alert", "query", "alertname=Nope", "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == []


def test_amtool_silence_lifecycle(am_server: LiveServer) -> None:
    assert amtool(am_server.url, "alert", "add", "alertname=Noisy", "team=a").returncode == 0
    r = amtool(am_server.url, "silence", "add", "alertname=Noisy", "--comment=maintenance", "--author=ops",
               "--duration=1h")
    assert r.returncode == 0, r.stderr
    sid = r.stdout.strip()
    r = amtool(am_server.url, "silence", "query", "-o", "json")
    assert r.returncode == 0, r.stderr
    sils = json.loads(r.stdout)
    assert [s["id"] for s in sils] == [sid]
    assert sils[0]["status"]["state"] == "active" and sils[0]["createdBy"] == "ops"
    r = amtool(am_server.url, "alert", "query", "-o", "json", "--silenced")
    assert [a["status"]["silencedBy"] for a in json.loads(r.stdout)] == [[sid]]
    r = amtool(am_server.url, "alert", "query", "-o", "json")  # active only by default
    assert json.loads(r.stdout) == []
    r = amtool(am_server.url, "silence", "expire", sid)
    assert r.returncode == 0, r.stderr
    r = amtool(am_server.url, "silence", "query", "-o", "json", "--expired")
    assert [s["status"]["state"] for s in json.loads(r.stdout)] == ["expired"]
    assert amtool(am_server.url, "silence", "expire", "00000000-0000-0000-0000-000000000000").returncode != 0


# (config, does pitwall accept it, does Alertmanager accept it) — they agree except where pitwall
# deliberately rejects an integration it cannot deliver.
_BASE = "receivers: [{name: r}]\n"
CHECK_TABLE: list[tuple[str, str, bool, bool]] = [
    ("minimal", "route: {receiver: r}\n" + _BASE, True, True),
    ("full", """
global: {resolve_timeout: 1m, smtp_smarthost: 'localhost:25', smtp_from: 'am@example.org'}
route:
  receiver: r
  group_by: ['...']
  group_wait: 1s
  routes:
    - matchers: ['severity=~"critical|page"', 'team!="x"']
      receiver: r
      continue: true
      mute_time_intervals: [nights]
    - match: {env: prod}
      match_re: {service: 'api|web'}
      active_time_intervals: [nights]
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [alertname]
time_intervals:
  - name: nights
    time_intervals: [{times: [{start_time: '00:00', end_time: '06:00'}], weekdays: ['monday:friday']}]
receivers:
  - name: r
    webhook_configs: [{url: 'http://127.0.0.1:5001/'}]
    email_configs: [{to: 'ops@example.org'}]
    slack_configs: [{api_url: 'https://hooks.slack.com/services/x', channel: '#ops'}]
    pagerduty_configs: [{routing_key: 'abc'}]
""", True, True),
    ("no receiver on root", "route: {group_by: [a]}\n" + _BASE, False, False),
    ("undefined receiver", "route: {receiver: nope}\n" + _BASE, False, False),
    ("root matchers", "route: {receiver: r, matchers: ['a=b']}\n" + _BASE, False, False),
    ("unknown key", "route: {receiver: r, colour: red}\n" + _BASE, False, False),
    ("bad matcher", "route: {receiver: r, routes: [{matchers: ['a=~\"(\"']}]}\n" + _BASE, False, False),
    ("duplicate receiver", "route: {receiver: r}\nreceivers: [{name: r}, {name: r}]\n", False, False),
    ("webhook without url", "route: {receiver: r}\nreceivers: [{name: r, webhook_configs: [{}]}]\n", False, False),
    ("bad webhook scheme", "route: {receiver: r}\nreceivers: [{name: r, webhook_configs: [{url: 'ftp://x/'}]}]\n",
     False, False),
    ("email without smarthost", "route: {receiver: r}\nreceivers: [{name: r, email_configs: [{to: a@b.c}]}]\n",
     False, False),
    ("slack without url", "route: {receiver: r}\nreceivers: [{name: r, slack_configs: [{channel: x}]}]\n",
     False, False),
    ("pagerduty without key", "route: {receiver: r}\nreceivers: [{name: r, pagerduty_configs: [{}]}]\n",
     False, False),
    ("zero group_interval", "route: {receiver: r, group_interval: 0s}\n" + _BASE, False, False),
    ("bad duration", "route: {receiver: r, group_wait: soon}\n" + _BASE, False, False),
    ("wildcard and labels", "route: {receiver: r, group_by: ['...', a]}\n" + _BASE, False, False),
    ("undefined time interval", "route: {receiver: r, routes: [{mute_time_intervals: [x]}]}\n" + _BASE,
     False, False),
    ("bad time range", "route: {receiver: r}\n" + _BASE +
     "time_intervals: [{name: t, time_intervals: [{times: [{start_time: '10:00', end_time: '09:00'}]}]}]\n",
     False, False),
    ("opsgenie is valid Alertmanager but not deliverable by pitwall",
     "route: {receiver: r}\nreceivers: [{name: r, opsgenie_configs: [{api_key: k}]}]\n", False, True),
]


@pytest.mark.parametrize(("name", "text", "pitwall_ok", "am_ok"), CHECK_TABLE, ids=[c[0] for c in CHECK_TABLE])
def test_check_config_agrees_with_amtool(tmp_path: Path, name: str, text: str, pitwall_ok: bool,
                                         am_ok: bool) -> None:
    need_amtool()
    path = tmp_path / "alertmanager.yml"
    path.write_text(text)
    r = subprocess.run([AMTOOL, "check-config", str(path)], capture_output=True, text=True, timeout=30, check=False)
    assert (r.returncode == 0) == am_ok, r.stdout + r.stderr
    try:
        parse_config(text)
        ok = True
    except ConfigError:
        ok = False
    assert ok == pitwall_ok
