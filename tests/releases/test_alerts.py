"""Flagger's alerts: a Canary's ``analysis.alerts`` send Flagger's messages to AlertProviders at Flagger's events,
filtered by severity, in each provider's payload shape, received by a local HTTP server (headers and bodies)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from pitwall.kube import KubeAPI
from pitwall.releases.alerts import message_payload, should_alert
from pitwall.releases.settings import NotifierSettings, ReleasesSettings
from tests.releases.harness import Answers, Driver, Receiver, canary, deployment, set_image

pytestmark = pytest.mark.timeout(60)

METRICS = [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}]


def provider(name: str, type_: str, ns: str = "default", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": type_, **spec}}


def test_severity_filter_is_flaggers() -> None:
    assert [should_alert("info", s) for s in ("info", "warn", "error")] == [True, True, True]
    assert [should_alert("warn", s) for s in ("info", "warn", "error")] == [False, True, True]
    assert [should_alert("error", s) for s in ("info", "warn", "error")] == [False, False, True]
    assert should_alert("", "info")  # the CRD's documented default


def test_payload_shapes() -> None:
    fields = [("Target", "Deployment/podinfo.test")]
    assert message_payload("msteams", "podinfo", "test", "m", fields, "error") == {
        "@type": "MessageCard", "@context": "http://schema.org/extensions", "themeColor": "FF0000",
        "summary": "podinfo.test", "sections": [{"activityTitle": "m", "activitySubtitle": "podinfo.test",
                                                 "facts": [{"name": "Target", "value": "Deployment/podinfo.test"}]}]}
    assert message_payload("rocket", "podinfo", "test", "m", [], "info", "bot", "ops")["attachments"][0]["color"] \
        == "#0076D7"
    g = message_payload("gchat", "podinfo", "test", "m", fields, "info")
    assert g["cards"][0]["header"] == {"title": "Flagger", "subtitle": "podinfo.test",
                                       "imageUrl": "https://flagger.app/favicon.png"}
    assert [s["widgets"][0]["textParagraph"]["text"] for s in g["cards"][0]["sections"]] == [
        "<font color=#848484><strong>m</strong></font>",
        "Target<br><font color=#848484><strong>Deployment/podinfo.test</strong></font>"]
    with pytest.raises(ValueError, match="provider pagerduty not supported"):
        message_payload("pagerduty", "a", "b", "m", [], "info")


async def test_alerts_go_to_providers_at_flaggers_events(mesh_kube: KubeAPI) -> None:
    c = mesh_kube.client
    async with Receiver() as rx:
        token = base64.b64encode(b"s3cret").decode()
        await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}})
        await c.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "slack-url", "namespace": "ops"},
                        "data": {"address": base64.b64encode(f"{rx.url}/slack".encode()).decode(), "token": token}})
        for p in (provider("on-call", "slack", "ops", channel="on-call", username="flagger-bot",
                           secretRef={"name": "slack-url"}),
                  provider("teams", "msteams", address=f"{rx.url}/teams"),
                  provider("discord", "discord", address=f"{rx.url}/discord"),
                  provider("chat", "gchat", address=f"{rx.url}/gchat"),
                  provider("broken", "rocket", address="not a url")):
            await c.create(p)
        alerts = [{"name": "all", "severity": "info", "providerRef": {"name": "on-call", "namespace": "ops"}},
                  {"name": "errors", "severity": "error", "providerRef": {"name": "teams"}},
                  {"name": "warnings", "severity": "warn", "providerRef": {"name": "discord"}},
                  {"name": "default", "providerRef": {"name": "chat"}},
                  {"name": "bad", "providerRef": {"name": "broken"}},
                  {"name": "missing", "providerRef": {"name": "nobody"}}]
        answers = Answers()
        d = Driver(mesh_kube, answers)
        await c.create(deployment())
        await c.create(canary({"interval": "1s", "threshold": 2, "maxWeight": 60, "stepWeight": 20,
                               "metrics": METRICS, "alerts": alerts}))
        for _ in range(5):
            if (await d.tick()).get("status", {}).get("phase") == "Initialized":
                break
        slack = rx.texts("/slack")
        assert slack == [{"channel": "on-call", "username": "flagger-bot", "icon_url": "", "icon_emoji": ":rocket:",
                          "attachments": [{"color": "good", "author_name": "podinfo.default",
                                           "text": "New Deployment detected, initialization completed.",
                                           "mrkdwn_in": ["text"], "fields": [
                                               {"title": "Target", "value": "Deployment/podinfo.default",
                                                "short": False},
                                               {"title": "Failed checks threshold", "value": "2", "short": False},
                                               {"title": "Progress deadline", "value": "600s", "short": False},
                                               {"title": "Traffic routing", "value": "Weight step: 20 max: 60",
                                                "short": False}]}]}]
        (_, hdr, _) = next(g for g in rx.got if g[0] == "/slack")
        assert hdr["authorization"] == "Bearer s3cret" and hdr["content-type"] == "application/json"
        assert len(rx.texts("/gchat")) == 1 and not rx.texts("/teams") and not rx.texts("/discord/slack")

        await set_image(mesh_kube, "v2-bad")
        assert (await d.tick())["status"]["phase"] == "Progressing"
        assert rx.texts("/slack")[-1]["attachments"][0]["text"] == \
            "New revision detected, progressing canary analysis."
        await d.tick()
        answers.success_rate = 50.0
        for _ in range(3):
            await d.tick()
        assert (await c.get("flagger.app/v1beta1", "Canary", "podinfo", "default"))["status"]["phase"] == "Failed"

    texts = [b["attachments"][0]["text"] for b in rx.texts("/slack")]
    assert texts == ["New Deployment detected, initialization completed.",
                     "New revision detected, progressing canary analysis.",
                     "Failed checks threshold reached 2"]
    assert rx.texts("/slack")[-1]["attachments"][0]["color"] == "danger"
    assert rx.texts("/slack")[-1]["attachments"][0]["fields"] == []  # no metadata on this one, as in Flagger
    # error only: the rollback; warn: errors too, Discord on its Slack-compatible path
    (teams,) = rx.texts("/teams")
    assert teams["themeColor"] == "FF0000" and teams["sections"][0]["activityTitle"] == \
        "Failed checks threshold reached 2"
    assert [b["attachments"][0]["text"] for b in rx.texts("/discord/slack")] == ["Failed checks threshold reached 2"]
    assert len(rx.texts("/gchat")) == 3
    assert d.ctl.alerts.failed == 6  # "broken" and "nobody" at each of the three events; the analysis went on


async def test_waiting_for_approval_alerts_unless_muted(mesh_kube: KubeAPI) -> None:
    c = mesh_kube.client
    async with Receiver() as rx:
        refuse = Receiver()
        async with refuse:
            refuse.status = 403
            await c.create(provider("ops", "slack", address=f"{rx.url}/slack"))
            hooks = [{"name": "go", "type": "confirm-rollout", "url": f"{refuse.url}/go"}]
            d = Driver(mesh_kube, Answers())
            await c.create(deployment())
            await c.create(canary({"interval": "1s", "threshold": 2, "maxWeight": 60, "stepWeight": 20,
                                   "metrics": METRICS, "webhooks": hooks,
                                   "alerts": [{"name": "w", "severity": "warn", "providerRef": {"name": "ops"}}]}))
            for _ in range(5):
                if (await d.tick()).get("status", {}).get("phase") == "Initialized":
                    break
            await set_image(mesh_kube, "v2")
            assert (await d.tick())["status"]["phase"] == "Waiting"
            await d.tick()  # still waiting: alerted once, on the change to Waiting
            assert [b["attachments"][0]["text"] for b in rx.texts("/slack")] == ["Canary is waiting for approval."]
            cd = await c.get("flagger.app/v1beta1", "Canary", "podinfo", "default")
            cd["spec"]["analysis"]["webhooks"][0]["muteAlert"] = True
            await c.update(cd)
            await c.update_status(await _with_phase(c, "Initialized"))  # the approval is asked for again
            assert (await d.tick())["status"]["phase"] == "Waiting"
            halts = [e for e in (await c.list("v1", "Event", "default")).items
                     if e["message"] == "Halt podinfo.default advancement waiting for approval go"]
            assert sum(int(e.get("count") or 1) for e in halts) == 2
            assert len(rx.texts("/slack")) == 1  # muted


async def _with_phase(c: Any, phase: str) -> dict[str, Any]:
    cd: dict[str, Any] = await c.get("flagger.app/v1beta1", "Canary", "podinfo", "default")
    cd["status"]["phase"] = phase
    return cd


async def test_global_notifier_cluster_name_and_event_webhook(mesh_kube: KubeAPI) -> None:
    """Flagger's -slack-*/-msteams-* flags, -cluster-name and -event-webhook (``releases`` in pitwall.yaml): a
    Canary without alerts goes to the global notifier at every severity, MS Teams winning over Slack; a Canary
    with alerts does not; every alert gets the Cluster field; events go to the event webhook only when the Canary
    has no event webhook of its own."""
    c = mesh_kube.client
    async with Receiver() as rx:
        await c.create(provider("ops", "slack", address=f"{rx.url}/own"))
        d = Driver(mesh_kube, Answers())
        d.ctl.configure(ReleasesSettings(
            cluster_name="prod-eu", event_webhook=f"{rx.url}/events",
            notifier=NotifierSettings(slack_url=f"{rx.url}/global", slack_channel="deploys", slack_token="t0k")))
        await c.create(deployment())
        await c.create(canary({"interval": "1s", "threshold": 2, "maxWeight": 60, "stepWeight": 20,
                               "metrics": METRICS}))
        for _ in range(5):
            if (await d.tick()).get("status", {}).get("phase") == "Initialized":
                break
        (msg,) = rx.texts("/global")
        assert msg["channel"] == "deploys" and msg["username"] == "flagger"
        assert msg["attachments"][0]["text"] == "New Deployment detected, initialization completed."
        assert msg["attachments"][0]["fields"][0] == {"title": "Cluster", "value": "prod-eu", "short": False}
        assert msg["attachments"][0]["fields"][1]["title"] == "Target"
        (_, hdr, _) = next(g for g in rx.got if g[0] == "/global")
        assert hdr["authorization"] == "Bearer t0k"
        events = rx.texts("/events")
        assert events and {e["metadata"]["eventType"] for e in events} <= {"Normal", "Warning"}
        assert "Initialization done! podinfo.default" in {e["metadata"]["eventMessage"] for e in events}

        # MS Teams when its URL is set; a Canary with alerts of its own: only its providers
        d.ctl.configure(ReleasesSettings(cluster_name="prod-eu", notifier=NotifierSettings(
            slack_url=f"{rx.url}/global", slack_channel="deploys", msteams_url=f"{rx.url}/teams")))
        await set_image(mesh_kube, "v2")
        await d.tick()
        (teams,) = rx.texts("/teams")
        assert teams["sections"][0]["activityTitle"] == "New revision detected, progressing canary analysis."
        assert teams["sections"][0]["facts"][0] == {"name": "Cluster", "value": "prod-eu"}
        cd = await c.get("flagger.app/v1beta1", "Canary", "podinfo", "default")
        cd["spec"]["analysis"]["alerts"] = [{"name": "own", "providerRef": {"name": "ops"}}]
        cd["spec"]["analysis"]["webhooks"] = [{"name": "ev", "type": "event", "url": f"{rx.url}/own-events"}]
        await c.update(cd)
        seen, events_before = len(rx.texts("/teams")), len(rx.texts("/events"))
        await c.update_status(await _with_phase(c, "Initialized"))
        await set_image(mesh_kube, "v3")
        await d.tick()
        assert len(rx.texts("/teams")) == seen and rx.texts("/own")
        assert rx.texts("/own")[-1]["attachments"][0]["fields"][0]["value"] == "prod-eu"
        assert rx.texts("/own-events") and len(rx.texts("/events")) == events_before


def test_slack_needs_user_and_channel() -> None:
    with pytest.raises(ValueError, match="slack_channel"):
        NotifierSettings(slack_url="https://hooks.slack.com/x")
