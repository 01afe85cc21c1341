"""Integrations: build the configured notifiers of each receiver."""

from __future__ import annotations

from collections.abc import Callable

from pitwall.alerting.notify.config import GlobalConfig, ReceiverConfig
from pitwall.alerting.notify.notifiers.base import Integration, NotifyContext
from pitwall.alerting.notify.notifiers.email import Email
from pitwall.alerting.notify.notifiers.incident import IncidentIntake, PitwallIncident
from pitwall.alerting.notify.notifiers.pagerduty import PagerDuty
from pitwall.alerting.notify.notifiers.slack import Slack
from pitwall.alerting.notify.notifiers.webhook import Webhook, webhook_payload

__all__ = ["Email", "IncidentIntake", "Integration", "NotifyContext", "PagerDuty", "PitwallIncident", "Slack",
           "Webhook", "build_integrations", "webhook_payload"]


def _no_intake() -> IncidentIntake | None:
    return None


def build_integrations(rcv: ReceiverConfig, g: GlobalConfig,
                       incidents: Callable[[], IncidentIntake | None] = _no_intake) -> list[Integration]:
    """The receiver's integrations in Alertmanager's order (index counts within each type), then pitwall's
    own; ``incidents`` gives the incidents capability (None: not wired) when a notification is sent."""
    out: list[Integration] = []
    out.extend(Webhook(c, i) for i, c in enumerate(rcv.webhook_configs))
    out.extend(Email(c, i, g) for i, c in enumerate(rcv.email_configs))
    out.extend(PagerDuty(c, i, g.pagerduty_url) for i, c in enumerate(rcv.pagerduty_configs))
    out.extend(Slack(c, i, g.slack_api_url, g.slack_api_url_file) for i, c in enumerate(rcv.slack_configs))
    out.extend(PitwallIncident(c, i, incidents) for i, c in enumerate(rcv.pitwall_incident_configs))
    return out
