"""Signed acknowledge/resolve links: sign and verify, the shared key, acting once (``incidents.links``)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from pitwall.core.auth import ACTION_LINK_PATHS
from pitwall.core.errors import ConfigError
from pitwall.incidents import ChangeLog, IncidentService
from pitwall.incidents.errors import BadLink, ExpiredLink
from pitwall.incidents.links import LINK_PATHS, ActionLinks, LinkClaims, sign, verify
from pitwall.incidents.model import ContactMethod
from pitwall.incidents.store import IncidentStore
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.incidents.conftest import pd_settings
from tests.incidents.test_escalation import FakeClock, _trigger

pytestmark = pytest.mark.timeout(60)

KEY = b"k" * 32
S = 1_000_000_000


def _claims(**over: object) -> LinkClaims:
    base: dict[str, object] = {"incident_id": "Q0000001", "user_id": "PALICE1", "action": "acknowledge",
                               "expires_s": 2_000, "channel": "email", "contact_id": "PAMAIL"}
    return LinkClaims(**{**base, **over})  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_token_round_trip_names_incident_user_action_channel() -> None:
    c = _claims()
    assert verify(KEY, sign(KEY, c), "acknowledge", 1_999) == c


def test_token_refused_for_the_other_action() -> None:
    with pytest.raises(BadLink, match="for acknowledge, not for resolve"):
        verify(KEY, sign(KEY, _claims()), "resolve", 1_000)


def test_tampered_claims_are_refused() -> None:
    """Pointing a link at another incident, user, action or a later expiry breaks the signature."""
    token = sign(KEY, _claims())
    body, mac = token.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    for field, value in (("i", "Q0000002"), ("u", "PBOB001"), ("a", "resolve"), ("e", 99_999)):
        forged = _b64(orjson.dumps({**claims, field: value})) + "." + mac
        with pytest.raises(BadLink, match="not valid"):
            verify(KEY, forged, str(claims["a"] if field != "a" else "resolve"), 1_000)


def test_wrong_key_and_malformed_tokens_are_refused() -> None:
    token = sign(KEY, _claims())
    with pytest.raises(BadLink):
        verify(b"x" * 32, token, "acknowledge", 1_000)
    body, mac = token.split(".")
    for bad in ("", "abc", ".", body + ".", "." + mac, body + "." + mac[:-2], body + "." + "!!!!",
                body + "." + mac + "x" * 2000, token.replace(".", "..")):
        with pytest.raises(BadLink):
            verify(KEY, bad, "acknowledge", 1_000)


def test_expiry_on_a_fake_clock() -> None:
    token = sign(KEY, _claims(expires_s=2_000))
    assert verify(KEY, token, "acknowledge", 1_999.9).expires_s == 2_000
    with pytest.raises(ExpiredLink, match="expired at 1970-01-01 00:33:20 UTC") as e:
        verify(KEY, token, "acknowledge", 2_000)
    assert e.value.status == 410


def test_link_paths_are_the_ones_auth_lets_through() -> None:
    assert frozenset(LINK_PATHS.values()) == ACTION_LINK_PATHS


def test_ttl_setting_is_bounded_and_named(tmp_path: Path) -> None:
    assert pd_settings(tmp_path).incidents.action_link_ttl == 86_400_000  # 24 h by default
    assert pd_settings(tmp_path, action_link_ttl="15m").incidents.action_link_ttl == 900_000
    for bad in ("30s", "31d"):
        with pytest.raises(ConfigError, match=r"incidents\.action_link_ttl: .*must be between 1m and 30d"):
            pd_settings(tmp_path, action_link_ttl=bad)


async def test_key_created_once_and_shared_by_every_server(store: SqliteRevStore) -> None:
    """Two servers (two stores' clients) asking at once get one key; each accepts the other's links."""
    a, b = IncidentStore(store), IncidentStore(store)
    ka, kb = await asyncio.gather(a.link_key(), b.link_key())
    assert ka == kb and len(ka) == 32
    assert await IncidentStore(store).link_key() == ka
    clock = FakeClock()
    one, two = ActionLinks(a, "https://pw.example", 3_600_000, clock), ActionLinks(b, "https://pw", 3_600_000, clock)
    ack, res = await one.urls("Q0000001", "PALICE1", ContactMethod(id="PAMAIL", type="email", address="a@x"))
    assert ack.startswith("https://pw.example/incident-actions/acknowledge?token=")
    assert res.startswith("https://pw.example/incident-actions/resolve?token=")
    token = parse_qs(urlsplit(ack).query)["token"][0]
    c = await two.check(token, "acknowledge")
    assert (c.incident_id, c.user_id, c.channel, c.contact_id) == ("Q0000001", "PALICE1", "email", "PAMAIL")
    assert c.expires_s == clock.now // S + 3_600
    clock.now += 3_600 * S
    with pytest.raises(ExpiredLink):
        await two.check(token, "acknowledge")


async def test_act_once_never_acts_twice(store: SqliteRevStore) -> None:
    svc = IncidentService(IncidentStore(store), ChangeLog(store), clock=FakeClock())
    await svc.handle_event(_trigger())
    details: dict[str, object] = {"contact_method": "PAHOOK"}
    inc, acted = await svc.act_once("Q0000001", "acknowledge", "PALICE1", channel="webhook", details=details)
    assert acted and inc.status == "acknowledged"
    inc, acted = await svc.act_once("Q0000001", "acknowledge", "PALICE1", channel="webhook", details=details)
    assert not acted and inc.status == "acknowledged" and len(inc.acknowledgements) == 1
    inc, acted = await svc.act_once("Q0000001", "resolve", "PALICE1", channel="webhook", details=details)
    assert acted and inc.status == "resolved"
    for action in ("acknowledge", "resolve"):
        inc, acted = await svc.act_once("Q0000001", action, "PALICE1", channel="webhook", details=details)
        assert not acted and inc.status == "resolved"
    entries = [e for e in await svc.store.log_entries("Q0000001") if e.agent == "PALICE1"]
    assert [(e.type, e.channel, e.details) for e in entries] == [
        ("acknowledge_log_entry", "webhook", details), ("resolve_log_entry", "webhook", details)]
