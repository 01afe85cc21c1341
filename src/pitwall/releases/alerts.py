"""Flagger's alerts (``pkg/controller/events.go`` ``alert`` and ``pkg/notifier``): a Canary's
``analysis.alerts`` name AlertProviders (slack, msteams, discord, rocket, gchat); at the events Flagger alerts
on, each alert whose severity matches gets Flagger's message in the provider's payload shape, posted through
pitwall's notifier HTTP client (the Alertmanager notifiers' client, timeouts and error mapping).

Severity: an alert of ``info`` gets everything, ``warn`` gets warnings and
errors, ``error`` only errors. An empty severity is the CRD's documented
default ``info`` (Flagger 1.44's code sends nothing for it; see releases.md).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from pitwall.alerting import DeliveryError, notifier_client, notifier_post
from pitwall.core.httpconfig import HTTPClientConfig
from pitwall.kube import KubeClient, NotFoundError
from pitwall.releases.model import API_VERSION, CanaryView
from pitwall.releases.settings import NotifierSettings

__all__ = ["ALERT_PROVIDER", "PROVIDERS", "Alerter", "alert_metadata", "message_payload", "should_alert"]

log = logging.getLogger(__name__)
ALERT_PROVIDER = "AlertProvider"
PROVIDERS = ("slack", "msteams", "discord", "rocket", "gchat")
TIMEOUT_S = 5.0  # Flagger's postMessage timeout
Field = tuple[str, str]


def should_alert(alert_severity: str, severity: str) -> bool:
    """Flagger's rule: info gets all, a match gets its own, warn also gets errors."""
    want = alert_severity or "info"
    return want == "info" or want == severity or (severity == "error" and want == "warn")


def alert_metadata(cd: CanaryView) -> list[Field]:
    """Flagger's alertMetadata: target, threshold, progress deadline and the traffic routing."""
    kind = str(cd.target_ref.get("kind") or "Deployment")
    a = cd.analysis
    out = [("Target", f"{kind}/{cd.target}.{cd.namespace}"),
           ("Failed checks threshold", str(cd.threshold)),
           ("Progress deadline", f"{cd.progress_deadline_s}s")]
    strategy = cd.strategy()
    if strategy == "ab-testing":
        out.append(("Traffic routing", "A/B Testing"))
    elif strategy == "blue-green":
        out.append(("Traffic routing", "Blue/Green"))
    elif int(a.get("stepWeight") or 0) > 0:
        out.append(("Traffic routing", f"Weight step: {a.get('stepWeight')} max: {int(a.get('maxWeight') or 0)}"))
    elif a.get("stepWeights"):
        steps = ",".join(str(w) for w in a["stepWeights"])
        out.append(("Traffic routing", f"Weight steps: {steps} max: {int(a.get('maxWeight') or 0)}"))
    return out


def _slack_like(workload: str, namespace: str, message: str, fields: Sequence[Field], username: str,
                channel: str, color: str) -> dict[str, Any]:
    return {"channel": channel, "username": username, "icon_url": "", "icon_emoji": ":rocket:",
            "attachments": [{"color": color, "author_name": f"{workload}.{namespace}", "text": message,
                             "mrkdwn_in": ["text"],
                             "fields": [{"title": n, "value": v, "short": False} for n, v in fields]}]}


def message_payload(kind: str, workload: str, namespace: str, message: str, fields: Sequence[Field],
                    severity: str, username: str = "flagger", channel: str = "general") -> dict[str, Any]:
    """The JSON Flagger's notifier of ``kind`` posts (field order and empty fields as Go marshals them)."""
    error = severity == "error"
    if kind in ("slack", "discord"):
        return _slack_like(workload, namespace, message, fields, username, channel, "danger" if error else "good")
    if kind == "rocket":
        return _slack_like(workload, namespace, message, fields, username, channel,
                           "#FF0000" if error else "#0076D7")
    if kind == "msteams":
        return {"@type": "MessageCard", "@context": "http://schema.org/extensions",
                "themeColor": "FF0000" if error else "0076D7", "summary": f"{workload}.{namespace}",
                "sections": [{"activityTitle": message, "activitySubtitle": f"{workload}.{namespace}",
                              "facts": [{"name": n, "value": v} for n, v in fields]}]}
    if kind == "gchat":
        sections = [{"widgets": [{"textParagraph": {
            "text": f"<font color=#848484><strong>{message}</strong></font>"}}]}]
        sections += [{"widgets": [{"textParagraph": {
            "text": f"{n}<br><font color=#848484><strong>{v}</strong></font>"}}]} for n, v in fields]
        return {"cards": [{"header": {"title": "Flagger", "subtitle": f"{workload}.{namespace}",
                                      "imageUrl": "https://flagger.app/favicon.png"}, "sections": sections}]}
    raise ValueError(f"provider {kind} not supported")


