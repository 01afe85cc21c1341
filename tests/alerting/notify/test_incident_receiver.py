"""``pitwall_incident_configs``: parsing (good and bad, the key named) and the events one notification becomes.

The incidents side is a fake ``IncidentIntake`` here; ``tests/incidents/test_alert_intake.py`` runs the
real pipeline into the real incidents capability.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pitwall.alerting.notify.alerts import StoredAlert
from pitwall.alerting.notify.config import parse_config
from pitwall.alerting.notify.errors import DeliveryError
from pitwall.alerting.notify.notifiers import NotifyContext, PagerDuty, PitwallIncident, build_integrations
from pitwall.alerting.notify.notifiers.pagerduty import group_dedup_key
from pitwall.alerting.notify.templates import Templates
from pitwall.core.errors import BadData, ConfigError, NotFound, Unavailable

NOW = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)
GROUP_KEY = '{}:{alertname="DiskFull"}'


def _cfg(receiver: str) -> str:
    return f"route: {{receiver: r}}\nreceivers:\n  - {{name: r, pitwall_incident_configs: [{receiver}]}}\n"


def test_good_config_defaults_match_pagerduty_configs() -> None:
    cfg = parse_config(_cfg("{service: web}") + "  - name: pd\n    pagerduty_configs: [{routing_key: k}]\n")
    (pw,) = cfg.config.receivers[0].pitwall_incident_configs
    (pd,) = cfg.config.receivers[1].pagerduty_configs
    assert pw.service == "web" and pw.routing_key == "" and pw.send_resolved is True
    for field in ("description", "details", "severity", "client", "client_url", "source", "component"):
        assert getattr(pw, field) == getattr(pd, field), field
    assert "pitwall_incident_configs" in cfg.to_yaml()
    by_key = parse_config(_cfg("{routing_key: R0UT1NGKEY0000000000000000000001, severity: critical, "
                               "send_resolved: false, description: '{{ .CommonLabels.alertname }}'}"))
    (c,) = by_key.config.receivers[0].pitwall_incident_configs
    assert (c.routing_key, c.severity, c.send_resolved) == ("R0UT1NGKEY0000000000000000000001", "critical", False)
    assert "R0UT1NGKEY" not in by_key.to_yaml()  # routing keys are masked as pagerduty_configs' are


@pytest.mark.parametrize(("receiver", "message"), [
    ("{}", "receivers[0].pitwall_incident_configs[0]: one of service or routing_key must be configured"),
    ("{service: web, routing_key: k}",
     "receivers[0].pitwall_incident_configs[0]: at most one of service & routing_key must be configured"),
    ("{service: web, url: 'http://x/v2/enqueue'}", "receivers[0].pitwall_incident_configs[0].url: field not found"),
    ("{service: web, alert_dedup: alert}",
     "receivers[0].pitwall_incident_configs[0].alert_dedup: field not found"),
])
def test_bad_config_names_the_key(receiver: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(receiver))
    assert message in e.value.message


def test_unsupported_message_lists_the_new_type() -> None:
    with pytest.raises(ConfigError, match="pagerduty_configs, pitwall_incident_configs"):
        parse_config("route: {receiver: r}\nreceivers: [{name: r, opsgenie_configs: [{api_key: x}]}]\n")


class FakeIntake:
    """Records what the receiver hands over; ``fail`` raises on enqueue."""

    def __init__(self, mode: str = "group", fail: Exception | None = None) -> None:
        self.mode = mode
        self.fail = fail
        self.events: list[tuple[str, dict[str, Any], str]] = []

    async def alert_dedup(self, service: str) -> str:
        if service == "nope":
            raise NotFound("no incidents service 'nope'")
        return self.mode

    async def enqueue(self, service: str, events: Sequence[Mapping[str, Any]], incident_key: str = "") -> None:
        if self.fail is not None:
            raise self.fail
        self.events += [(service, dict(e), incident_key) for e in events]


def _alert(instance: str, resolved: bool = False) -> StoredAlert:
    return StoredAlert({"alertname": "DiskFull", "instance": instance}, {"summary": f"disk full on {instance}"},
                       NOW - timedelta(minutes=5), NOW - timedelta(minutes=1) if resolved else None, NOW)


def _ctx() -> NotifyContext:
    return NotifyContext("r", GROUP_KEY, {"alertname": "DiskFull"}, NOW, "http://pw", Templates([]))


def _receiver(intake: FakeIntake | None, receiver: str = "{service: web}") -> PitwallIncident:
    cfg = parse_config(_cfg(receiver)).config
    (integ,) = build_integrations(cfg.receivers[0], cfg.global_, lambda: intake)
    assert isinstance(integ, PitwallIncident) and integ.name == "pitwall_incident"
    return integ


async def test_group_dedup_sends_what_pagerduty_configs_sends_minus_the_routing_key(tmp_path: Path) -> None:
    intake = FakeIntake("group")
    alerts = [_alert("db1"), _alert("db2", resolved=True)]
    await _receiver(intake).notify(_ctx(), alerts)
    ((service, event, incident_key),) = intake.events
    assert (service, incident_key) == ("web", "")
    cfg = parse_config("route: {receiver: r}\nreceivers: [{name: r, pagerduty_configs: [{routing_key: K}]}]\n")
    pd = PagerDuty(cfg.config.receivers[0].pagerduty_configs[0], 0, "http://x")
    try:
        want = pd.message(_ctx(), alerts)
    finally:
        await pd.close()
    assert want.pop("routing_key") == "K"
    assert event == want and event["dedup_key"] == group_dedup_key(GROUP_KEY)
    assert event["event_action"] == "trigger" and event["payload"]["summary"].startswith("[FIRING:1] DiskFull")


async def test_alert_dedup_sends_one_event_per_alert_triggers_first() -> None:
    intake = FakeIntake("alert")
    resolved, firing = _alert("db1", resolved=True), _alert("db2")
    await _receiver(intake, "{routing_key: R0UT1NGKEY0000000000000000000001}").notify(_ctx(), [resolved, firing])
    assert [(e["event_action"], e["dedup_key"]) for _, e, _ in intake.events] == [
        ("trigger", firing.fingerprint), ("resolve", resolved.fingerprint)]
    assert {k for _, _, k in intake.events} == {group_dedup_key(GROUP_KEY)}  # the group's incident
    assert {s for s, _, _ in intake.events} == {"R0UT1NGKEY0000000000000000000001"}
    summaries = [e["payload"]["summary"] for _, e, _ in intake.events]
    assert "db2" in summaries[0] and "db1" not in summaries[0]  # each event rendered over its own alert


@pytest.mark.parametrize(("intake", "receiver", "retryable", "message"), [
    (None, "{service: web}", False, "no incidents capability is wired"),
    (FakeIntake(), "{service: nope}", False, "incident service 'nope': no incidents service 'nope'"),
    (FakeIntake(fail=BadData("Event object is invalid: 'payload.severity' is invalid")),
     "{service: web, severity: fatal}", False, "'payload.severity' is invalid"),
    (FakeIntake(fail=Unavailable("incident Q1: too many concurrent updates")), "{service: web}", True,
     "too many concurrent updates"),
    (FakeIntake(fail=OSError("database is locked")), "{service: web}", True, "OSError: database is locked"),
])
async def test_failures_say_why_and_whether_to_retry(intake: FakeIntake | None, receiver: str, retryable: bool,
                                                     message: str) -> None:
    with pytest.raises(DeliveryError) as e:
        await _receiver(intake, receiver).notify(_ctx(), [_alert("db1")])
    assert e.value.retryable is retryable and message in e.value.message
