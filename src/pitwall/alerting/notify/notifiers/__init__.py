"""Integrations: build the configured notifiers of each receiver."""

from __future__ import annotations

from pitwall.alerting.notify.config import GlobalConfig, ReceiverConfig
from pitwall.alerting.notify.notifiers.base import Integration, NotifyContext
from pitwall.alerting.notify.notifiers.email import Email
from pitwall.alerting.notify.notifiers.pagerduty import PagerDuty
from pitwall.alerting.notify.notifiers.slack import Slack
from pitwall.alerting.notify.notifiers.webhook import Webhook, webhook_payload

__all__ = ["Email", "Integration", "NotifyContext", "PagerDuty", "Slack", "Webhook", "build_integrations",
           "webhook_payload"]


def build_integrations(rcv: ReceiverConfig, g: GlobalConfig) -> list[Integration]:
    """The receiver's integrations in Alertmanager's order (index counts within each type)."""
    out: list[Integration] = []
    out.extend(Webhook(c, i) for i, c in enumerate(rcv.webhook_configs))
    out.extend(Email(c, i, g) for i, c in enumerate(rcv.email_configs))
    out.extend(PagerDuty(c, i, g.pagerduty_url) for i, c in enumerate(rcv.pagerduty_configs))
    out.extend(Slack(c, i, g.slack_api_url, g.slack_api_url_file) for i, c in enumerate(rcv.slack_configs))
    return out