def _check_url(kind: str, url: str) -> str:
    """Go's url.ParseRequestURI as Flagger's notifiers check it; Discord's Slack-compatible path appended."""
    parts = urlsplit(url)
    if not (parts.scheme and (parts.netloc or parts.path.startswith("/"))):
        names = {"slack": "Slack hook", "discord": "Discord hook", "rocket": "Rocket hook",
                 "msteams": "MS Teams webhook", "gchat": "Google Chat webhook"}
        raise ValueError(f"invalid {names.get(kind, kind)} URL {url}")
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported protocol scheme {parts.scheme!r}")
    if kind == "discord" and not url.endswith("/slack"):
        url = parts._replace(path=parts.path.rstrip("/") + "/slack").geturl()
    return url


class Alerter:
    """Sends a Canary's alerts; every failure is logged (as Flagger does) and never stops the analysis. A Canary
    with no ``analysis.alerts`` goes to the global notifier (``releases.notifier``) if there is one, with every
    severity, as Flagger's ``-slack-url``/``-msteams-url``; ``releases.cluster_name`` adds a Cluster field."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.sent = 0
        self.failed = 0
        self.notifier = NotifierSettings()
        self.cluster_name = ""

    def configure(self, notifier: NotifierSettings, cluster_name: str) -> None:
        self.notifier, self.cluster_name = notifier, cluster_name

    async def alert(self, cd: CanaryView, message: str, metadata: bool, severity: str) -> None:
        fields = [("Cluster", self.cluster_name)] if self.cluster_name else []
        fields += alert_metadata(cd) if metadata else []
        alerts = cd.analysis.get("alerts") or []
        if not alerts:
            await self._global(cd, message, fields, severity)
        for alert in alerts:
            if not should_alert(str(alert.get("severity") or ""), severity):
                continue
            ref = alert.get("providerRef") or {}
            ns = str(ref.get("namespace") or cd.namespace)
            where = f"alert provider {ref.get('name')}.{ns}"
            try:
                await self._send(cd, ns, str(ref.get("name") or ""), message, fields, severity)
                self.sent += 1
            except (ValueError, NotFoundError, DeliveryError) as e:
                self.failed += 1
                log.error(f"{where} error: {e}", extra={"canary": cd.key})

    async def _global(self, cd: CanaryView, message: str, fields: Sequence[Field], severity: str) -> None:
        n = self.notifier
        kind, url, proxy = ("msteams", n.msteams_url, n.msteams_proxy_url) if n.msteams_url else \
            ("slack", n.slack_url, n.slack_proxy_url)
        if not url:
            return  # Flagger's NopNotifier
        try:
            await _deliver(kind, url, n.slack_token, proxy, n.slack_user, n.slack_channel, cd, message, fields,
                           severity)
            self.sent += 1
        except (ValueError, DeliveryError) as e:
            self.failed += 1
            log.error(f"alert can't be sent: {e}", extra={"canary": cd.key})

    async def _send(self, cd: CanaryView, ns: str, name: str, message: str, fields: Sequence[Field],
                    severity: str) -> None:
        provider = await self.client.get(API_VERSION, ALERT_PROVIDER, name, ns)
        spec: Mapping[str, Any] = provider.get("spec") or {}
        url, token = str(spec.get("address") or ""), ""
        ref = spec.get("secretRef") or {}
        if ref.get("name"):
            secret = await self.client.get("v1", "Secret", str(ref["name"]), ns)
            data = secret.get("data") or {}
            if "address" not in data:
                raise ValueError("secret does not contain an address")
            url = base64.b64decode(data["address"]).decode()
            token = base64.b64decode(data["token"]).decode() if "token" in data else ""
        if not url:
            return  # Flagger's NopNotifier
        await _deliver(str(spec.get("type") or ""), url, token, str(spec.get("proxy") or ""),
                       str(spec.get("username") or "flagger"), str(spec.get("channel") or "general"), cd, message,
                       fields, severity)


async def _deliver(kind: str, url: str, token: str, proxy: str, username: str, channel: str, cd: CanaryView,
                   message: str, fields: Sequence[Field], severity: str) -> None:
    """Post one alert as Flagger's notifier of ``kind`` would (the token only to Slack, as a bearer)."""
    if kind not in PROVIDERS:
        raise ValueError(f"provider {kind} not supported")
    url = _check_url(kind, url)
    body = message_payload(kind, cd.name, cd.namespace, message, fields, severity, username, channel)
    cfg = HTTPClientConfig(proxy_url=proxy or None, bearer_token=token if kind == "slack" and token else None)
    client = notifier_client(cfg, timeout=TIMEOUT_S)
    try:
        await notifier_post(client, url, json.dumps(body).encode())
    finally:
        await client.aclose()
