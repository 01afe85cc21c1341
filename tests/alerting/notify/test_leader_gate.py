"""Two notification pipelines on one state store (as two servers sharing ``notifications.state_url``):
only the one that leads dedups and sends; a new leader continues from the shared notification log and queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from pitwall.alerting.model import Alert
from pitwall.alerting.notify.matchers import parse_matcher
from pitwall.alerting.notify.pipeline import NotificationPipeline
from pitwall.alerting.notify.settings import NotificationSettings
from pitwall.alerting.notify.silences import Silence
from pitwall.storage.state import StateStore, sqlite_url
from tests.alerting.notify.helpers import Receiver, webhook_config

pytestmark = pytest.mark.timeout(60)


class Lead:
    """Which of the two pipelines leads (what an election's ``is_leader`` would say)."""

    def __init__(self) -> None:
        self.who = "a"

    def of(self, name: str) -> bool:
        return self.who == name


@pytest.fixture
async def pair(tmp_path: Path, receiver: Receiver) -> AsyncIterator[tuple[NotificationPipeline, NotificationPipeline,
                                                                          Lead]]:
    am = tmp_path / "alertmanager.yml"
    am.write_text(yaml.safe_dump(webhook_config(receiver.url, group_wait="50ms", group_interval="300ms")))
    settings = NotificationSettings(retry_initial=100, retry_max=200)
    lead = Lead()
    stores = [StateStore(sqlite_url(tmp_path)), StateStore(sqlite_url(tmp_path))]
    a, b = (NotificationPipeline(settings, s, am, "http://pitwall") for s in stores)
    a.follow(lambda: lead.of("a"))
    b.follow(lambda: lead.of("b"))
    await a.start()
    await b.start()
    try:
        yield a, b, lead
    finally:
        for p in (a, b):
            await p.stop()
        for s in stores:
            s.close()


async def _both(pair: tuple[NotificationPipeline, NotificationPipeline, Lead], alert: Alert) -> None:
    for p in pair[:2]:
        await p.notify([alert])  # as each server's own rule evaluation would


async def _settle(seconds: float = 1.5) -> None:
    """Several group intervals (300 ms) and leadership checks (1 s) pass."""
    await asyncio.sleep(seconds)


async def test_one_notification_across_a_change_of_leader(
        pair: tuple[NotificationPipeline, NotificationPipeline, Lead], receiver: Receiver) -> None:
    a, b, lead = pair
    firing = Alert(labels={"alertname": "Gate", "severity": "page"}, annotations={})
    await _both(pair, firing)
    await asyncio.to_thread(receiver.wait_for, lambda got: len(got) == 1, 10)
    await _settle()
    assert len(receiver.bodies()) == 1 and (a.delivered, b.delivered) == (1, 0)

    lead.who = "b"  # a is deposed; b's log in memory predates a's send, it must re-read the shared one
    await _settle()
    await _both(pair, firing)
    await _settle()
    assert len(receiver.bodies()) == 1, "the new leader repeated a notification the old one sent"

    # The alert resolves: the new leader sends that, once; the old one stays silent.
    await _both(pair, Alert(labels=firing.labels, annotations={}, starts_at=datetime.now(UTC),
                            ends_at=datetime.now(UTC)))
    got = await asyncio.to_thread(receiver.wait_for, lambda got: len(got) == 2, 10)
    await _settle()
    assert [x["status"] for x in receiver.bodies()] == ["firing", "resolved"]
    assert got[1]["alerts"][0]["labels"]["alertname"] == "Gate"
    assert (a.delivered, b.delivered) == (1, 1)


async def test_new_leader_delivers_what_the_old_one_queued(
        pair: tuple[NotificationPipeline, NotificationPipeline, Lead], receiver: Receiver) -> None:
    a, b, lead = pair
    receiver.fail_with = 503  # the leader queues the notification and retries it
    await _both(pair, Alert(labels={"alertname": "Queued"}, annotations={}))
    await asyncio.to_thread(lambda: receiver.wait_for(lambda _: receiver.attempts >= 1, 10))
    assert a.state.count_pending() == 1

    lead.who = "b"
    await _settle()
    a_failed = a.failed
    await _settle()
    assert a.failed == a_failed, "the deposed leader kept retrying"
    assert b.failed >= 1, "the new leader did not take over the queued notification"
    receiver.fail_with = None
    got = await asyncio.to_thread(receiver.wait_for, lambda got: len(got) == 1, 15)
    await _settle()
    assert len(receiver.bodies()) == 1 and got[0]["groupLabels"] == {"alertname": "Queued"}
    assert b.delivered == 1 and a.delivered == 0
    assert b.state.count_pending() == 0


async def test_a_silence_made_on_the_follower_mutes_the_leader(
        pair: tuple[NotificationPipeline, NotificationPipeline, Lead], receiver: Receiver) -> None:
    a, b, _ = pair
    now = datetime.now(UTC)
    b.silences.set(Silence("", (parse_matcher('alertname="Muted"'),), now, now + timedelta(hours=1), "ops",
                           "through the follower's API"))
    await _settle()  # the leader re-reads the shared silences every second
    assert [s.comment for s in a.silences.all()] == ["through the follower's API"]
    await _both(pair, Alert(labels={"alertname": "Muted"}, annotations={}))
    await _both(pair, Alert(labels={"alertname": "Loud"}, annotations={}))
    await asyncio.to_thread(receiver.wait_for, lambda got: len(got) >= 1, 10)
    await _settle()
    assert [x["groupLabels"] for x in receiver.bodies()] == [{"alertname": "Loud"}]
