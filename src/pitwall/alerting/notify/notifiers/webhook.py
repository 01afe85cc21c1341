"""``webhook_configs``: Alertmanager's webhook payload, version 4."""

from __future__ import annotations

import json
from typing import Any

from pitwall.alerting.notify.alerts import StoredAlert
from pitwall.alerting.notify.config import WebhookConfig
from pitwall.alerting.notify.notifiers.base import NotifyContext, http_client, post_json, read_secret_file
from pitwall.alerting.notify.templates import TemplateData, rfc3339

__all__ = ["Webhook", "webhook_payload"]


def webhook_payload(data: TemplateData, group_key: str, alerts: list[StoredAlert], truncated: int) -> dict[str, Any]:
    """The JSON body Alertmanager POSTs: template data plus version, groupKey, truncatedAlerts."""
    return {
        "receiver": data.Receiver,
        "status": data.Status,
        "alerts": [
            {
                "status": ta.Status,
                "labels": dict(ta.Labels),
                "annotations": dict(ta.Annotations),
                "startsAt": rfc3339(a.starts_at),
                "endsAt": rfc3339(a.ends_at),
                "generatorURL": ta.GeneratorURL,
                "fingerprint": ta.Fingerprint,
            }
            for ta, a in zip(data.Alerts, alerts, strict=True)
        ],
        "groupLabels": dict(data.GroupLabels),
        "commonLabels": dict(data.CommonLabels),
        "commonAnnotations": dict(data.CommonAnnotations),
        "externalURL": data.ExternalURL,
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": truncated,
    }


class Webhook:
    name = "webhook"

    def __init__(self, cfg: WebhookConfig, index: int) -> None:
        self.cfg = cfg
        self.index = index
        self.send_resolved = cfg.send_resolved
        self.client = http_client(cfg.http_config, timeout=cfg.timeout / 1000 if cfg.timeout else 10.0)

    async def notify(self, ctx: NotifyContext, alerts: list[StoredAlert]) -> None:
        truncated = 0
        if self.cfg.max_alerts and len(alerts) > self.cfg.max_alerts:
            truncated = len(alerts) - self.cfg.max_alerts
            alerts = alerts[: self.cfg.max_alerts]
        body = webhook_payload(ctx.data(alerts), ctx.group_key, alerts, truncated)
        url = self.cfg.url or read_secret_file(self.cfg.url_file or "", "webhook url file")
        await post_json(self.client, url, json.dumps(body).encode())

    async def close(self) -> None:
        await self.client.aclose()
