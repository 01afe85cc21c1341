"""Email over real SMTP (aiosmtpd, plain and STARTTLS+AUTH), Slack and PagerDuty payloads on a local receiver."""

from __future__ import annotations

import ssl
import subprocess
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from pitwall.alerting.notify.alerts import StoredAlert
from pitwall.alerting.notify.config import parse_config
from pitwall.alerting.notify.errors import DeliveryError
from pitwall.alerting.notify.notifiers import Email, NotifyContext, PagerDuty, Slack, build_integrations
from pitwall.alerting.notify.templates import Templates
from tests.alerting.notify.helpers import Receiver
from tests.conftest import free_port

UTC = UTC
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _alerts() -> list[StoredAlert]:
    return [StoredAlert({"alertname": "DiskFull", "instance": "db1", "job": "node", "severity": "page"},
                        {"summary": "disk <full>"}, T0, None, T0, "http://prom/graph"),
            StoredAlert({"alertname": "DiskFull", "instance": "db2", "job": "node", "severity": "page"},
                        {}, T0, T0 + timedelta(minutes=1), T0)]


def _ctx(receiver: str = "ops") -> NotifyContext:
    return NotifyContext(receiver, '{}:{alertname="DiskFull"}', {"alertname": "DiskFull"},
                         T0 + timedelta(minutes=2), "http://pitwall:9900", Templates())


def _integration(cfg_yaml: str) -> Any:
    cfg = parse_config(cfg_yaml)
    (integ,) = build_integrations(cfg.config.receivers[0], cfg.config.global_)
    return integ


class _Smtp:
    def __init__(self, tls: tuple[Path, Path] | None = None, auth: bool = False) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.handlers import Message as MessageHandler

        owner = self
        self.messages: list[Message] = []

        class Handler(MessageHandler):  # type: ignore[misc]
            def handle_message(self, message: Message) -> None:
                owner.messages.append(message)

        kw: dict[str, Any] = {}
        if tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            kw.update(tls_context=ctx, require_starttls=True)
        if auth:
            self.logins: list[tuple[bytes, bytes]] = []

            def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
                from aiosmtpd.smtp import AuthResult

                self.logins.append((data.login, data.password))
                return AuthResult(success=data.login == b"alice" and data.password == b"s3cret")

            kw.update(authenticator=authenticator, auth_require_tls=True)
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kw)

    def __enter__(self) -> _Smtp:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(crt), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       capture_output=True, check=False)
    if r.returncode != 0:
        pytest.skip("openssl cannot make a test certificate")
    return crt, key


def _body(msg: Message) -> tuple[str, str]:
    text = html = ""
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            text = part.get_payload(decode=True).decode()  # type: ignore[union-attr]
        elif part.get_content_type() == "text/html":
            html = part.get_payload(decode=True).decode()  # type: ignore[union-attr]
    return text, html


async def test_email_plain_smtp_default_template() -> None:
    with _Smtp() as smtp:
        integ = _integration(f"""
route: {{receiver: ops}}
receivers:
  - name: ops
    email_configs: [{{to: 'oncall@example.org', from: 'am@example.org', smarthost: '127.0.0.1:{smtp.port}',
                      require_tls: false, text: '{{{{ template "__text_alert_list" .Alerts }}}}'}}]
""")
        assert isinstance(integ, Email)
        await integ.notify(_ctx(), _alerts())
    (msg,) = smtp.messages
    assert msg["Subject"] == "[FIRING:1] DiskFull (node page)"
    assert msg["To"] == "oncall@example.org" and msg["From"] == "am@example.org"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = _body(msg)
    text = text.replace("\r\n", "\n")  # SMTP puts CRLF line ends on the wire
    assert "Labels:\n - alertname = DiskFull\n - instance = db1" in text
    assert "[1] Firing" in html and "[1] Resolved" in html and "disk &lt;full&gt;" in html
    assert 'href="http://pitwall:9900/#/alerts?receiver=ops"' in html


async def test_email_requires_starttls_by_default() -> None:
    with _Smtp() as smtp:
        integ = _integration(f"""
global: {{smtp_smarthost: '127.0.0.1:{smtp.port}', smtp_from: 'am@example.org'}}
route: {{receiver: ops}}
receivers: [{{name: ops, email_configs: [{{to: 'a@example.org'}}]}}]
""")
        with pytest.raises(DeliveryError, match="STARTTLS") as e:
            await integ.notify(_ctx(), _alerts())
        assert not e.value.retryable
        assert smtp.messages == []


