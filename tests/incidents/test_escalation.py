"""Escalation, acknowledgement timeout, auto-resolve and the notification log, on a fake clock.

The policy (tests/incidents/conftest.py): level 1 is whoever is on call in
"Primary" (Alice in the week of 2026-01-05), after 10 minutes level 2 is
Carol, after 5 more the policy repeats once (``num_loops: 1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pitwall.incidents import ChangeLog, IncidentService, Page
from pitwall.incidents.events import AlertEvent, parse_event
from pitwall.incidents.model import ContactMethod, Incident
from pitwall.incidents.oncall import parse_time
from pitwall.incidents.store import IncidentStore
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.incidents.conftest import ROUTING_KEY

pytestmark = pytest.mark.timeout(30)

MIN = 60 * 10**9
T0 = parse_time("2026-01-07T12:00:00Z")  # Alice's week on "Primary"


@dataclass
class FakeClock:
    now: int = T0

    def __call__(self) -> int:
        return self.now

    def at(self, minutes: float) -> None:
        self.now = T0 + int(minutes * MIN)


@dataclass
class RecordingPager:
    pages: list[tuple[str, str, str]] = field(default_factory=list)  # (user name, reason, address)
    fail_for: set[str] = field(default_factory=set)

    async def page(self, contact: ContactMethod, page: Page) -> None:
        if contact.address in self.fail_for:
            raise RuntimeError("connection refused")
        self.pages.append((page.user_name, page.reason, contact.address))


def _service(store: SqliteRevStore, clock: FakeClock, pager: RecordingPager) -> IncidentService:
    return IncidentService(IncidentStore(store), ChangeLog(store), pager=pager, clock=clock)


def _trigger(dedup: str = "disk-db1") -> AlertEvent:
    return parse_event({"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": dedup,
                        "payload": {"summary": "disk full", "source": "db1", "severity": "critical"}})


async def _incident(svc: IncidentService, number: int = 1) -> Incident:
    return await svc.require(f"Q{number:07d}")


async def test_unacknowledged_incident_escalates_and_loops(store: SqliteRevStore) -> None:
    clock, pager = FakeClock(), RecordingPager()
    svc = _service(store, clock, pager)
    await svc.handle_event(_trigger())
    assert pager.pages == [("Alice", "assigned", "http://hooks/alice")]
    steps = [(9.99, []), (10, [("Carol", "escalated")]), (14, []), (15, [("Alice", "escalated")]),
             (25, [("Carol", "escalated")]), (30, []), (60, [])]
    levels = []
    for minute, expected in steps:
        before = len(pager.pages)
        clock.at(minute)
        await svc.tick()
        assert [(u, r) for u, r, _ in pager.pages[before:]] == expected, minute
        levels.append((await _incident(svc)).escalation_level)
    assert levels == [1, 2, 2, 1, 2, 2, 2]
    inc = await _incident(svc)
    assert inc.loops_done == 1 and inc.next_escalation_ns == 0  # policy exhausted after one repeat
    kinds = [e.type for e in await svc.store.log_entries(inc.id)]
    assert kinds.count("escalate_log_entry") == 4  # 3 escalations + "exhausted"
    assert kinds.count("notify_log_entry") == 4


async def test_acknowledgement_stops_escalation_until_its_timeout(store: SqliteRevStore) -> None:
    clock, pager = FakeClock(), RecordingPager()
    svc = _service(store, clock, pager)
    await svc.handle_event(_trigger())
    clock.at(1)
    await svc.acknowledge("Q0000001", "PALICE1")
    for minute in (10, 20, 30.99):
        clock.at(minute)
        await svc.tick()
    assert [r for _, r, _ in pager.pages] == ["assigned"]
    assert (await _incident(svc)).status == "acknowledged"
    clock.at(31)  # acknowledged at 1m + the service's 30-minute acknowledgement timeout
    await svc.tick()
    inc = await _incident(svc)
    assert inc.status == "triggered"
    assert pager.pages[-1][:2] == ("Alice", "re-triggered (acknowledgement timeout)")
    clock.at(41)  # the escalation clock restarted at the re-trigger
    await svc.tick()
    assert pager.pages[-1][:2] == ("Carol", "escalated")
    clock.at(240)  # four hours after the trigger: the auto-resolve timeout
    await svc.tick()
    inc = await _incident(svc)
    assert inc.status == "resolved" and inc.alert_counts == {"all": 1, "triggered": 0, "resolved": 1}


async def test_resolved_incident_never_absorbs_a_new_alert(store: SqliteRevStore) -> None:
    clock, pager = FakeClock(), RecordingPager()
    svc = _service(store, clock, pager)
    await svc.handle_event(_trigger())
    await svc.handle_event(_trigger())  # same key, open: deduplicated
    assert len(await svc.store.incidents()) == 1
    await svc.handle_event(parse_event({"routing_key": ROUTING_KEY, "event_action": "resolve",
                                        "dedup_key": "disk-db1"}))
    await svc.handle_event(_trigger())
    incs = await svc.store.incidents()
    assert [(i.number, i.status) for i in incs] == [(1, "resolved"), (2, "triggered")]
    assert len(await svc.store.alerts("Q0000001")) == 1


async def test_no_page_is_sent_twice_across_restarts(store: SqliteRevStore) -> None:
    clock, pager = FakeClock(), RecordingPager()
    first = _service(store, clock, pager)
    await first.handle_event(_trigger())
    assert len(pager.pages) == 1
    # A restart: a new service over the same store delivers what is queued, which is nothing.
    second = _service(store, clock, pager)
    await second.flush_all()
    assert len(pager.pages) == 1
    # A crash after the escalation was written but before its page went out: the restart sends it, once.
    clock.at(10)
    inc = await _incident(second)
    await second.store.update_incident(inc.id, lambda i: second._escalate(i, clock.now))
    assert len(pager.pages) == 1 and (await _incident(second)).outbox
    third = _service(store, clock, pager)
    await third.flush_all()
    await third.flush_all()
    await third.tick()
    assert [(u, r) for u, r, _ in pager.pages] == [("Alice", "assigned"), ("Carol", "escalated")]
    # A crash after a page was claimed but before the outbox was cleared: claimed pages are not resent.
    clock.at(15)
    await third.store.update_incident(inc.id, lambda i: third._escalate(i, clock.now))
    pending = (await _incident(third)).outbox[0]
    assert await third.store.claim_notification(inc.id, pending.key, {"state": "sending"})
    await _service(store, clock, pager).flush_all()
    assert len(pager.pages) == 2 and not (await _incident(third)).outbox
    states = [n.get("state") for n in await third.store.notifications(inc.id)]
    assert states == ["sent", "sent", "sending"]


async def test_failed_page_is_logged_and_others_still_go(store: SqliteRevStore) -> None:
    clock, pager = FakeClock(), RecordingPager(fail_for={"http://hooks/alice"})
    svc = _service(store, clock, pager)
    await svc.handle_event(_trigger())
    assert pager.pages == []
    (note,) = await svc.store.notifications("Q0000001")
    assert note["state"] == "failed" and "connection refused" in str(note["errors"])
    clock.at(10)
    await svc.tick()
    assert pager.pages == [("Carol", "escalated", "http://hooks/carol")]


async def test_reassign_and_escalation_level_by_hand(store: SqliteRevStore) -> None:
    clock, pager = FakeClock(), RecordingPager()
    svc = _service(store, clock, pager)
    await svc.handle_event(_trigger())
    await svc.reassign("Q0000001", "PALICE1", users=["PBOB001"])
    inc = await _incident(svc)
    assert [a["user"] for a in inc.assignments] == ["PBOB001"] and inc.next_escalation_ns == 0
    await svc.reassign("Q0000001", "PALICE1", escalation_level=2)
    inc = await _incident(svc)
    assert inc.escalation_level == 2 and [a["user"] for a in inc.assignments] == ["PCAROL1"]
    assert [u for u, _, _ in pager.pages] == ["Alice", "Bob", "Carol"]
