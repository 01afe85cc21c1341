"""Alerts posted to any server reach the leader: two pipelines sharing one state store (``SharedAlerts``) and
one notification state, as two servers behind a load balancer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from pitwall.alerting.model import Alert
from pitwall.alerting.notify.errors import QueueFull
from pitwall.alerting.notify.pipeline import NotificationPipeline
from pitwall.alerting.notify.settings import NotificationSettings
from pitwall.alerting.notify.shared import MAX_VALUE_BYTES, PREFIX, decode_alert
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.storage.state import StateStore, sqlite_url
from tests.alerting.notify.helpers import Receiver, webhook_config

pytestmark = pytest.mark.timeout(60)


class Lead:
    def __init__(self) -> None:
        self.who = "a"


Pair = tuple[NotificationPipeline, NotificationPipeline, Lead, SqliteRevStore]


async def _pipeline(tmp: Path, name: str, lead: Lead, shared: SqliteRevStore, max_alerts: int = 1000,
                    start: bool = True) -> NotificationPipeline:
    am = tmp / "alertmanager.yml"
    settings = NotificationSettings(retry_initial=100, retry_max=200, max_alerts=max_alerts)
    p = NotificationPipeline(settings, StateStore(sqlite_url(tmp)), am, "http://pitwall")
    p.follow(lambda: lead.who == name, shared=shared)
    if start:
        await p.start()
    return p


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteRevStore]:
    s = SqliteRevStore(tmp_path / "revstore.db", compact_interval_s=None)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def pair(tmp_path: Path, receiver: Receiver, store: SqliteRevStore) -> AsyncIterator[Pair]:
    (tmp_path / "alertmanager.yml").write_text(
        yaml.safe_dump(webhook_config(receiver.url, group_wait="50ms", group_interval="300ms")))
    lead = Lead()
    a = await _pipeline(tmp_path, "a", lead, store)
    b = await _pipeline(tmp_path, "b", lead, store)
    try:
        yield a, b, lead, store
    finally:
        for p in (a, b):
            await p.stop()
            p.state.close()


async def test_an_alert_posted_to_the_follower_is_notified_once_by_the_leader(pair: Pair, receiver: Receiver) -> None:
    a, b, _, store = pair
    await b.receive([Alert(labels={"alertname": "ToFollower", "team": "db"}, annotations={"summary": "s"})])
    got = await asyncio.to_thread(receiver.wait_for, lambda got: len(got) == 1, 10)
    await asyncio.sleep(1.5)  # several group intervals: nothing more is sent, by either
    assert len(receiver.bodies()) == 1 and (a.delivered, b.delivered) == (1, 0)
    assert got[0]["alerts"][0]["labels"] == {"alertname": "ToFollower", "team": "db"}
    assert got[0]["alerts"][0]["annotations"] == {"summary": "s"}
    # The key lives as long as the alert: a lease (resolve_timeout's endsAt, 5 min) the store expires.
    (kv,) = (await store.range(PREFIX)).kvs
    assert kv.lease != 0 and decode_alert(kv.value)[1].labels["alertname"] == "ToFollower"

    # Resolved through the follower too: the leader sends "resolved", once.
    now = datetime.now(UTC)
    await b.receive([Alert(labels={"alertname": "ToFollower", "team": "db"}, annotations={"summary": "s"},
                           starts_at=now - timedelta(minutes=1), ends_at=now)])
    await asyncio.to_thread(receiver.wait_for, lambda got: len(got) == 2, 10)
    await asyncio.sleep(1.5)
    assert [x["status"] for x in receiver.bodies()] == ["firing", "resolved"]
    assert (a.delivered, b.delivered) == (2, 0)


async def test_a_leader_started_after_the_post_still_gets_it(tmp_path: Path, receiver: Receiver,
                                                             store: SqliteRevStore) -> None:
    """The old leader died; the alert, posted to a follower meanwhile, waits in the store for the next one."""
    (tmp_path / "alertmanager.yml").write_text(
        yaml.safe_dump(webhook_config(receiver.url, group_wait="50ms", group_interval="300ms")))
    lead = Lead()
    lead.who = "nobody"
    b = await _pipeline(tmp_path, "b", lead, store)
    c = await _pipeline(tmp_path, "c", lead, store, start=False)
    try:
        await b.receive([Alert(labels={"alertname": "WhileLeaderless"}, annotations={})])
        await asyncio.sleep(0.5)
        assert receiver.bodies() == []
        lead.who = "c"
        await c.start()  # the new leader reads every live shared alert before it watches
        await asyncio.to_thread(receiver.wait_for, lambda got: len(got) == 1, 10)
        await asyncio.sleep(1.5)
        assert len(receiver.bodies()) == 1 and c.delivered == 1 and b.delivered == 0
    finally:
        for p in (b, c):
            await p.stop()
            p.state.close()


async def test_bounds(tmp_path: Path, store: SqliteRevStore, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "alertmanager.yml").write_text("route:\n  receiver: default\nreceivers:\n  - name: default\n")
    lead = Lead()
    small = await _pipeline(tmp_path, "a", lead, store, max_alerts=2)
    big = await _pipeline(tmp_path, "b", lead, store)
    try:
        # A follower holding max_alerts takes no new shared ones (those it has are still updated).
        await big.receive([Alert(labels={"alertname": f"A{i}"}, annotations={}) for i in range(3)])
        await _until(lambda: small.shared is not None and small.shared.refused == 1)
        assert len(small.alerts) == 2
        # An alert too large to share stays on the server that received it, which still answers 200.
        huge = Alert(labels={"alertname": "Huge"}, annotations={"text": "x" * MAX_VALUE_BYTES})
        await big.receive([huge])
        assert big.alerts.get(big.alerts.list()[-1].fp) is not None
        assert all(not k.key.endswith(big.alerts.list()[-1].fingerprint) for k in (await store.range(PREFIX)).kvs)
        assert "alert too large to share" in caplog.text
        # A malformed key (another writer) is skipped; a POST over max_alerts is refused as before.
        await store.put(PREFIX + "bogus", b"{not json")
        with pytest.raises(QueueFull):
            await small.receive([Alert(labels={"alertname": "Over"}, annotations={})])
        await _until(lambda: "skipping a malformed shared alert" in caplog.text)
    finally:
        for p in (small, big):
            await p.stop()
            p.state.close()


async def _until(check: object, timeout: float = 10.0) -> None:
    assert callable(check)
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_more_alerts_than_a_write_or_a_read_page_holds(store: SqliteRevStore) -> None:
    """Published in writes of at most 100, loaded by a starting server in pages: every alert arrives once."""
    from pitwall.alerting.notify.alerts import StoredAlert
    from pitwall.alerting.notify.shared import LOAD_PAGE, MAX_TXN_OPS, SharedAlerts

    got: list[StoredAlert] = []
    n = 2 * LOAD_PAGE + 3
    writer = SharedAlerts(store, lambda a: True)
    now = datetime.now(UTC)
    await writer.publish([StoredAlert({"alertname": f"A{i}"}, {}, now, None, now) for i in range(n)])
    assert await store.revision() == -(-n // MAX_TXN_OPS)  # one transaction (revision) per 100 alerts
    reader = SharedAlerts(store, lambda a: got.append(a) is None)
    await reader._load()
    assert sorted(a.labels["alertname"] for a in got) == sorted(f"A{i}" for i in range(n))
    assert reader.received == n and reader.refused == 0
