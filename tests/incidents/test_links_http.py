"""Acknowledge/resolve links end to end: a page's links acted on over HTTP (webhook, e-mail, Slack).

An incident triggered through the Events API pages Alice; the test takes the
links out of the delivered message, opens them (GET: nothing changes), then
submits the page's form (POST: the incident changes, as Alice, through the
message's channel), as a person clicking in a mail client would.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pitwall.config import load_settings
from tests.alerting.notify.helpers import Receiver
from tests.conftest import LiveServer
from tests.incidents.conftest import (
    ROUTING_KEY,
    TOKEN,
    SmtpSink,
    bob_always_on_call,
    incidents_config,
    pd_settings,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

AUTH = {"Authorization": f"Bearer {TOKEN}"}
_FORM_TOKEN = re.compile(r'name="token" value="([^"]+)"')


def _server(tmp_path: Path, contacts: list[dict[str, Any]], *, tokens: bool, **extra: Any) -> LiveServer:
    """A live pitwall where Alice is reached through ``contacts``; links use its real URL."""
    cfg = bob_always_on_call(incidents_config())
    cfg["users"][0]["contact_methods"] = contacts
    srv = LiveServer(pd_settings(tmp_path, tokens=tokens))
    auth = {"auth_tokens": [{"token": TOKEN, "scopes": ["read", "write"], "name": "oncall-bot"}]} if tokens else {}
    srv.settings = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                                 kube={"enabled": False}, incidents={**cfg, "external_url": srv.url},
                                 **auth, **extra)
    srv.start()
    return srv


def _page_alice(srv: LiveServer) -> None:
    """Trigger incident #1 (Bob is on call) and assign it to Alice."""
    r = httpx.post(srv.url + "/v2/enqueue", headers=AUTH, json={
        "routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "db",
        "payload": {"summary": "db down", "source": "db1", "severity": "critical"}})
    assert r.status_code == 202, r.text
    r = httpx.put(srv.url + "/pagerduty/incidents/Q0000001", headers={"From": "bob@example.com", **AUTH},
                  json={"incident": {"assignments": [{"assignee": {"id": "PALICE1"}}]}})
    assert r.status_code == 200, r.text


def _incident(srv: LiveServer) -> dict[str, Any]:
    r = httpx.get(srv.url + "/pagerduty/incidents/Q0000001", headers=AUTH)
    r.raise_for_status()
    return dict(r.json()["incident"])


def _entries(srv: LiveServer, kind: str) -> list[dict[str, Any]]:
    r = httpx.get(srv.url + "/pagerduty/incidents/Q0000001/log_entries", headers=AUTH)
    r.raise_for_status()
    return [e for e in r.json()["log_entries"] if e["type"] == kind]


def _open(url: str) -> tuple[httpx.Response, str]:
    """GET the link as a browser (or a mail scanner) would: the page, and the token its form posts."""
    r = httpx.get(url)
    m = _FORM_TOKEN.search(r.text)
    return r, html.unescape(m.group(1)) if m else ""


