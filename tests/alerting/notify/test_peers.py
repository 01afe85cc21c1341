"""Real peers: Debian's prometheus sending to pitwall, and Debian's alertmanager side by side with pitwall."""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pitwall.config import load_settings
from tests.alerting.notify.helpers import Receiver, write_am_config
from tests.conftest import LiveServer, free_port
from tests.peers import PROMETHEUS, need_prometheus

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"

pytestmark = [pytest.mark.slow, pytest.mark.peer]


def _pitwall(tmp: Path, am_cfg: dict[str, Any]) -> LiveServer:
    path = write_am_config(tmp / "pitwall-am.yml", am_cfg)
    s = load_settings(data_dir=tmp / "pw", listen="127.0.0.1:0", storage={"fsync": False}, alertmanager_config=path)
    srv = LiveServer(s)
    srv.start()
    return srv


def test_prometheus_alerts_reach_a_webhook_through_pitwall(tmp_path: Path, receiver: Receiver) -> None:
    need_prometheus()
    srv = _pitwall(tmp_path, {
        "route": {"receiver": "hook", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "2s"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": receiver.url + "/hook"}]}],
    })
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "g", "interval": "1s", "rules": [
        {"alert": "AlwaysFiring", "expr": "vector(1)", "labels": {"severity": "page"},
         "annotations": {"summary": "always {{ $value }}"}}]}]}))
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump({
        "global": {"evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "alerting": {"alertmanagers": [{"api_version": "v2", "static_configs": [{"targets": [f"127.0.0.1:{srv.port}"]}]}]},
    }))
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'prom'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
                             # The first send can precede notifier discovery; resend soon rather than in 1m.
                             "--rules.alert.resend-delay=1s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bodies = receiver.wait_for(lambda got: len(got) >= 1, timeout=60)
        b = bodies[0]
        assert b["groupLabels"] == {"alertname": "AlwaysFiring"} and b["status"] == "firing"
        assert b["commonLabels"] == {"alertname": "AlwaysFiring", "severity": "page"}
        assert b["commonAnnotations"] == {"summary": "always 1"}
        assert b["alerts"][0]["generatorURL"].startswith("http")
        groups = httpx.get(srv.url + "/api/v2/alerts/groups", timeout=10).json()
        assert [g["labels"] for g in groups] == [{"alertname": "AlwaysFiring"}]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        srv.stop()


class _Alertmanager:
    def __init__(self, tmp: Path, cfg: dict[str, Any]) -> None:
        if not Path(ALERTMANAGER).exists():
            pytest.skip("Debian's prometheus-alertmanager is not installed")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        path = write_am_config(tmp / "am.yml", cfg)
        self.proc = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={path}", f"--storage.path={tmp / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError("alertmanager did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def _config(hook: str) -> dict[str, Any]:
    return {
        "route": {"receiver": "hook", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "2s",
                  "repeat_interval": "1h", "routes": [
                      {"receiver": "db", "matchers": ['team="db"'], "group_by": ["alertname", "instance"]}]},
        "inhibit_rules": [{"source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'],
                           "equal": ["instance"]}],
        "receivers": [{"name": "hook", "webhook_configs": [{"url": hook, "send_resolved": True}]},
                      {"name": "db", "webhook_configs": [{"url": hook, "send_resolved": True}]}],
    }


def _normal(body: dict[str, Any]) -> tuple[Any, ...]:
    alerts = sorted((a["fingerprint"], a["status"], tuple(sorted(a["labels"].items()))) for a in body["alerts"])
    return (body["receiver"], body["groupKey"], body["status"], tuple(sorted(body["groupLabels"].items())),
            tuple(sorted(body["commonLabels"].items())), tuple(alerts))


def test_same_notifications_as_alertmanager(tmp_path: Path, receiver: Receiver) -> None:
    am = _Alertmanager(tmp_path, _config(receiver.url + "/am"))
    pw = _pitwall(tmp_path, _config(receiver.url + "/pw"))
    try:
        def post(alerts: list[dict[str, Any]]) -> None:
            for base in (am.url, pw.url):
                r = httpx.post(base + "/api/v2/alerts", json=alerts, timeout=10)
                assert r.status_code == 200, r.text

        now = datetime.now(UTC)
        cpu_a = {"labels": {"alertname": "Cpu", "instance": "a", "severity": "warning"}}
        post([cpu_a, {"labels": {"alertname": "Mem", "instance": "b"}}])
        time.sleep(0.3)
        post([{"labels": {"alertname": "Cpu", "instance": "c"}},
              {"labels": {"alertname": "Disk", "team": "db", "instance": "x"}},
              {"labels": {"alertname": "Disk", "team": "db", "instance": "y"}},
              {"labels": {"alertname": "NodeDown", "instance": "d", "severity": "critical"}},
              {"labels": {"alertname": "Cpu", "instance": "d", "severity": "warning"}}])
        time.sleep(2.5)
        post([{**cpu_a, "startsAt": now.isoformat(), "endsAt": datetime.now(UTC).isoformat()}])
        time.sleep(4.5)
        got_am = sorted(_normal(b) for b in receiver.bodies("/am"))
        got_pw = sorted(_normal(b) for b in receiver.bodies("/pw"))
        assert got_am, "alertmanager sent nothing"
        assert got_pw == got_am
        am_alerts = httpx.get(am.url + "/api/v2/alerts", timeout=10).json()
        pw_alerts = httpx.get(pw.url + "/api/v2/alerts", timeout=10).json()
        assert [(a["fingerprint"], a["status"]["state"], len(a["status"]["inhibitedBy"])) for a in pw_alerts] == \
            [(a["fingerprint"], a["status"]["state"], len(a["status"]["inhibitedBy"])) for a in am_alerts]
    finally:
        am.stop()
        pw.stop()


