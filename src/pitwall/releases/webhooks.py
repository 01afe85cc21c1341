"""Flagger's webhooks (``pkg/controller/webhook.go``): a JSON POST of ``CanaryWebhookPayload`` with the
webhook's timeout (default 10s) and retries; an answer above 202 is a refusal whose body is the reason."""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
from starlette.types import ASGIApp

from pitwall.releases.model import CanaryView, duration_s
from pitwall.releases.workload import compute_hash

__all__ = ["HOOK_TYPES", "WebhookError", "call_event_webhook", "call_webhook", "checksum", "in_process_http",
           "payload"]

HOOK_TYPES = ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion",
              "post-rollout", "rollback", "event")
_MAX_BODY = 64 << 10  # a refusal's reason is read up to this much
_MAX_RETRIES = 10
HttpFactory = Callable[[float, bool], httpx.AsyncClient]


class WebhookError(Exception):
    """The hook refused (status > 202, its body the reason) or could not be reached."""


@functools.cache
def _tls(insecure: bool) -> ssl.SSLContext:
    """One TLS context per verification mode, shared by the webhook clients: building one reads the CA bundle
    (~80 ms here), which was most of the cost of a webhook call."""
    return httpx.create_ssl_context(verify=not insecure)


def default_http(timeout_s: float, insecure: bool) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout_s, verify=_tls(insecure), follow_redirects=False)


def _origin(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}:{url.port or (443 if url.scheme == 'https' else 80)}"


class _InProcess(httpx.AsyncBaseTransport):
    """Hands a request for this server's own ``prefix`` (exact origin, path below the prefix) to ``app`` in
    process, within the request's read timeout as a socket would bound it; anything else goes to the network."""

    def __init__(self, app: ASGIApp, origins: frozenset[str], prefix: str, insecure: bool) -> None:
        self.app = httpx.ASGITransport(app=app, client=("127.0.0.1", 0))
        self.origins, self.prefix = origins, prefix.rstrip("/")
        self.insecure = insecure
        self.network: httpx.AsyncHTTPTransport | None = None  # made for this server's other paths only

    def _mine(self, url: httpx.URL) -> bool:
        return _origin(url) in self.origins and (url.path == self.prefix or url.path.startswith(self.prefix + "/"))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self._mine(request.url):
            self.network = self.network or httpx.AsyncHTTPTransport(verify=_tls(self.insecure))
            return await self.network.handle_async_request(request)
        timeout = (request.extensions.get("timeout") or {}).get("read")
        try:
            async with asyncio.timeout(timeout):
                return await self.app.handle_async_request(request)
        except TimeoutError:
            raise httpx.ReadTimeout(f"no answer within {timeout:g}s", request=request) from None

    async def aclose(self) -> None:
        if self.network is not None:
            await self.network.aclose()


def in_process_http(app: ASGIApp, origins: Iterable[str], prefix: str) -> HttpFactory:
    """Webhook clients that call ``app`` (this server's load tester, mounted at ``prefix``) in process when a
    hook's URL names one of this server's own ``origins`` (``http://127.0.0.1:9090``), and the network otherwise.

    Why in process rather than a credential of the controller's own: Flagger's webhooks carry no token, so on a
    server with ``auth_tokens`` its own load tester would answer 401. Called in process there is no secret at all
    that could be logged, stored in an object, or sent to a foreign host, it works whatever authenticates the
    server's clients (tokens, OIDC, ServiceAccounts) and over TLS without trusting our own certificate, and only
    the load tester's routes are reachable this way (the app holds nothing else). Every other URL, another host
    or another path of this server, is posted exactly as before: the same client, Flagger's headers, no token."""
    own = frozenset(origins)

    def make(timeout_s: float, insecure: bool) -> httpx.AsyncClient:
        transport = _InProcess(app, own, prefix, insecure)
        # Mounted per origin, so the network keeps the client's own settings (environment proxies) elsewhere.
        return httpx.AsyncClient(timeout=timeout_s, verify=_tls(insecure), follow_redirects=False,
                                 mounts={o: transport for o in own})

    return make


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
