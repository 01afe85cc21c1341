"""``slack_configs``: an incoming-webhook message with one attachment, as Alertmanager builds it."""

from __future__ import annotations

import json
from typing import Any

from pitwall.alerting.notify.alerts import StoredAlert
from pitwall.alerting.notify.config import SlackConfig
from pitwall.alerting.notify.notifiers.base import NotifyContext, http_client, post_json, read_secret_file

__all__ = ["Slack"]


class Slack:
    name = "slack"

    def __init__(self, cfg: SlackConfig, index: int, global_url: str | None, global_url_file: str | None) -> None:
        self.cfg = cfg
        self.index = index
        self.send_resolved = cfg.send_resolved
        self.url = cfg.api_url or global_url
        self.url_file = cfg.api_url_file or global_url_file
        self.client = http_client(cfg.http_config)

    def message(self, ctx: NotifyContext, alerts: list[StoredAlert]) -> dict[str, Any]:
        """The JSON Slack receives (empty optional fields omitted, as Go's ``omitempty`` does)."""
        data = ctx.data(alerts)
        c = self.cfg

        def r(text: str) -> str:
            return ctx.templates.render(text, data)

        att: dict[str, Any] = {
            "title": r(c.title), "title_link": r(c.title_link), "pretext": r(c.pretext), "text": r(c.text),
            "fallback": r(c.fallback), "callback_id": r(c.callback_id), "footer": r(c.footer),
            "color": r(c.color), "mrkdwn_in": c.mrkdwn_in, "image_url": c.image_url, "thumb_url": c.thumb_url,
        }
        if c.fields:
            att["fields"] = [{"title": r(f.title), "value": r(f.value),
                              "short": f.short if f.short is not None else c.short_fields} for f in c.fields]
        if c.actions:
            att["actions"] = [_action(a.model_dump(exclude_none=True), r) for a in c.actions]
        msg: dict[str, Any] = {
            "channel": r(c.channel), "username": r(c.username), "icon_emoji": r(c.icon_emoji),
            "icon_url": r(c.icon_url), "link_names": c.link_names, "attachments": [_omit_empty(att)],
        }
        return _omit_empty(msg)

    async def notify(self, ctx: NotifyContext, alerts: list[StoredAlert]) -> None:
        url = self.url or read_secret_file(self.url_file or "", "Slack API URL file")
        await post_json(self.client, url, json.dumps(self.message(ctx, alerts)).encode(), retry_codes=(429,))

    async def close(self) -> None:
        await self.client.aclose()


def _action(a: dict[str, Any], r: Any) -> dict[str, Any]:
    out = {k: (r(v) if isinstance(v, str) else v) for k, v in a.items()}
    return _omit_empty(out)


def _omit_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in ("", None, False, [], {})}
