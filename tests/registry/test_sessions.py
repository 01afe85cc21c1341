"""Consul sessions and locks through py-consul against a live pitwall."""

from __future__ import annotations

import time

import consul
import httpx
import pytest
from consul.exceptions import ConsulException, NotFound

from tests.conftest import LiveServer
from tests.registry.conftest import ADMIN

pytestmark = pytest.mark.timeout(90)


def test_lock_held_until_released(c: consul.Consul) -> None:
    s1 = c.session.create(name="one", lock_delay=0)
    s2 = c.session.create(name="two")
    assert c.kv.put("locks/a", "leader-1", acquire=s1) is True
    assert c.kv.put("locks/a", "leader-2", acquire=s2) is False
    _, e = c.kv.get("locks/a")
    assert e["Session"] == s1 and e["LockIndex"] == 1 and e["Value"] == b"leader-1"
    assert c.kv.put("locks/a", "again", acquire=s1) is True  # the holder may update; LockIndex stays
    assert c.kv.get("locks/a")[1]["LockIndex"] == 1
    assert c.kv.put("locks/a", "x", release=s2) is False
    assert c.kv.put("locks/a", "free", release=s1) is True
    _, e = c.kv.get("locks/a")
    assert "Session" not in e and e["Value"] == b"free"
    assert c.kv.put("locks/a", "leader-2", acquire=s2) is True
    assert c.kv.get("locks/a")[1]["LockIndex"] == 2
    c.session.destroy(s1)
    c.session.destroy(s2)


def test_destroy_releases_with_lock_delay(c: consul.Consul) -> None:
    holder = c.session.create(name="holder", lock_delay=1)
    other = c.session.create(name="other")
    assert c.kv.put("locks/b", "h", acquire=holder)
    assert c.session.destroy(holder) is True
    _, e = c.kv.get("locks/b")
    assert "Session" not in e  # released at once...
    assert c.kv.put("locks/b", "o", acquire=other) is False  # ...but lock-delay keeps it for 1s
    time.sleep(1.2)
    assert c.kv.put("locks/b", "o", acquire=other) is True
    c.session.destroy(other)


def test_behavior_delete_and_reads(c: consul.Consul) -> None:
    s = c.session.create(name="eph", behavior="delete", ttl=30)
    _, info = c.session.info(s)
    assert info["ID"] == s and info["Behavior"] == "delete" and info["TTL"] == "30s" and info["Name"] == "eph"
    assert info["LockDelay"] == 15_000_000_000
    assert any(x["ID"] == s for x in c.session.list()[1])
    assert any(x["ID"] == s for x in c.session.node(info["Node"])[1])
    assert c.session.node("elsewhere")[1] == []
    assert c.session.renew(s)["ID"] == s
    assert c.kv.put("eph/k", "v", acquire=s)
    c.session.destroy(s)
    assert c.kv.get("eph/k")[1] is None
    assert c.session.info(s)[1] is None
    with pytest.raises((NotFound, ConsulException)):
        c.session.renew(s)


def test_session_bad_input(server: LiveServer) -> None:
    h = {"X-Consul-Token": ADMIN}
    r = httpx.put(f"{server.url}/v1/session/create", json={"TTL": "5s"}, headers=h)
    assert r.status_code == 500 and r.text.strip() == "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"
    r = httpx.put(f"{server.url}/v1/session/create", json={"TTL": "25h"}, headers=h)
    assert r.status_code == 500 and "must be between" in r.text
    r = httpx.put(f"{server.url}/v1/session/create", json={"Behavior": "explode"}, headers=h)
    assert r.status_code == 500 and r.text.strip() == "Invalid Behavior setting 'explode'"
    r = httpx.put(f"{server.url}/v1/session/renew/00000000-0000-0000-0000-000000000000", headers=h)
    assert r.status_code == 404 and r.text.strip() == "Session id '00000000-0000-0000-0000-000000000000' not found"


@pytest.mark.slow
def test_expired_session_releases_its_lock(c: consul.Consul) -> None:
    s1 = c.session.create(name="short", ttl=10, lock_delay=0)
    s2 = c.session.create(name="waiter")
    assert c.kv.put("locks/exp", "1", acquire=s1)
    assert c.kv.put("locks/exp", "2", acquire=s2) is False
    idx, _ = c.kv.get("locks/exp")
    # a blocking read wakes when the lock is released by the expiry (TTL 10s, invalidated by 2x TTL)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        idx, e = c.kv.get("locks/exp", index=idx, wait="5s")
        if "Session" not in e:
            break
    else:
        raise AssertionError("the expired session still holds the lock")
    assert c.session.info(s1)[1] is None
    assert c.kv.put("locks/exp", "2", acquire=s2) is True
    c.session.destroy(s2)
