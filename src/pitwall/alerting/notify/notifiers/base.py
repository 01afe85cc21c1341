"""What every integration shares: the notification context, the HTTP client, retry rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import httpx

from pitwall.alerting.notify.alerts import StoredAlert
from pitwall.alerting.notify.errors import DeliveryError
from pitwall.alerting.notify.templates import TemplateData, Templates, build_data
from pitwall.core.httpconfig import HTTPClientConfig, auth_header, read_secret, ssl_context

__all__ = ["Integration", "NotifyContext", "check_response", "http_client", "read_secret_file"]

USER_AGENT = "Alertmanager/0.25.0 (pitwall)"


@dataclass(frozen=True)
class NotifyContext:
    """What a flush knows about the notification it sends."""

    receiver: str
    group_key: str
    group_labels: dict[str, str]
    now: datetime
    external_url: str
    templates: Templates

    def data(self, alerts: list[StoredAlert]) -> TemplateData:
        return build_data(self.receiver, self.group_labels, alerts, self.external_url, self.now)


class Integration(Protocol):
    """One configured notifier (``webhook_configs[0]`` of a receiver)."""

    name: str  # "webhook", "email", "slack", "pagerduty"
    index: int
    send_resolved: bool

    async def notify(self, ctx: NotifyContext, alerts: list[StoredAlert]) -> None:
        """Deliver, or raise DeliveryError (``retryable`` says whether trying again may help)."""
        ...

    async def close(self) -> None: ...


def read_secret_file(path: str, what: str) -> str:
    try:
        return read_secret(None, path)
    except OSError as e:
        raise DeliveryError(f"unable to read {what} {path}: {e.strerror}", retryable=False) from e


def http_client(cfg: HTTPClientConfig | None, timeout: float = 10.0) -> httpx.AsyncClient:
    """An httpx client honouring Prometheus' ``http_config`` (auth, TLS, proxy, redirects)."""
    cfg = cfg or HTTPClientConfig()
    headers = {"User-Agent": USER_AGENT}
    try:
        auth = auth_header(cfg)
    except OSError as e:
        raise DeliveryError(f"unable to read credentials file {e.filename}: {e.strerror}", retryable=False) from e
    if auth:
        headers["Authorization"] = auth
    return httpx.AsyncClient(
        headers=headers, verify=ssl_context(cfg.tls_config), proxy=cfg.proxy_url,
        follow_redirects=cfg.follow_redirects, timeout=timeout, trust_env=False,
    )


async def post_json(client: httpx.AsyncClient, url: str, body: bytes, retry_codes: tuple[int, ...] = ()) -> None:
    """POST a JSON body; map transport errors and statuses to DeliveryError as Alertmanager's Retrier does."""
    try:
        resp = await client.post(url, content=body, headers={"Content-Type": "application/json"})
    except httpx.HTTPError as e:
        raise DeliveryError(f"request to {_redact(url)} failed: {e.__class__.__name__}: {e}") from e
    check_response(resp, retry_codes)


def check_response(resp: httpx.Response, retry_codes: tuple[int, ...] = ()) -> None:
    """2xx is success; 5xx (and ``retry_codes``) may succeed later; other statuses will not."""
    code = resp.status_code
    if 200 <= code < 300:
        return
    body = resp.text[:512].strip()
    retryable = code // 100 == 5 or code in retry_codes
    raise DeliveryError(f"unexpected status code {code}: {body}" if body else f"unexpected status code {code}",
                        retryable=retryable)


def _redact(url: str) -> str:
    """Webhook and chat URLs often carry tokens: show scheme and host only."""
    parts = httpx.URL(url)
    return f"{parts.scheme}://{parts.host}{':' + str(parts.port) if parts.port else ''}/<redacted>"
