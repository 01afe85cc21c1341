"""Acknowledge and resolve links that work from a page (e-mail, Slack, webhook), as PagerDuty's e-mails carry.

A link is ``<external URL>/incident-actions/<action>?token=<token>``. The token
names the incident, the paged user, the action, the channel the page went
through (the contact method's type and id) and an expiry (``incidents.
action_link_ttl``), and is signed with HMAC-SHA256 under the key every server on
the state store shares (``IncidentStore.link_key``). It is the credential:
whoever holds the message may act as the paged user on that incident, for that
action, until it expires; nothing else. Layout::

    base64url(json claims) "." base64url(HMAC-SHA256(key, "pitwall-action-link.v1." + first part))

Verification checks the signature (in constant time) before reading anything,
then the expiry, then that the link is used for the action its path names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

import orjson

from pitwall.incidents.errors import BadLink, ExpiredLink
from pitwall.incidents.model import ContactMethod
from pitwall.incidents.store import IncidentStore

__all__ = ["ACTIONS", "LINK_PATHS", "Action", "ActionLinks", "LinkClaims", "sign", "verify"]

Action = Literal["acknowledge", "resolve"]
ACTIONS: tuple[Action, ...] = ("acknowledge", "resolve")
# core.auth.ACTION_LINK_PATHS lets exactly these through without a pitwall credential (a test keeps them equal).
LINK_PATHS: dict[Action, str] = {a: f"/incident-actions/{a}" for a in ACTIONS}
_DOMAIN = b"pitwall-action-link.v1."  # keeps these signatures apart from anything else the key might sign
_MAX_TOKEN = 1024  # a real token is ~200 characters; refuse anything far longer before decoding it
_S_NS = 1_000_000_000


@dataclass(frozen=True)
class LinkClaims:
    """What a link lets its holder do."""

    incident_id: str
    user_id: str
    action: Action
    expires_s: int  # Unix seconds
    channel: str = "email"  # the contact method's type: the log entry's channel
    contact_id: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: str) -> bytes:
    return hmac.new(key, _DOMAIN + body.encode(), hashlib.sha256).digest()


def sign(key: bytes, c: LinkClaims) -> str:
    body = _b64(orjson.dumps({"i": c.incident_id, "u": c.user_id, "a": c.action, "e": c.expires_s,
                              "c": c.channel, "m": c.contact_id}))
    return body + "." + _b64(_mac(key, body))


def verify(key: bytes, token: str, action: str, now_s: float) -> LinkClaims:
    """The claims of ``token`` used for ``action`` at ``now_s``; ``BadLink`` (forged, malformed, another
    action) or ``ExpiredLink``."""
    body, _, mac = token.partition(".")
    if not body or not mac or len(token) > _MAX_TOKEN:
        raise BadLink("This link is incomplete or malformed: copy the whole link from the message.")
    try:
        given = _unb64(mac)
    except (binascii.Error, ValueError):
        raise BadLink("This link is malformed: copy the whole link from the message.") from None
    if not hmac.compare_digest(given, _mac(key, body)):
        raise BadLink("This link is not valid: it was altered, or signed by another pitwall.")
    try:
        d = orjson.loads(_unb64(body))
        claims = LinkClaims(incident_id=str(d["i"]), user_id=str(d["u"]), action=d["a"], expires_s=int(d["e"]),
                            channel=str(d.get("c", "email")), contact_id=str(d.get("m", "")))
    except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise BadLink("This link is malformed.") from None  # signed by us yet unreadable: never written so
    if claims.action != action:
        raise BadLink(f"This link is for {claims.action}, not for {action}.")
    if now_s >= claims.expires_s:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(claims.expires_s))
        raise ExpiredLink(f"This link expired at {when}. Open the incident in pitwall to act on it.")
    return claims


class ActionLinks:
    """Makes and checks the links of pages; the key is read (or created) once per process, then kept."""

    def __init__(self, store: IncidentStore, base_url: str, ttl_ms: int,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.store = store
        self.base_url = base_url.rstrip("/")
        self.ttl_ms = ttl_ms
        self.clock = clock
        self._key: bytes | None = None

    def now_s(self) -> float:
        return self.clock() / _S_NS

    async def key(self) -> bytes:
        if self._key is None:
            self._key = await self.store.link_key()
        return self._key

    async def urls(self, incident_id: str, user_id: str, contact: ContactMethod) -> tuple[str, str]:
        """The acknowledge and the resolve URL of a page to ``user_id`` through ``contact``."""
        key = await self.key()
        expires = int(self.now_s() + self.ttl_ms / 1000)

        def url(action: Action) -> str:
            token = sign(key, LinkClaims(incident_id, user_id, action, expires, contact.type, contact.id))
            return f"{self.base_url}{LINK_PATHS[action]}?{urlencode({'token': token})}"

        return url("acknowledge"), url("resolve")

    async def check(self, token: str, action: str) -> LinkClaims:
        return verify(await self.key(), token, action, self.now_s())

    def incident_url(self, incident_id: str) -> str:
        """The incident's page in pitwall's UI."""
        return f"{self.base_url}/incidents/{incident_id}"
