"""Alerts become incidents: Alertmanager's ``pagerduty_configs`` pointed at pitwall's ``/v2/enqueue``.

Both Debian's prometheus-alertmanager and pitwall's own notification
pipeline send PagerDuty Events v2 (dedup key = a hash of the group key,
trigger while firing, resolve when resolved); pitwall opens, deduplicates
and resolves incidents from them.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pitwall.config import load_settings
from tests.conftest import LiveServer, free_port
from tests.incidents.conftest import ROUTING_KEY, incidents_config

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow, pytest.mark.peer]


def _am_config(pitwall_url: str) -> dict[str, Any]:
    return {
        "route": {"receiver": "oncall", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "1s",
                  "repeat_interval": "1h"},
        "receivers": [{"name": "oncall", "pagerduty_configs": [
            {"routing_key": ROUTING_KEY, "url": pitwall_url + "/v2/enqueue", "severity": "critical",
             "send_resolved": True}]}],
    }


def _wait(fetch: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    got = fetch()
    while not ok(got) and time.monotonic() < deadline:
        time.sleep(0.3)
        got = fetch()
    return got


def _incidents(url: str) -> list[dict[str, Any]]:
    r = httpx.get(url + "/pagerduty/incidents", timeout=10)
    assert r.status_code == 200, r.text
    return list(r.json()["incidents"])


def _post_alerts(url: str, alerts: list[dict[str, Any]]) -> None:
    r = httpx.post(url + "/api/v2/alerts", json=alerts, timeout=10)
    assert r.status_code == 200, r.text


def _firing_then_resolved(am_url: str, pw_url: str) -> None:
    """Fire two alerts of one group and one of another; then resolve the first group."""
    _post_alerts(am_url, [{"labels": {"alertname": "DiskFull", "instance": "db1"}},
                          {"labels": {"alertname": "DiskFull", "instance": "db2"}},
                          {"labels": {"alertname": "CpuHot", "instance": "web1"}}])
    incs = _wait(lambda: _incidents(pw_url), lambda got: len(got) >= 2)
    assert sorted(i["status"] for i in incs) == ["triggered", "triggered"]
    # One incident per Alertmanager group (its dedup key is the group key's hash), whatever it re-sends.
    assert len({i["incident_key"] for i in incs}) == 2 and all(len(i["incident_key"]) == 64 for i in incs)
    disk = next(i for i in incs if "DiskFull" in i["title"])
    (alert,) = httpx.get(pw_url + f"/pagerduty/incidents/{disk['id']}/alerts", timeout=10).json()["alerts"]
    assert alert["severity"] == "critical" and alert["body"]["cef_details"]["client"] == "Alertmanager"
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    _post_alerts(am_url, [{"labels": {"alertname": "DiskFull", "instance": h}, "endsAt": past}
                          for h in ("db1", "db2")])
    incs = _wait(lambda: _incidents(pw_url),
                 lambda got: any(i["status"] == "resolved" for i in got))
    status = {("DiskFull" in i["title"]): i["status"] for i in incs}
    assert status == {True: "resolved", False: "triggered"}
    assert len(incs) == 2  # the repeats and the resolve opened nothing new


def test_debian_alertmanager_pagerduty_configs_open_and_resolve_incidents(tmp_path: Path) -> None:
    if not Path(ALERTMANAGER).exists():
        pytest.skip("Debian's prometheus-alertmanager is not installed")
    pw = LiveServer(load_settings(data_dir=tmp_path / "pw", listen="127.0.0.1:0", storage={"fsync": False},
                                  kube={"enabled": False}, incidents=incidents_config()))
    pw.start()
    port = free_port()
    cfg = tmp_path / "am.yml"
    cfg.write_text(yaml.safe_dump(_am_config(pw.url)))
    am = subprocess.Popen([ALERTMANAGER, f"--config.file={cfg}", f"--storage.path={tmp_path / 'am'}",
                           f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                           "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    am_url = f"http://127.0.0.1:{port}"
    try:
        assert _wait(lambda: _ready(am_url), bool, timeout=30), "alertmanager did not become ready"
        _firing_then_resolved(am_url, pw.url)
    finally:
        am.terminate()
        am.wait(timeout=20)
        pw.stop()


def test_pitwalls_own_pipeline_pages_through_incidents(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    am_file = tmp_path / "alertmanager.yml"
    am_file.write_text(yaml.safe_dump(_am_config(url)))
    pw = LiveServer(load_settings(data_dir=tmp_path / "pw", listen=f"127.0.0.1:{port}", storage={"fsync": False},
                                  kube={"enabled": False}, incidents=incidents_config(),
                                  alertmanager_config=am_file))
    pw.port, pw.url = port, url
    pw.start()
    try:
        _firing_then_resolved(url, url)
    finally:
        pw.stop()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