def _click(url: str, token: str) -> httpx.Response:
    """Submit the page's form: a same-origin browser POST, without any pitwall credential."""
    origin = url.split("/incident-actions/")[0]
    return httpx.post(url.split("?")[0], data={"token": token},
                      headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"})


def _wait(pred: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def hooked(tmp_path: Path, receiver: Receiver) -> Iterator[LiveServer]:
    srv = _server(tmp_path, [{"id": "PAHOOK", "type": "webhook", "address": receiver.url + "/alice"}], tokens=True)
    yield srv
    srv.stop()


def test_webhook_page_links_with_auth_tokens(hooked: LiveServer, receiver: Receiver) -> None:
    srv = hooked
    assert httpx.get(srv.url + "/pagerduty/incidents").status_code == 401  # auth is on for everything else
    _page_alice(srv)
    receiver.wait_for(lambda got: len(got) >= 1, path="/alice")
    (a,) = receiver.bodies("/alice")[0]["alerts"]
    ann = a["annotations"]
    assert "acknowledge" not in ann and "resolve" not in ann  # the old "PUT <url> status=..." texts are gone
    ack_url, res_url = ann["acknowledge_url"], ann["resolve_url"]
    assert ack_url.startswith(srv.url + "/incident-actions/acknowledge?token=")
    assert res_url.startswith(srv.url + "/incident-actions/resolve?token=")
    assert ann["html_url"] == srv.url + "/incidents/Q0000001"

    # Opening the link (a mail scanner, Slack's unfurler, a person) changes nothing.
    page, token = _open(ack_url)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Acknowledge incident #1?" in page.text and "db down" in page.text and "Alice" in page.text
    assert page.headers["cache-control"] == "no-store" and "frame-ancestors 'none'" in \
        page.headers["content-security-policy"]
    assert httpx.head(ack_url).status_code == 200
    assert _incident(srv)["status"] == "triggered" and not _entries(srv, "acknowledge_log_entry")

    # The button acts, as Alice, through the webhook's channel; a second click changes nothing.
    r = _click(ack_url, token)
    assert r.status_code == 200 and "Incident #1 acknowledged by Alice." in r.text, r.text
    assert _incident(srv)["status"] == "acknowledged"
    r = _click(ack_url, token)
    assert r.status_code == 200 and "already acknowledged" in r.text
    (entry,) = _entries(srv, "acknowledge_log_entry")
    assert entry["agent"]["id"] == "PALICE1" and entry["agent"]["type"] == "user_reference"
    assert entry["channel"] == {"type": "webhook", "details": {"contact_method": "PAHOOK", "link": "acknowledge"}}

    # The acknowledge token does not resolve, and an altered or missing token acts on nothing.
    assert _click(res_url, token).status_code == 403
    body, mac = token.split(".")
    for bad in (body + "." + mac[::-1], body[:-2] + "." + mac, ""):
        r = _click(ack_url, bad)
        assert r.status_code == 403 and "This link does not work" in r.text
    assert httpx.get(ack_url.split("?")[0]).status_code == 403
    r = httpx.post(ack_url.split("?")[0], content=b"token=" + b"x" * 10_000,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413

    # Resolve from the message, then the acknowledge link says so and does nothing.
    page, res_token = _open(res_url)
    assert "Resolve incident #1?" in page.text and _incident(srv)["status"] == "acknowledged"
    r = _click(res_url, res_token)
    assert r.status_code == 200 and "Incident #1 resolved by Alice." in r.text
    page, again = _open(ack_url)
    assert page.status_code == 200 and "Already resolved" in page.text and not again
    r = _click(ack_url, token)
    assert r.status_code == 200 and "already resolved" in r.text
    assert _click(res_url, res_token).status_code == 200
    (resolved,) = _entries(srv, "resolve_log_entry")
    assert resolved["agent"]["id"] == "PALICE1" and resolved["channel"]["type"] == "webhook"
    assert len(_entries(srv, "acknowledge_log_entry")) == 1


def test_email_and_slack_pages_carry_working_links(tmp_path: Path, receiver: Receiver, smtp: SmtpSink) -> None:
    am = tmp_path / "alertmanager.yml"
    am.write_text(yaml.safe_dump({
        "global": {"smtp_smarthost": f"127.0.0.1:{smtp.port}", "smtp_from": "pitwall@example.com",
                   "smtp_require_tls": False},
        "route": {"receiver": "null"}, "receivers": [{"name": "null"}]}))
    srv = _server(tmp_path, [{"id": "PAMAIL", "type": "email", "address": "alice@example.com"},
                             {"id": "PASLACK", "type": "slack", "address": receiver.url + "/slack"}],
                  tokens=False, alertmanager_config=am)
    try:
        _page_alice(srv)
        _wait(lambda: smtp.messages)
        receiver.wait_for(lambda got: len(got) >= 1, path="/slack")
        (mail,) = smtp.messages
        text, html_part = _parts(mail)
        ack = re.search(r"^Acknowledge: (\S+)", text, re.M)
        res = re.search(r"^Resolve: +(\S+)", text, re.M)
        assert ack and res, text
        assert f'href="{ack.group(1)}"' in html_part and f'href="{res.group(1)}"' in html_part
        assert ">Acknowledge</a>" in html_part and ">Resolve</a>" in html_part
        assert "db down" in str(mail["Subject"])
        (slack,) = receiver.bodies("/slack")
        att = slack["attachments"][0]
        links = dict((label, url) for url, label in re.findall(r"<([^|>]+)\|([^>]+)>", att["text"]))
        assert set(links) == {"Acknowledge", "Resolve"} and att["title_link"].endswith("/incidents/Q0000001")
        assert links["Acknowledge"] != ack.group(1)  # each contact method gets its own links (its channel)

        # Acknowledge from Slack, resolve from the e-mail: each log entry names its channel.
        assert _click(links["Acknowledge"], _open(links["Acknowledge"])[1]).status_code == 200
        assert _click(res.group(1), _open(res.group(1))[1]).status_code == 200
        assert _incident(srv)["status"] == "resolved"
        (acked,) = _entries(srv, "acknowledge_log_entry")
        (resolved,) = _entries(srv, "resolve_log_entry")
        assert acked["channel"]["type"] == "slack" and acked["channel"]["details"]["contact_method"] == "PASLACK"
        assert resolved["channel"]["type"] == "email" and resolved["agent"]["id"] == "PALICE1"
    finally:
        srv.stop()


def _parts(mail: Message) -> tuple[str, str]:
    """The text and HTML bodies of a multipart/alternative message."""
    text = html_part = ""
    for part in mail.walk():
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        if part.get_content_type() == "text/plain":
            text = payload.decode()
        elif part.get_content_type() == "text/html":
            html_part = payload.decode()
    return text, html_part


async def test_expired_link_is_gone_in_process(tmp_path: Path) -> None:
    """Through the real app in process: a link past its expiry answers 410 with the same page."""
    from pitwall.incidents.model import ContactMethod
    from pitwall.server import create_app

    app = create_app(pd_settings(tmp_path, action_link_ttl="1h"))
    part = next(p for p in app.state.components.parts if p.name == "incidents")
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c):
        r = await c.post("/v2/enqueue", json={"routing_key": ROUTING_KEY, "event_action": "trigger",
                                              "payload": {"summary": "disk full", "source": "db1",
                                                          "severity": "error"}})
        assert r.status_code == 202
        ack, _ = await part.links.urls("Q0000001", "PALICE1", ContactMethod(id="X", type="email", address="a@x"))
        path = ack.split("localhost", 1)[-1] if "localhost" in ack else ack[ack.index("/incident-actions/"):]
        assert (await c.get(path)).status_code == 200
        now = part.links.clock()
        part.links.clock = lambda: now + 3_600 * 1_000_000_000
        r = await c.get(path)
        assert r.status_code == 410 and "This link has expired" in r.text
        token = path.split("token=", 1)[1]
        r = await c.post(path.split("?")[0], data={"token": token})
        assert r.status_code == 410
        assert (await c.get("/pagerduty/incidents/Q0000001")).json()["incident"]["status"] == "triggered"