async def test_email_starttls_and_auth(cert: tuple[Path, Path]) -> None:
    with _Smtp(tls=cert, auth=True) as smtp:
        integ = _integration(f"""
global: {{smtp_smarthost: '127.0.0.1:{smtp.port}', smtp_from: 'am@example.org',
          smtp_auth_username: alice, smtp_auth_password: s3cret}}
route: {{receiver: ops}}
receivers:
  - name: ops
    email_configs: [{{to: 'a@example.org', tls_config: {{ca_file: '{cert[0]}'}},
                      headers: {{Subject: 'custom {{{{ .Status }}}}'}}}}]
""")
        await integ.notify(_ctx(), _alerts())
    (msg,) = smtp.messages
    assert msg["Subject"] == "custom firing"
    assert smtp.logins == [(b"alice", b"s3cret")]


async def test_slack_payload(receiver: Receiver) -> None:
    integ = _integration(f"""
route: {{receiver: ops}}
receivers:
  - name: ops
    slack_configs:
      - api_url: '{receiver.url}/slack'
        channel: '#alerts'
        fields: [{{title: sev, value: '{{{{ .CommonLabels.severity }}}}', short: true}}]
""")
    assert isinstance(integ, Slack)
    await integ.notify(_ctx(), _alerts())
    (body,) = receiver.bodies("/slack")
    assert body["channel"] == "#alerts" and body["username"] == "Alertmanager"
    (att,) = body["attachments"]
    assert att["title"] == "[FIRING:1] DiskFull (node page)"
    assert att["title_link"] == "http://pitwall:9900/#/alerts?receiver=ops"
    assert att["fallback"] == "[FIRING:1] DiskFull (node page) | http://pitwall:9900/#/alerts?receiver=ops"
    assert att["color"] == "danger" and att["mrkdwn_in"] == ["fallback", "pretext", "text"]
    assert att["fields"] == [{"title": "sev", "value": "page", "short": True}]
    assert "text" not in att  # empty fields are omitted, as Alertmanager's JSON does


PD_V2_SCHEMA = {
    "type": "object",
    "required": ["routing_key", "event_action", "payload"],
    "properties": {
        "routing_key": {"type": "string", "minLength": 1},
        "event_action": {"enum": ["trigger", "acknowledge", "resolve"]},
        "dedup_key": {"type": "string", "maxLength": 255},
        "client": {"type": "string"}, "client_url": {"type": "string"},
        "images": {"type": "array"}, "links": {"type": "array"},
        "payload": {
            "type": "object",
            "required": ["summary", "source", "severity"],
            "properties": {
                "summary": {"type": "string", "maxLength": 1024},
                "source": {"type": "string", "minLength": 1},
                "severity": {"enum": ["critical", "warning", "error", "info"]},
                "timestamp": {"type": "string"}, "component": {"type": "string"}, "group": {"type": "string"},
                "class": {"type": "string"}, "custom_details": {"type": "object"},
            },
        },
    },
    "additionalProperties": False,
}


async def test_pagerduty_events_v2_payload(receiver: Receiver) -> None:
    import hashlib

    import jsonschema

    integ = _integration(f"""
route: {{receiver: ops}}
receivers:
  - name: ops
    pagerduty_configs: [{{routing_key: 'R0UTING', url: '{receiver.url}/v2/enqueue', severity: critical,
                          links: [{{href: 'http://runbook', text: runbook}}]}}]
""")
    assert isinstance(integ, PagerDuty)
    ctx = _ctx()
    await integ.notify(ctx, _alerts())
    await integ.notify(ctx, [StoredAlert(_alerts()[0].labels, {}, T0, T0 + timedelta(seconds=1), T0)])
    trig, res = receiver.bodies("/v2/enqueue")
    for body in (trig, res):
        jsonschema.validate(body, PD_V2_SCHEMA)
    assert trig["event_action"] == "trigger" and res["event_action"] == "resolve"
    assert trig["dedup_key"] == res["dedup_key"] == hashlib.sha256(ctx.group_key.encode()).hexdigest()
    p = trig["payload"]
    assert p["summary"] == "[FIRING:1] DiskFull (node page)" and p["source"] == "Alertmanager"
    assert p["severity"] == "critical"
    assert p["custom_details"]["num_firing"] == "1" and p["custom_details"]["num_resolved"] == "1"
    assert trig["links"] == [{"href": "http://runbook", "text": "runbook"}]


async def test_http_errors_are_classified(receiver: Receiver) -> None:
    integ = _integration(f"route: {{receiver: r}}\nreceivers: [{{name: r, webhook_configs: [{{url: '{receiver.url}'}}]}}]\n")
    receiver.fail_with = 503
    with pytest.raises(DeliveryError) as e:
        await integ.notify(_ctx(), _alerts())
    assert e.value.retryable
    receiver.fail_with = 400
    with pytest.raises(DeliveryError) as e:
        await integ.notify(_ctx(), _alerts())
    assert not e.value.retryable

