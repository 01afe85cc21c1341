"""``pagerduty_configs``: PagerDuty Events API v2 (``routing_key``) or v1 (``service_key``).

``events_v2_message`` builds one Events API v2 event from the templated fields;
``pitwall_incident_configs`` (``notifiers.incident``) builds its events with it too.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pitwall.alerting.notify.alerts import StoredAlert
from pitwall.alerting.notify.config import PagerdutyConfig, PagerdutyEventFields
from pitwall.alerting.notify.notifiers.base import NotifyContext, http_client, post_json, read_secret_file
from pitwall.alerting.notify.templates import TemplateData

__all__ = ["PagerDuty", "events_v2_message", "group_dedup_key"]

_V1_URL = "https://events.pagerduty.com/generic/2010-04-15/create_event.json"
_MAX_SUMMARY = 1024


def _truncate(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def group_dedup_key(group_key: str) -> str:
    """Alertmanager's PagerDuty dedup key: the SHA-256 of the notification group's key, in hex."""
    return hashlib.sha256(group_key.encode()).hexdigest()


def events_v2_message(c: PagerdutyEventFields, ctx: NotifyContext, data: TemplateData, *, dedup_key: str,
                      routing_key: str = "") -> dict[str, Any]:
    """An Events API v2 event as Alertmanager sends it: trigger while ``data`` is firing, else resolve;
    empty optional fields omitted (Go's ``omitempty``); no ``routing_key`` when none is given."""

    def r(text: str) -> str:
        return ctx.templates.render(text, data)

    payload: dict[str, Any] = {
        "summary": _truncate(r(c.description), _MAX_SUMMARY), "source": r(c.source),
        "severity": r(c.severity), "class": r(c.class_), "component": r(c.component), "group": r(c.group),
        "custom_details": {k: r(v) for k, v in c.details.items()},
    }
    msg: dict[str, Any] = {
        "routing_key": routing_key, "dedup_key": dedup_key,
        "event_action": "trigger" if data.Status == "firing" else "resolve",
        "payload": {k: v for k, v in payload.items() if v or k in ("summary", "source", "severity")},
        "client": r(c.client), "client_url": r(c.client_url),
        "images": [{k: r(v) for k, v in i.model_dump().items() if v} for i in c.images],
        "links": [{k: r(v) for k, v in ln.model_dump().items() if v} for ln in c.links],
    }
    return {k: v for k, v in msg.items() if v or k in ("event_action", "payload")}


class PagerDuty:
    name = "pagerduty"

    def __init__(self, cfg: PagerdutyConfig, index: int, global_url: str) -> None:
        self.cfg = cfg
        self.index = index
        self.send_resolved = cfg.send_resolved
        self.url = cfg.url or global_url
        self.client = http_client(cfg.http_config)

    def message(self, ctx: NotifyContext, alerts: list[StoredAlert]) -> dict[str, Any]:
        data = ctx.data(alerts)
        c = self.cfg
        dedup = group_dedup_key(ctx.group_key)
        if c.service_key or c.service_key_file:
            return self._v1(ctx, data, dedup)
        key = c.routing_key or read_secret_file(c.routing_key_file, "routing key file")
        return events_v2_message(c, ctx, data, dedup_key=dedup, routing_key=key)

    def _v1(self, ctx: NotifyContext, data: TemplateData, dedup: str) -> dict[str, Any]:
        c = self.cfg

        def r(text: str) -> str:
            return ctx.templates.render(text, data)

        key = c.service_key or read_secret_file(c.service_key_file, "service key file")
        v1 = {"service_key": key, "incident_key": dedup,
              "event_type": "trigger" if data.Status == "firing" else "resolve",
              "description": _truncate(r(c.description), _MAX_SUMMARY), "client": r(c.client),
              "client_url": r(c.client_url), "details": {k: r(v) for k, v in c.details.items()}}
        return {k: v for k, v in v1.items() if v}

    async def notify(self, ctx: NotifyContext, alerts: list[StoredAlert]) -> None:
        body = json.dumps(self.message(ctx, alerts)).encode()
        v1 = bool(self.cfg.service_key or self.cfg.service_key_file)
        url = (self.cfg.url or _V1_URL) if v1 else self.url
        # PagerDuty rate-limits with 429 (v2) or 403 (v1); both are worth retrying.
        await post_json(self.client, url, body, retry_codes=(403,) if v1 else (429,))

    async def close(self) -> None:
        await self.client.aclose()
