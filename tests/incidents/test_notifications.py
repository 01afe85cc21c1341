"""Pages go out through pitwall's notifiers (webhook, Slack, email over real SMTP), once, also across a restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pitwall.config import load_settings
from tests.alerting.notify.helpers import Receiver
from tests.conftest import LiveServer
from tests.incidents.conftest import ROUTING_KEY, SmtpSink, bob_always_on_call, incidents_config

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


def _wait(pred: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_pages_through_webhook_slack_and_email(tmp_path: Path, receiver: Receiver, smtp: SmtpSink) -> None:
    cfg = bob_always_on_call(incidents_config())
    alice, bob = cfg["users"][0], cfg["users"][1]
    alice["contact_methods"] = [
        {"id": "PAHOOK", "type": "webhook", "address": receiver.url + "/alice"},
        {"id": "PASLACK", "type": "slack", "address": receiver.url + "/slack"},
        {"id": "PAMAIL", "type": "email", "address": "alice@example.com"}]
    alice["notification_rules"] = {"low": ["PAMAIL"]}  # low urgency: email only
    bob["contact_methods"] = [{"type": "webhook", "address": receiver.url + "/bob"}]
    am = tmp_path / "alertmanager.yml"
    am.write_text(yaml.safe_dump({
        "global": {"smtp_smarthost": f"127.0.0.1:{smtp.port}", "smtp_from": "pitwall@example.com",
                   "smtp_require_tls": False},
        "route": {"receiver": "null"}, "receivers": [{"name": "null"}]}))
    srv = LiveServer(load_settings(data_dir=tmp_path / "pw", listen="127.0.0.1:0", storage={"fsync": False},
                                   kube={"enabled": False}, incidents=cfg, alertmanager_config=am))
    srv.start()
    try:
        # Bob is on call: the trigger pages him, and Alice only through the assignment below.
        r = httpx.post(srv.url + "/v2/enqueue", json={
            "routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "db",
            "payload": {"summary": "db down", "source": "db1", "severity": "critical"}})
        assert r.status_code == 202
        r = httpx.put(srv.url + "/pagerduty/incidents/Q0000001", headers={"From": "bob@example.com"},
                      json={"incident": {"type": "incident_reference",
                                         "assignments": [{"assignee": {"id": "PALICE1"}}]}})
        assert r.status_code == 200, r.text
        receiver.wait_for(lambda got: len(got) >= 1, path="/alice")
        receiver.wait_for(lambda got: len(got) >= 1, path="/slack")
        _wait(lambda: smtp.messages)
        (hook,) = receiver.bodies("/alice")
        (a,) = hook["alerts"]
        assert a["labels"]["incident_id"] == "Q0000001" and a["labels"]["service"] == "web"
        assert a["annotations"]["summary"] == "db down" and a["annotations"]["reason"] == "assigned"
        assert a["annotations"]["incident_url"].endswith("/pagerduty/incidents/Q0000001")
        assert hook["status"] == "firing" and hook["receiver"] == "incidents/PALICE1"
        (slack,) = receiver.bodies("/slack")
        assert "db down" in slack["attachments"][0]["title"]
        (mail,) = smtp.messages
        assert mail["To"] == "alice@example.com" and mail["From"] == "pitwall@example.com"
        log = httpx.get(srv.url + "/pagerduty/incidents/Q0000001/log_entries").json()["log_entries"]
        (to_alice,) = [e for e in log if e["type"] == "notify_log_entry" and e["summary"] == "Notified Alice (assigned)"]
        assert to_alice["channel"]["details"]["contact_methods"] == ["PAHOOK", "PASLACK", "PAMAIL"]
        # A low-urgency incident reaches Alice by email only (her notification rule).
        before = (len(receiver.bodies("/alice")), len(smtp.messages))
        httpx.post(srv.url + "/pagerduty/incidents", headers={"From": "bob@example.com"}, json={"incident": {
            "type": "incident", "title": "slow reports", "urgency": "low",
            "service": {"id": "PWEB001", "type": "service_reference"}}}).raise_for_status()
        httpx.put(srv.url + "/pagerduty/incidents/Q0000002", headers={"From": "bob@example.com"},
                  json={"incident": {"assignments": [{"assignee": {"id": "PALICE1"}}]}}).raise_for_status()
        _wait(lambda: len(smtp.messages) > before[1])
        assert (len(receiver.bodies("/alice")), len(smtp.messages)) == (before[0], before[1] + 1)
        # A restart sends nothing again.
        total = len(receiver.posts) + len(smtp.messages)
        srv.restart()
        time.sleep(1.5)  # a few escalation ticks
        assert len(receiver.posts) + len(smtp.messages) == total
    finally:
        srv.stop()
