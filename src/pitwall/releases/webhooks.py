"""Flagger's webhooks (``pkg/controller/webhook.go``): a JSON POST of ``CanaryWebhookPayload`` with the
webhook's timeout (default 10s) and retries; an answer above 202 is a refusal whose body is the reason."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from pitwall.releases.model import CanaryView, duration_s
from pitwall.releases.workload import compute_hash

__all__ = ["HOOK_TYPES", "WebhookError", "call_event_webhook", "call_webhook", "checksum", "payload"]

HOOK_TYPES = ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion",
              "post-rollout", "rollback", "event")
_MAX_BODY = 64 << 10  # a refusal's reason is read up to this much
_MAX_RETRIES = 10
HttpFactory = Callable[[float, bool], httpx.AsyncClient]


class WebhookError(Exception):
    """The hook refused (status > 202, its body the reason) or could not be reached."""


def default_http(timeout_s: float, insecure: bool) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout_s, verify=not insecure, follow_redirects=False)


def checksum(cd: CanaryView) -> str:
    """A hash of the Canary's tracked configs and last applied spec (Flagger's canaryChecksum)."""
    return compute_hash({"TrackedConfigs": cd.status.get("trackedConfigs"),
                         "LastAppliedSpec": cd.status.get("lastAppliedSpec") or ""})


def payload(cd: CanaryView, phase: str, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": cd.name, "namespace": cd.namespace, "phase": phase, "checksum": checksum(cd)}
    if metadata:
        out["metadata"] = {str(k): str(v) for k, v in metadata.items()}
    return out


def _timeout(hook: Mapping[str, Any]) -> float:
    text = str(hook.get("timeout") or "")
    if len(text) < 2:
        return 10.0
    try:
        return max(duration_s(text), 0.001)
    except ValueError:
        return 10.0


async def _post(http: HttpFactory, hook: Mapping[str, Any], body: dict[str, Any]) -> None:
    url = str(hook.get("url") or "")
    if not url.startswith(("http://", "https://")):
        raise WebhookError(f"webhook {hook.get('name')}: url {url!r} is not http(s)")
    retries = min(int(hook.get("retries") or 0), _MAX_RETRIES)
    last: Exception | None = None
    async with http(_timeout(hook), bool(hook.get("disableTLS"))) as client:
        for attempt in range(retries + 1):
            if attempt:
                await asyncio.sleep(min(1.0 * 2 ** (attempt - 1), 30.0))  # retryablehttp's back-off, capped
            try:
                async with client.stream("POST", url, json=body) as r:
                    reason = b""
                    async for chunk in r.aiter_bytes():
                        reason += chunk
                        if len(reason) >= _MAX_BODY:
                            break
                if r.status_code <= 202:
                    return
                last = WebhookError(reason[:_MAX_BODY].decode(errors="replace") or f"status {r.status_code}")
                if r.status_code < 500:
                    break  # retryablehttp retries only 5xx and transport errors
            except httpx.HTTPError as e:
                last = WebhookError(str(e) or type(e).__name__)
    assert last is not None
    raise last


async def call_webhook(http: HttpFactory, cd: CanaryView, phase: str, hook: Mapping[str, Any]) -> None:
    """POST the payload for ``phase`` with the hook's metadata; ``WebhookError`` when it refuses."""
    await _post(http, hook, payload(cd, phase, hook.get("metadata")))


async def call_event_webhook(http: HttpFactory, cd: CanaryView, hook: Mapping[str, Any], message: str,
                             event_type: str) -> None:
    """An ``event`` hook: the payload with eventMessage, eventType and a millisecond timestamp (the hook's own
    metadata added where it does not clash)."""
    meta = {"eventMessage": message, "eventType": event_type, "timestamp": str(int(time.time() * 1000))}
    for k, v in (hook.get("metadata") or {}).items():
        meta.setdefault(str(k), str(v))
    await _post(http, hook, payload(cd, cd.phase, meta))
