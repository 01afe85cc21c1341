"""Pages to people through the notifiers that exist (email, Slack, webhook).

The incidents capability notifies a person's contact method about an
incident; this adapter turns that page into one alert (labels: ``alertname``,
``incident_id``, ``service``, ``urgency``, ``user``; annotations: ``summary``,
``reason``, ``incident_url`` (the REST API), ``html_url`` (the UI's page) and,
when the page carries them, ``acknowledge_url`` and ``resolve_url``: signed
links that act as the paged user) and hands it to the same
``email``/``slack``/``webhook`` integration Alertmanager receivers use, with the
SMTP defaults of the loaded Alertmanager configuration. E-mail (HTML and text
parts) and Slack get pitwall's page texts below, with the two links as buttons
or ``<url|Acknowledge>`` links; a webhook gets Alertmanager's JSON payload.
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

__all__ = ["PAGE_TEMPLATES", "ContactPager"]

# The texts of a page (one alert: ``index .Alerts 0``). E-mail clients drop <style>: styles are inline.
PAGE_TEMPLATES = r"""
{{ define "incidents.page.subject" }}{{ with index .Alerts 0 }}pitwall {{ .Labels.urgency }} urgency: {{ .Labels.alertname }} on {{ .Labels.service }} ({{ .Annotations.reason }}){{ end }}{{ end }}

{{ define "incidents.page.text" }}{{ with index .Alerts 0 }}Incident {{ .Labels.alertname }}
Service: {{ .Labels.service }}
Urgency: {{ .Labels.urgency }}
Why you get this: {{ .Annotations.reason }}
{{ if .Annotations.acknowledge_url }}
Acknowledge: {{ .Annotations.acknowledge_url }}
Resolve:     {{ .Annotations.resolve_url }}
(Both act as {{ .Labels.user }}; each page asks you to confirm.)
{{ end }}
View the incident: {{ .Annotations.html_url }}
{{ end }}{{ end }}

{{ define "incidents.page.html" -}}
<!DOCTYPE html>
<html><head><meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<meta name="viewport" content="width=device-width" /><title>{{ with index .Alerts 0 }}{{ html .Labels.alertname }}{{ end }}</title></head>
<body style="margin:0;padding:16px;background:#f5f7fa;font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;font-size:14px;color:#1b1f24">
{{ with index .Alerts 0 -}}
<table width="100%" cellpadding="0" cellspacing="0" style="max-width:600px;margin:0 auto;background:#fff;border:1px solid #d8dee6;border-radius:6px">
<tr><td style="padding:16px 20px;border-bottom:1px solid #d8dee6"><strong style="font-size:16px">{{ html .Labels.alertname }}</strong></td></tr>
<tr><td style="padding:16px 20px"><table cellpadding="0" cellspacing="0">
<tr><td style="color:#5f6b7a;padding:2px 12px 2px 0">Service</td><td>{{ html .Labels.service }}</td></tr>
<tr><td style="color:#5f6b7a;padding:2px 12px 2px 0">Urgency</td><td>{{ html .Labels.urgency }}</td></tr>
<tr><td style="color:#5f6b7a;padding:2px 12px 2px 0">Why you get this</td><td>{{ html .Annotations.reason }}</td></tr>
</table></td></tr>
{{ if .Annotations.acknowledge_url }}<tr><td style="padding:0 20px 16px">
<a href="{{ html .Annotations.acknowledge_url }}" style="display:inline-block;padding:8px 16px;margin-right:8px;background:#1f6feb;color:#fff;border-radius:6px;text-decoration:none;font-weight:600">Acknowledge</a>
<a href="{{ html .Annotations.resolve_url }}" style="display:inline-block;padding:8px 16px;background:#1a7f37;color:#fff;border-radius:6px;text-decoration:none;font-weight:600">Resolve</a>
<p style="color:#5f6b7a;font-size:12px">Both links act as {{ html .Labels.user }}; each page asks you to confirm.</p>
</td></tr>{{ end }}
<tr><td style="padding:0 20px 16px"><a href="{{ html .Annotations.html_url }}" style="color:#1f6feb">View the incident in pitwall</a></td></tr>
</table>
{{- end }}
</body></html>
{{- end }}

{{ define "incidents.page.slack.title" }}{{ with index .Alerts 0 }}{{ .Labels.alertname }}{{ end }}{{ end }}
{{ define "incidents.page.slack.text" }}{{ with index .Alerts 0 }}*{{ .Labels.service }}* · {{ .Labels.urgency }} urgency · {{ .Annotations.reason }}{{ if .Annotations.acknowledge_url }}
<{{ .Annotations.acknowledge_url }}|Acknowledge> · <{{ .Annotations.resolve_url }}|Resolve> (as {{ .Labels.user }}){{ end }}{{ end }}{{ end }}
"""
_T = '{{{{ template "incidents.page.{}" . }}}}'


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
        self.templates.define(PAGE_TEMPLATES, "__pitwall_pages")

    def _integration(self, contact: _Contact) -> Integration:
        g = self.global_config()
        if contact.type == "email":
            return Email(EmailConfig(to=contact.address, send_resolved=True, headers={"Subject": _T.format("subject")},
                                     html=_T.format("html"), text=_T.format("text")), 0, g)
        if contact.type == "slack":
            return Slack(SlackConfig(api_url=contact.address, send_resolved=True, title=_T.format("slack.title"),
                                     title_link='{{ with index .Alerts 0 }}{{ .Annotations.html_url }}{{ end }}',
                                     text=_T.format("slack.text"), fallback=_T.format("slack.title"),
                                     username="pitwall", mrkdwn_in=["text"]), 0, None, None)
        return Webhook(WebhookConfig(url=contact.address), 0)

    async def page(self, contact: _Contact, page: Any) -> None:
        """Deliver ``page`` to ``contact``; raises the notifier's ``DeliveryError`` on failure."""
        now = datetime.now(UTC)
        links = {k: v for k in ("acknowledge_url", "resolve_url") if (v := getattr(page, k, ""))}
        alert = StoredAlert(
            labels={"alertname": f"[#{page.number}] {page.title}", "incident_id": page.incident_id,
                    "service": page.service, "urgency": page.urgency, "user": page.user_name},
            annotations={"summary": page.title, "reason": page.reason, "incident_url": page.url,
                         "html_url": getattr(page, "html_url", "") or page.url, **links},
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
