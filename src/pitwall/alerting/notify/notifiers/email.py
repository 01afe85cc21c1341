"""``email_configs``: SMTP delivery with STARTTLS and AUTH, as Alertmanager's email notifier.

Port 465 means implicit TLS; otherwise STARTTLS is used when the server offers
it and required when ``require_tls`` is true (the default). AUTH (CRAM-MD5,
PLAIN, LOGIN) is attempted when credentials are configured and the server
advertises it. The message is multipart/alternative with the text part (if
configured) before the HTML part.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid

from pitwall.alerting.notify.alerts import StoredAlert
from pitwall.alerting.notify.config import EmailConfig, GlobalConfig
from pitwall.alerting.notify.errors import DeliveryError
from pitwall.alerting.notify.notifiers.base import NotifyContext, read_secret_file
from pitwall.core.httpconfig import ssl_context

__all__ = ["Email"]

_DEFAULT_HTML = '{{ template "email.default.html" . }}'
_DEFAULT_SUBJECT = '{{ template "email.default.subject" . }}'


class Email:
    name = "email"

    def __init__(self, cfg: EmailConfig, index: int, g: GlobalConfig, timeout: float = 30.0) -> None:
        self.cfg = cfg
        self.index = index
        self.send_resolved = cfg.send_resolved
        self.smarthost = cfg.smarthost or g.smtp_smarthost
        self.sender = cfg.from_ or g.smtp_from
        self.hello = cfg.hello or g.smtp_hello
        self.username = cfg.auth_username or g.smtp_auth_username
        self.password = cfg.auth_password or g.smtp_auth_password
        self.password_file = cfg.auth_password_file or g.smtp_auth_password_file
        self.secret = cfg.auth_secret or g.smtp_auth_secret
        self.require_tls = g.smtp_require_tls if cfg.require_tls is None else cfg.require_tls
        self.timeout = timeout

    def build(self, ctx: NotifyContext, alerts: list[StoredAlert]) -> EmailMessage:
        """The message as it will be sent (headers templated, HTML and optional text bodies)."""
        data = ctx.data(alerts)

        def r(text: str) -> str:
            return ctx.templates.render(text, data)

        msg = EmailMessage()
        headers = {"-".join(p.capitalize() for p in k.split("-")): v for k, v in self.cfg.headers.items()}
        headers.setdefault("Subject", _DEFAULT_SUBJECT)
        headers.setdefault("To", self.cfg.to)
        headers.setdefault("From", self.sender)
        for k, v in headers.items():
            msg[k] = r(v)
        msg["Message-Id"] = make_msgid(domain=self.hello if "." in self.hello else None)
        msg["Date"] = formatdate(time.time(), localtime=False)
        text = r(self.cfg.text) if self.cfg.text else ""
        html = r(self.cfg.html if self.cfg.html is not None else _DEFAULT_HTML)
        if text:
            msg.set_content(text)
            if html:
                msg.add_alternative(html, subtype="html")
        else:
            msg.set_content(html or "", subtype="html")
        return msg

    async def notify(self, ctx: NotifyContext, alerts: list[StoredAlert]) -> None:
        msg = self.build(ctx, alerts)
        await asyncio.to_thread(self._send, msg)

    def _send(self, msg: EmailMessage) -> None:
        host, _, port_s = self.smarthost.rpartition(":")
        port = int(port_s)
        tls_ctx = ssl_context(self.cfg.tls_config)
        try:
            smtp: smtplib.SMTP
            if port == 465:
                smtp = smtplib.SMTP_SSL(host, port, local_hostname=self.hello, timeout=self.timeout,
                                        context=tls_ctx)
            else:
                smtp = smtplib.SMTP(host, port, local_hostname=self.hello, timeout=self.timeout)
            with smtp:
                smtp.ehlo(self.hello)
                if port != 465:
                    if smtp.has_extn("starttls"):
                        smtp.starttls(context=tls_ctx)
                        smtp.ehlo(self.hello)
                    elif self.require_tls:
                        raise DeliveryError(f"'require_tls' is true (default) but \"{self.smarthost}\" does "
                                            "not advertise the STARTTLS extension", retryable=False)
                self._auth(smtp)
                sender = _address(msg["From"] or self.sender)
                rcpts = [a for _, a in getaddresses([str(msg["To"])]) if a]
                smtp.send_message(msg, from_addr=sender, to_addrs=rcpts)
        except DeliveryError:
            raise
        except smtplib.SMTPResponseException as e:
            # 4xx replies are temporary in SMTP; 5xx will fail again.
            raise DeliveryError(f"SMTP {e.smtp_code}: {e.smtp_error!r}", retryable=e.smtp_code < 500) from e
        except (OSError, smtplib.SMTPException, ssl.SSLError) as e:
            raise DeliveryError(f"send email to {self.smarthost}: {e.__class__.__name__}: {e}") from e

    async def close(self) -> None:
        return None  # one SMTP connection per message; nothing held open

    def _auth(self, smtp: smtplib.SMTP) -> None:
        if not smtp.has_extn("auth") or not self.username:
            return
        password = self.password
        if self.password_file:
            password = read_secret_file(self.password_file, "SMTP password file")
        if self.secret and "CRAM-MD5" in (smtp.esmtp_features.get("auth", "").upper()):
            password = self.secret
        smtp.login(self.username, password)


def _address(header: str) -> str:
    addrs = [a for _, a in getaddresses([header]) if a]
    if not addrs:
        raise DeliveryError(f"parse 'from' addresses: {header!r}", retryable=False)
    Address(addr_spec=addrs[0])  # validates the address syntax
    return addrs[0]
