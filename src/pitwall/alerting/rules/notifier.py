"""Sending rule alerts to an external Alertmanager (``POST /api/v2/alerts``)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from pitwall.alerting.model import Alert, NotifyFunc

log = logging.getLogger(__name__)

__all__ = ["alertmanager_notify", "fan_out", "postable"]


def _ts(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def postable(alerts: Sequence[Alert]) -> list[dict[str, Any]]:
    """Alertmanager API v2 ``postableAlerts`` JSON."""
    out = []
    for a in alerts:
        item: dict[str, Any] = {"labels": dict(a.labels), "annotations": dict(a.annotations)}
        if a.starts_at is not None:
            item["startsAt"] = _ts(a.starts_at)
        if a.ends_at is not None:
            item["endsAt"] = _ts(a.ends_at)
        if a.generator_url:
            item["generatorURL"] = a.generator_url
        out.append(item)
    return out


def alertmanager_notify(url: str, timeout_s: float = 10.0, client: httpx.AsyncClient | None = None) -> NotifyFunc:
    """A NotifyFunc posting to the Alertmanager at ``url`` (its base URL)."""
    endpoint = url.rstrip("/") + "/api/v2/alerts"

    async def notify(alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        body = postable(alerts)
        if client is not None:
            resp = await client.post(endpoint, json=body, timeout=timeout_s)
        else:
            async with httpx.AsyncClient(timeout=timeout_s) as c:
                resp = await c.post(endpoint, json=body)
        if resp.status_code // 100 != 2:
            raise RuntimeError(f"bad response status {resp.status_code} from {endpoint}")

    return notify


def fan_out(targets: Sequence[NotifyFunc]) -> NotifyFunc:
    """One NotifyFunc sending to every target; a failing target does not stop the others."""

    async def notify(alerts: Sequence[Alert]) -> None:
        for target in targets:
            try:
                await target(alerts)
            except Exception as e:
                log.warning("error sending alerts", extra={"err": str(e), "count": len(alerts)})

    return notify
