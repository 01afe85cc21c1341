"""What happens to incidents: events in, acknowledgements, escalation, notifications out.

``IncidentService`` is the one place incident state changes. Every change is
one compare-and-swap write of the incident (``store.IncidentStore``) that also
records its log entries and, in the incident's outbox, the notifications it
calls for; the outbox is delivered afterwards, each notification claimed in
the notification log first, so a crash or restart between the write and the
delivery neither loses the decision nor sends anything twice.

Time comes from an injectable clock (nanoseconds), so escalation timing is
tested with a fake one: ``tick()`` does what is due at the clock's now.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from pitwall.incidents.changes import ChangeEvent, ChangeSink
from pitwall.incidents.errors import Conflict, InvalidEvent, InvalidInput, NotFoundError
from pitwall.incidents.events import AlertEvent, ChangeEventIn
from pitwall.incidents.grouping import MAX_GROUP_NS, AlertGrouping, matches, similar, window_ns
from pitwall.incidents.model import (
    Alert,
    ContactMethod,
    EscalationPolicy,
    Incident,
    LogEntry,
    Outbox,
    Schedule,
    Service,
    User,
)
from pitwall.incidents.oncall import on_call_at, parse_time
from pitwall.incidents.signals import signal_service
from pitwall.incidents.store import IncidentStore

__all__ = ["Clock", "IncidentService", "LinkMaker", "Page", "Pager"]

log = logging.getLogger(__name__)
Clock = Callable[[], int]
_MIN_NS = 60 * 1_000_000_000
_S_NS = 1_000_000_000
_CREATE_TRIES = 100  # attempts to take the next incident number under contention
_SIMILAR_TO = 50  # intelligent grouping compares a summary with the incident's latest alerts only


@dataclass(frozen=True)
class Page:
    """One notification to one person about one incident."""

    incident_id: str
    number: int
    title: str
    status: str
    urgency: str
    service: str
    reason: str  # "assigned", "escalated", "re-triggered (acknowledgement timeout)"
    url: str  # the incident in pitwall's REST API
    user_id: str
    user_name: str
    acknowledge_url: str = ""  # signed links acting as this user from the message (``links``); empty: none
    resolve_url: str = ""
    html_url: str = ""  # the incident's page in pitwall's UI (PagerDuty's name for an incident's web page)


class Pager(Protocol):
    """Delivers a page to one contact method; raises on failure."""

    async def page(self, contact: ContactMethod, page: Page) -> None: ...


class LinkMaker(Protocol):
    """Signs the acknowledge/resolve links of a page to one user through one contact method."""

    async def urls(self, incident_id: str, user_id: str, contact: ContactMethod) -> tuple[str, str]:
        """The acknowledge and the resolve URL."""


def _entry(kind: str, now: int, summary: str, *, agent: str = "", channel: str = "api",
           assignees: Sequence[str] = (), **details: object) -> LogEntry:
    return LogEntry(id="R" + secrets.token_hex(6).upper(), type=kind, created_ns=now, summary=summary,
                    agent=agent, channel=channel, assignees=list(assignees), details=dict(details))


class IncidentService:
    """Incident life cycle over the store; ``pager`` delivers notifications, ``changes`` gets change events."""

    def __init__(self, store: IncidentStore, changes: ChangeSink, *, pager: Pager | None = None,
                 clock: Clock = time.time_ns, base_url: str = "", links: LinkMaker | None = None) -> None:
        self.store = store
        self.changes = changes
        self.pager = pager
        self.links = links
        self.clock = clock
        self.base_url = base_url.rstrip("/")
        self._numbering = asyncio.Lock()

    # --- look-ups --------------------------------------------------------------------------------

    async def policy_of(self, service: Service) -> EscalationPolicy | None:
        if not service.escalation_policy:
            return None
        pol = await self.store.get(EscalationPolicy, service.escalation_policy)
        if pol is None:  # configured by name
            pol = next((p for p in await self.store.list_all(EscalationPolicy) if p.name == service.escalation_policy),
                       None)
        return pol

    async def on_call(self, schedule: Schedule, t_ns: int) -> str | None:
        return on_call_at(schedule, await self.store.overrides(schedule.id), t_ns)

    async def targets(self, policy: EscalationPolicy, level: int, t_ns: int) -> list[str]:
        """User ids of escalation level ``level`` (1-based) at ``t_ns``: users, and who is on call in schedules."""
        out: list[str] = []
        for target in policy.escalation_rules[level - 1].targets:
            uid: str | None = target.id
            if target.kind == "schedule":
                sched = await self.store.get(Schedule, target.id)
                uid = await self.on_call(sched, t_ns) if sched else None
            if uid and uid not in out:
                out.append(uid)
        return out

    # --- events API ------------------------------------------------------------------------------

    async def service_for(self, routing_key: str) -> Service:
        svc = await self.store.service_for_key(routing_key)
        if svc is None:
            raise InvalidEvent(["Invalid routing key"])
        return svc

    async def handle_event(self, ev: AlertEvent) -> str:
        """Apply an alert event; returns its dedup key (generated for a trigger without one)."""
        return await self.apply_event(await self.service_for(ev.routing_key), ev)

    async def apply_event(self, svc: Service, ev: AlertEvent) -> str:
        """Apply an alert event to ``svc`` (found by routing key, or in process by id or name)."""
        now = self.clock()
        dedup = ev.dedup_key or secrets.token_hex(16)
        if svc.status == "disabled":  # PagerDuty accepts events for a disabled service and drops them
            return dedup
        agent = f"service:{svc.id}"
        if ev.action == "trigger":
            await self.trigger(svc, dedup, ev, now)
            return dedup
        inc = await self.store.open_by_dedup(svc.id, dedup)
        if inc is None:  # nothing open under that key: PagerDuty accepts and drops the event
            return dedup
        if ev.action == "acknowledge":
            await self.acknowledge(inc.id, agent, channel="events_api")
        else:
            await self.resolve_alert(inc.id, dedup, agent)
        return dedup

    async def trigger(self, svc: Service, dedup: str, ev: AlertEvent | None, now: int, *,
                      title: str = "", urgency: str = "") -> Incident:
        """A trigger: a new incident, or (same dedup key, still open) one more log entry on it."""
        for _ in range(5):
            open_inc = await self.store.open_by_dedup(svc.id, dedup)
            if open_inc is not None:
                await self.store.add_log(open_inc.id, _entry("trigger_log_entry", now, "Trigger event deduplicated",
                                                             agent=f"service:{svc.id}", channel="events_api",
                                                             dedup_key=dedup))
                return open_inc
            if ev is not None and ev.incident_key:
                outcome = await self._join_keyed(svc, dedup, ev, now)
                if isinstance(outcome, Incident):
                    return outcome
                if outcome == "deduplicated":
                    continue
            if ev is not None and svc.alert_grouping_parameters.type is not None:
                outcome = await self._group(svc, dedup, ev, now)
                if isinstance(outcome, Incident):
                    return outcome
                if outcome == "deduplicated":
                    continue  # another trigger took the key meanwhile: deduplicate against it
            created = await self._create(svc, dedup, ev, now, title=title, urgency=urgency)
            if created is not None:
                await self.flush(created.id)
                return created
        raise InvalidInput("could not create the incident: its dedup key keeps changing hands")

    async def _group(self, svc: Service, dedup: str, ev: AlertEvent, now: int) -> Incident | str | None:
        """Add the alert to the newest open incident its service's grouping puts it in; None: none takes it."""
        g = svc.alert_grouping_parameters
        for cand in await self.store.open_incidents(svc.id):
            if g.type != "time" and not _in_window(g, cand, now):
                continue  # cheap test first: reading the first alert costs a range read
            first = await self._first_alert(cand.id) if g.type != "time" else None
            if not await self._fits(g, cand, ev.payload, now, first):
                continue
            alert = self._alert(svc, dedup, ev, now, cand.id)

            async def fits(inc: Incident, first: Alert | None = first) -> bool:
                return await self._fits(g, inc, ev.payload, now, first)

            outcome = await self.store.add_alert(cand.id, alert, self._joiner(alert, now, fits, str(g.type),
                                                                        f"{g.type} grouping"))
            if outcome == "added":
                return await self.require(cand.id)
            if outcome == "deduplicated":
                return outcome
        return None

    async def _join_keyed(self, svc: Service, dedup: str, ev: AlertEvent, now: int) -> Incident | str | None:
        """Add the alert to the open incident under ``ev.incident_key`` (pitwall's alerting, dedup per alert:
        its notification group's incident); None when no open incident holds that key."""
        inc = await self.store.open_by_dedup(svc.id, ev.incident_key)
        if inc is None:
            return None
        alert = self._alert(svc, dedup, ev, now, inc.id)

        async def fits(i: Incident) -> bool:
            return i.incident_key == ev.incident_key and i.alert_counts.get("all", 0) > 0

        outcome = await self.store.add_alert(inc.id, alert, self._joiner(alert, now, fits, "notification_group",
                                                                      "its Alertmanager notification group"))
        if outcome == "added":
            return await self.require(inc.id)
        return outcome if outcome == "deduplicated" else None

    def _joiner(self, alert: Alert, now: int, fits: Callable[[Incident], Awaitable[bool]], kind: str,
                why: str) -> Callable[[Incident], Awaitable[list[LogEntry] | None]]:
        """The change that adds ``alert`` to an incident, re-checking ``fits`` on the incident as stored."""

        async def change(inc: Incident) -> list[LogEntry] | None:
            if inc.status == "resolved" or not await fits(inc):
                return None
            inc.alert_counts = {**inc.alert_counts, "all": inc.alert_counts.get("all", 0) + 1,
                                "triggered": inc.alert_counts.get("triggered", 0) + 1}
            inc.updated_ns = inc.last_alert_ns = now
            inc.last_alert_severity = alert.severity or inc.last_alert_severity
            return [_entry("trigger_log_entry", now, f"Alert grouped into this incident ({why}): "
                           f"{alert.summary[:200]}", agent=f"service:{alert.service_id}", channel="events_api",
                           dedup_key=alert.dedup_key, alert_id=alert.id, grouping=kind)]

        return change

    async def _first_alert(self, incident_id: str) -> Alert | None:
        alerts = await self.store.alerts(incident_id)
        return alerts[0] if alerts else None

    async def _fits(self, g: AlertGrouping, inc: Incident, payload: dict[str, Any], now: int,
                    first: Alert | None) -> bool:
        """Whether grouping ``g`` puts an alert with ``payload`` arriving at ``now`` into open incident ``inc``."""
        if inc.alert_counts.get("all", 0) == 0:  # created by hand or without alerts: nothing to group with
            return False
        if g.type == "time":
            timeout = (g.config.timeout if g.config else None) or 0
            return timeout == 0 or now - inc.created_ns < timeout * _MIN_NS
        if not _in_window(g, inc, now) or first is None:
            return False
        if g.type == "content_based":
            assert g.config is not None and g.config.aggregate is not None  # validated with the service
            return matches(g.config.aggregate, list(g.config.fields or []), _payload_of(first), payload)
        summary = str(payload.get("summary", ""))
        return any(similar(summary, a.summary) for a in (await self.store.alerts(inc.id))[-_SIMILAR_TO:])

    def _alert(self, svc: Service, dedup: str, ev: AlertEvent, now: int, incident_id: str) -> Alert:
        p = ev.payload
        return Alert(id="A" + secrets.token_hex(6).upper(), incident_id=incident_id, service_id=svc.id,
                     dedup_key=dedup, created_ns=now, summary=p.get("summary") or dedup,
                     severity=p.get("severity", ""), source=p.get("source", ""), component=p.get("component", ""),
                     group=p.get("group", ""), class_=p.get("class", ""), custom_details=p.get("custom_details"),
                     timestamp=p.get("timestamp", ""), client=ev.client, client_url=ev.client_url, links=ev.links,
                     images=ev.images)

    async def _create(self, svc: Service, dedup: str, ev: AlertEvent | None, now: int, *,
                      title: str, urgency: str) -> Incident | None:
        """A new incident stored under the next number; None when an open one took ``dedup`` meanwhile."""
        inc, alert, entries = await self._build(svc, dedup, ev, now, title=title, urgency=urgency)
        # Numbers are taken one at a time in this process (the counter's CAS settles it between servers),
        # so concurrent triggers do not spin on the counter.
        async with self._numbering:
            for _ in range(_CREATE_TRIES):
                number, counter_rev = await self.store.next_number()
                inc.number, inc.id = number, f"Q{number:07d}"
                if alert is not None:
                    alert.incident_id = inc.id
                outcome = await self.store.create_incident(inc, alert, entries, counter_rev)
                if outcome != "renumber":
                    return inc if outcome == "created" else None
        raise Conflict("too many incidents created at once; retry")

    async def _build(self, svc: Service, dedup: str, ev: AlertEvent | None, now: int, *, title: str,
                     urgency: str) -> tuple[Incident, Alert | None, list[LogEntry]]:
        """The incident (number still 0), its first alert and log entries, its first assignment and pages."""
        pol = await self.policy_of(svc)
        payload = ev.payload if ev else {}
        if not urgency:
            urgency = svc.urgency
            if urgency == "severity_based":
                urgency = "high" if payload.get("severity") in ("critical", "error") else "low"
        summary = title or payload.get("summary") or dedup
        inc = Incident(id="", number=0, title=summary, service_id=svc.id,
                       escalation_policy_id=pol.id if pol else "", urgency=urgency,
                       incident_key=(ev.incident_key if ev else "") or dedup, created_ns=now, updated_ns=now,
                       last_status_change_ns=now,
                       last_alert_severity=payload.get("severity", ""), last_alert_ns=now,
                       signal_service=signal_service(payload))
        if svc.auto_resolve_timeout:
            inc.resolve_at_ns = now + svc.auto_resolve_timeout * _S_NS
        alert = None
        entries = [_entry("trigger_log_entry", now, "Triggered through the API" if ev is None else
                          "Triggered through the Events API", agent=f"service:{svc.id}",
                          channel="api" if ev is None else "events_api", dedup_key=dedup)]
        if ev is not None and svc.alert_creation == "create_alerts_and_incidents":
            alert = self._alert(svc, dedup, ev, now, "")
            inc.alert_counts = {"all": 1, "triggered": 1, "resolved": 0}
        if pol is not None:
            entries += await self._assign_level(inc, pol, 1, now, "assigned")
        return inc, alert, entries

    async def _assign_level(self, inc: Incident, pol: EscalationPolicy, level: int, now: int,
                            reason: str) -> list[LogEntry]:
        """Assign the incident to ``level``'s targets, schedule the next escalation, queue their pages."""
        users = await self.targets(pol, level, now)
        inc.escalation_level = level
        inc.assignments = [{"user": u, "at": now} for u in users]
        inc.next_escalation_ns = now + pol.escalation_rules[level - 1].escalation_delay_in_minutes * _MIN_NS
        self._queue(inc, users, reason)
        kind = "assign_log_entry" if reason == "assigned" else "escalate_log_entry"
        who = ", ".join([u.name if (u := await self.store.get(User, uid)) else uid for uid in users])
        return [_entry(kind, now, f"{'Assigned' if kind == 'assign_log_entry' else 'Escalated'} to "
                       f"level {level}: {who or 'nobody on call'}", assignees=users, channel="auto",
                       escalation_level=level, loop=inc.loops_done)]

    def _queue(self, inc: Incident, users: Sequence[str], reason: str) -> None:
        inc.notify_seq += 1
        inc.outbox += [Outbox(key=f"{inc.notify_seq:04d}-{u}", user_id=u, reason=reason) for u in users]

    # --- people's actions ------------------------------------------------------------------------

    async def acknowledge(self, incident_id: str, agent: str, *, channel: str = "api") -> Incident:
        return await self.store.update_incident(incident_id, self._acknowledging(agent, channel, self.clock()))

    async def resolve(self, incident_id: str, agent: str, *, channel: str = "api",
                      summary: str = "Resolved") -> Incident:
        return await self.store.update_incident(incident_id, self._resolving(agent, channel, self.clock(), summary))

    async def act_once(self, incident_id: str, action: str, agent: str, *, channel: str,
                       details: dict[str, object]) -> tuple[Incident, bool]:
        """Acknowledge a triggered incident or resolve an open one, as a link in a page does: never twice
        (a second click on an acknowledged incident adds no acknowledgement), nothing on a resolved one.
        Returns the incident and whether this call changed it; decided in the same compare-and-swap write."""
        now = self.clock()
        apply = (self._acknowledging(agent, channel, now, details) if action == "acknowledge"
                 else self._resolving(agent, channel, now, "Resolved", details))
        acted = False

        async def change(inc: Incident) -> tuple[list[LogEntry], list[Alert]] | None:
            nonlocal acted
            acted = inc.status == "triggered" or (inc.status == "acknowledged" and action == "resolve")
            return await apply(inc) if acted else None

        return await self.store.update_incident(incident_id, change), acted

    def _acknowledging(self, agent: str, channel: str, now: int, details: dict[str, object] | None = None
                       ) -> Callable[[Incident], Awaitable[tuple[list[LogEntry], list[Alert]] | None]]:
        async def change(inc: Incident) -> tuple[list[LogEntry], list[Alert]] | None:
            if inc.status == "resolved":
                return None
            svc = await self.store.get(Service, inc.service_id)
            inc.status = "acknowledged"
            inc.updated_ns = inc.last_status_change_ns = now
            inc.acknowledgements.append({"user": agent, "at": now})
            timeout = svc.acknowledgement_timeout if svc else None
            inc.ack_until_ns = now + timeout * _S_NS if timeout else 0
            entry = _entry("acknowledge_log_entry", now, "Acknowledged", agent=agent, channel=channel)
            entry.details.update(details or {})
            return [entry], []

        return change

    def _resolving(self, agent: str, channel: str, now: int, summary: str, details: dict[str, object] | None = None
                   ) -> Callable[[Incident], Awaitable[tuple[list[LogEntry], list[Alert]] | None]]:
        async def change(inc: Incident) -> tuple[list[LogEntry], list[Alert]] | None:
            if inc.status == "resolved":
                return None
            alerts = await self.store.alerts(inc.id)  # read per attempt: grouping may add one meanwhile
            inc.status = "resolved"
            inc.updated_ns = inc.last_status_change_ns = inc.resolved_ns = now
            inc.next_escalation_ns = inc.ack_until_ns = inc.resolve_at_ns = 0
            done = [a.model_copy(update={"status": "resolved", "resolved_ns": now}) for a in alerts
                    if a.status != "resolved"]
            inc.alert_counts = {"all": len(alerts), "triggered": 0, "resolved": len(alerts)}
            entry = _entry("resolve_log_entry", now, summary, agent=agent, channel=channel)
            entry.details.update(details or {})
            return [entry], done

        return change

    async def resolve_alert(self, incident_id: str, dedup: str, agent: str) -> Incident:
        """A resolve event: resolve the alert(s) under ``dedup``; the incident resolves with its last open alert."""
        now = self.clock()
        resolve_all = False

        async def change(inc: Incident) -> tuple[list[LogEntry], list[Alert]] | None:
            nonlocal resolve_all
            if inc.status == "resolved":
                return None
            alerts = await self.store.alerts(incident_id)
            still = [a for a in alerts if a.status == "triggered" and a.dedup_key != dedup]
            done = [a.model_copy(update={"status": "resolved", "resolved_ns": now}) for a in alerts
                    if a.status == "triggered" and a.dedup_key == dedup]
            if not still or not done:  # its last open alert (or an incident without alerts): resolve it all
                resolve_all = True
                return None
            n_resolved = sum(a.status == "resolved" for a in alerts) + len(done)
            inc.alert_counts = {"all": len(alerts), "triggered": len(alerts) - n_resolved, "resolved": n_resolved}
            inc.updated_ns = now
            return [_entry("annotate_log_entry", now, f"Alert resolved through the Events API ({len(still)} of "
                           f"{len(alerts)} alerts still triggered)", agent=agent, channel="events_api",
                           dedup_key=dedup)], done

        inc = await self.store.update_incident(incident_id, change)
        if resolve_all:
            inc = await self.resolve(incident_id, agent, channel="events_api")
        return inc

    async def reassign(self, incident_id: str, agent: str, *, users: Sequence[str] = (),
                       escalation_level: int = 0) -> Incident:
        """Assign to ``users``, or to the targets of ``escalation_level``; re-triggers an acknowledged one."""
        now = self.clock()
        for u in users:
            if await self.store.get(User, u) is None:
                raise InvalidInput(f"user {u} not found", [f"Assignee {u} not found"])

        async def change(inc: Incident) -> tuple[list[LogEntry], list[Alert]] | None:
            if inc.status == "resolved":
                raise InvalidInput("Incident Already Resolved", ["Incident Already Resolved"])
            inc.status = "triggered"
            inc.updated_ns = now
            inc.ack_until_ns = 0
            if escalation_level:
                pol = await self.store.get(EscalationPolicy, inc.escalation_policy_id)
                if pol is None or not 1 <= escalation_level <= len(pol.escalation_rules):
                    raise InvalidInput("escalation_level is out of range for the incident's escalation policy")
                return await self._assign_level(inc, pol, escalation_level, now, "escalated"), []
            inc.assignments = [{"user": u, "at": now} for u in users]
            inc.next_escalation_ns = 0  # assigned by hand: PagerDuty stops the automatic escalation
            self._queue(inc, users, "assigned")
            return [_entry("assign_log_entry", now, f"Reassigned to {', '.join(users)}", agent=agent,
                           assignees=list(users))], []

        inc = await self.store.update_incident(incident_id, change)
        await self.flush(incident_id)
        return inc

    # --- the clock's work ------------------------------------------------------------------------

    async def tick(self) -> int:
        """Escalate, re-trigger and auto-resolve what is due now; deliver outboxes. Returns changes made."""
        now = self.clock()
        n = 0
        for inc_id in await self.store.open_ids():
            inc = await self.store.get_incident(inc_id)
            if inc is None:
                continue
            if inc.resolve_at_ns and now >= inc.resolve_at_ns:
                await self.resolve(inc_id, "", channel="timeout", summary="Resolved by the auto-resolve timeout")
            elif inc.status == "acknowledged" and inc.ack_until_ns and now >= inc.ack_until_ns:
                await self.store.update_incident(inc_id, lambda i: self._unacknowledge(i, now))
            elif inc.status == "triggered" and inc.next_escalation_ns and now >= inc.next_escalation_ns:
                await self.store.update_incident(inc_id, lambda i: self._escalate(i, now))
            elif not inc.outbox:
                continue  # nothing due and nothing queued: no write, no second read
            n += 1
            await self.flush(inc_id)
        return n

    async def _unacknowledge(self, inc: Incident, now: int) -> tuple[list[LogEntry], list[Alert]] | None:
        if inc.status != "acknowledged" or not inc.ack_until_ns or now < inc.ack_until_ns:
            return None
        inc.status = "triggered"
        inc.updated_ns = inc.last_status_change_ns = now
        inc.ack_until_ns = 0
        users = [a["user"] for a in inc.assignments]
        self._queue(inc, users, "re-triggered (acknowledgement timeout)")
        pol = await self.store.get(EscalationPolicy, inc.escalation_policy_id)
        if pol is not None:
            delay = pol.escalation_rules[inc.escalation_level - 1].escalation_delay_in_minutes
            inc.next_escalation_ns = now + delay * _MIN_NS
        return [_entry("unacknowledge_log_entry", now, "Unacknowledged due to timeout", channel="timeout",
                       assignees=users)], []

    async def _escalate(self, inc: Incident, now: int) -> tuple[list[LogEntry], list[Alert]] | None:
        if inc.status != "triggered" or not inc.next_escalation_ns or now < inc.next_escalation_ns:
            return None
        pol = await self.store.get(EscalationPolicy, inc.escalation_policy_id)
        due = inc.next_escalation_ns
        if pol is None:
            inc.next_escalation_ns = 0
            return [], []
        level = inc.escalation_level + 1
        if level > len(pol.escalation_rules):
            if inc.loops_done >= pol.num_loops:
                inc.next_escalation_ns = 0  # the policy is exhausted: it stays with the last level
                return [_entry("escalate_log_entry", now, "Escalation policy exhausted", channel="auto",
                               escalation_level=inc.escalation_level, loop=inc.loops_done)], []
            inc.loops_done += 1
            level = 1
        inc.updated_ns = now
        entries = await self._assign_level(inc, pol, level, due, "escalated")
        return entries, []

    # --- notifications ---------------------------------------------------------------------------

    async def flush(self, incident_id: str) -> None:
        """Deliver the incident's outbox: claim each page in the notification log, send it, drop it."""
        inc = await self.store.get_incident(incident_id)
        if inc is None or not inc.outbox:
            return
        svc = await self.store.get(Service, inc.service_id)
        sent: set[str] = set()
        for item in inc.outbox:
            if await self.store.claim_notification(inc.id, item.key, {"user": item.user_id, "reason": item.reason,
                                                                      "state": "sending", "at": self.clock()}):
                result, entry = await self._deliver(inc, svc, item)
                await self.store.finish_notification(inc.id, item.key, {"user": item.user_id, "reason": item.reason,
                                                                        **result, "at": self.clock()}, entry)
            sent.add(item.key)

        async def drop(i: Incident) -> tuple[list[LogEntry], list[Alert]] | None:
            before = len(i.outbox)
            i.outbox = [o for o in i.outbox if o.key not in sent]
            return None if len(i.outbox) == before else ([], [])

        await self.store.update_incident(inc.id, drop)

    async def _deliver(self, inc: Incident, svc: Service | None,
                       item: Outbox) -> tuple[dict[str, object], LogEntry]:
        """Send one page to the user's contact methods; returns the outcome and its log entry."""
        user = await self.store.get(User, item.user_id)
        if user is None:
            why = f"user {item.user_id} not found"
            return ({"state": "failed", "errors": [why]},
                    _entry("notify_log_entry", self.clock(), f"Could not notify {item.user_id}: {why}", channel="auto"))
        chosen = user.notification_rules.get(inc.urgency)
        methods = [c for c in user.contact_methods if chosen is None or c.id in chosen]
        page = Page(inc.id, inc.number, inc.title, inc.status, inc.urgency, svc.name if svc else inc.service_id,
                    item.reason, f"{self.base_url}/pagerduty/incidents/{inc.id}", user.id, user.name,
                    html_url=f"{self.base_url}/incidents/{inc.id}")
        done: list[str] = []
        errors: list[str] = []
        for cm in methods:
            if self.pager is None:
                errors.append("no pager configured")
                break
            try:
                ack, res = await self.links.urls(inc.id, user.id, cm) if self.links is not None else ("", "")
                await self.pager.page(cm, replace(page, acknowledge_url=ack, resolve_url=res))
                done.append(cm.id)
            except Exception as e:
                errors.append(f"{cm.type} {cm.id}: {e}")
                log.warning("page failed", extra={"incident": inc.id, "contact": cm.id, "error": str(e)})
        entry = _entry("notify_log_entry", self.clock(), f"Notified {user.name} ({item.reason})",
                       channel="auto", user=user.id, contact_methods=done, errors=errors)
        return ({"state": "sent" if done and not errors else ("partial" if done else "failed"),
                 "contact_methods": done, "errors": errors}, entry)

    async def flush_all(self) -> None:
        """After a restart: deliver what open incidents still have queued (claimed pages are not resent)."""
        for inc_id in await self.store.open_ids():
            await self.flush(inc_id)

    # --- change events ---------------------------------------------------------------------------

    async def record_change(self, ev: ChangeEventIn) -> ChangeEvent:
        """A change event from the Events API into the one change stream, under the routing key's service."""
        svc = await self.service_for(ev.routing_key)
        ts = parse_time(ev.timestamp) if ev.timestamp else self.clock()
        details = {"custom_details": ev.custom_details, "pagerduty_service_id": svc.id}
        return await self.changes.record(ChangeEvent(
            kind="other", summary=ev.summary, source=ev.source or "events-api", service=svc.name, ts_ns=ts,
            details=details, links=tuple(link.get("href", "") for link in ev.links if link.get("href"))))

    async def require(self, incident_id: str) -> Incident:
        inc = await self.store.get_incident(incident_id)
        if inc is None:
            raise NotFoundError(f"Incident {incident_id} not found")
        return inc


def _payload_of(a: Alert) -> dict[str, Any]:
    """An alert's payload fields as the Events API named them (for content-based comparison)."""
    return {"summary": a.summary, "source": a.source, "severity": a.severity, "component": a.component,
            "group": a.group, "class": a.class_, "custom_details": a.custom_details}


def _in_window(g: AlertGrouping, inc: Incident, now: int) -> bool:
    """Content-based and intelligent grouping's rolling window (from the latest alert, 24 h at most)."""
    return now - (inc.last_alert_ns or inc.created_ns) <= window_ns(g) and now - inc.created_ns <= MAX_GROUP_NS
