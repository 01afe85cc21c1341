"""Pages to people through the notifiers that exist (email, Slack, webhook).

The incidents capability notifies a person's contact method about an
incident; this adapter turns that page into one alert (labels: ``alertname``,
``incident_id``, ``service``, ``urgency``; annotations: ``summary``,
``reason``, ``incident_url``, ``acknowledge``, ``resolve``) and hands it to the
same ``email``/``slack``/``webhook`` integration Alertmanager receivers use,
with the SMTP and Slack defaults of the loaded Alertmanager configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from pitwall.alerting.notify.alerts import StoredAlert
from pitwall.alerting.notify.config import EmailConfig, GlobalConfig, SlackConfig, WebhookConfig
from pitwall.alerting.notify.notifiers.base import Integration, NotifyContext
from pitwall.alerting.notify.notifiers.email import Email
from pitwall.alerting.notify.notifiers.slack import Slack
from pitwall.alerting.notify.notifiers.webhook import Webhook
from pitwall.alerting.notify.templates import Templates

__all__ = ["ContactPager"]


class _Contact(Protocol):
    @property
    def type(self) -> str: ...

    @property
    def address(self) -> str: ...


class ContactPager:
    """Sends a page (any object with the fields of ``incidents.Page``) to one contact method."""

    def __init__(self, global_config: Callable[[], GlobalConfig] = GlobalConfig, external_url: str = "") -> None:
        self.global_config = global_config
        self.external_url = external_url
        self.templates = Templates()

    def _integration(self, contact: _Contact) -> Integration:
        g = self.global_config()
        if contact.type == "email":
            return Email(EmailConfig(to=contact.address, send_resolved=True), 0, g)
        if contact.type == "slack":
            return Slack(SlackConfig(api_url=contact.address, send_resolved=True), 0, None, None)
        return Webhook(WebhookConfig(url=contact.address), 0)

    async def page(self, contact: _Contact, page: Any) -> None:
        """Deliver ``page`` to ``contact``; raises the notifier's ``DeliveryError`` on failure."""
        now = datetime.now(UTC)
        alert = StoredAlert(
            labels={"alertname": f"[#{page.number}] {page.title}", "incident_id": page.incident_id,
                    "service": page.service, "urgency": page.urgency, "user": page.user_name},
            annotations={"summary": page.title, "reason": page.reason, "incident_url": page.url,
                         "acknowledge": f"PUT {page.url} status=acknowledged",
                         "resolve": f"PUT {page.url} status=resolved"},
            starts_at=now, ends_at=None if page.status != "resolved" else now, updated_at=now,
            generator_url=page.url)
        ctx = NotifyContext(receiver=f"incidents/{page.user_id}", group_key=f"incident/{page.incident_id}",
                            group_labels={"incident_id": page.incident_id}, now=now,
                            external_url=self.external_url, templates=self.templates)
        integration = self._integration(contact)
        try:
            await integration.notify(ctx, [alert])
        finally:
            await integration.close()
