"""One incident's timeline, and the postmortem draft built from it.

The timeline merges, in time order, the incident's log entries (triggers,
assignments, notifications, escalations, acknowledgements, resolution),
its notes, its alerts and every change event recorded on the one change
stream (``ChangeLog.between``) from an hour before the incident until it was
resolved: deploys, rollbacks, config changes, canary steps, chaos runs, each
with its ITSM change type (``change_records``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pitwall.incidents.change_records import change_records
from pitwall.incidents.changes import ChangeEvent
from pitwall.incidents.model import Alert, Incident, LogEntry, Note
from pitwall.incidents.views import iso

__all__ = ["LOOKBEHIND_NS", "TimelineItem", "postmortem", "timeline"]

LOOKBEHIND_NS = 3600 * 10**9  # changes this long before the incident are in its timeline
_SYSTEMS = {"jira": "Jira", "servicenow": "ServiceNow"}


class _Reads(Protocol):
    async def log_entries(self, incident_id: str) -> list[LogEntry]: ...

    async def notes(self, incident_id: str) -> list[Note]: ...

    async def alerts(self, incident_id: str) -> list[Alert]: ...

    async def incidents(self) -> list[Incident]: ...


class _Changes(Protocol):
    async def between(self, start_ns: int, end_ns: int, *, service: str = "",
                      limit: int = 1000) -> list[ChangeEvent]: ...


@dataclass(frozen=True)
class TimelineItem:
    ts_ns: int
    kind: str  # "log", "note", "alert", "change"
    text: str


async def timeline(inc: Incident, store: _Reads, changes: _Changes, names: dict[str, str], *,
                   now_ns: int) -> list[TimelineItem]:
    """Everything about ``inc`` in time order (ties: changes first, then alerts, log, notes)."""
    items: list[TimelineItem] = []
    events = await changes.between(inc.created_ns - LOOKBEHIND_NS, (inc.resolved_ns or now_ns) + 1)
    records = change_records(events, await store.incidents(), names) if events else {}
    for c in events:
        where = f" on {c.service}" if c.service else ""
        who = f" by {c.who}" if c.who else ""
        items.append(TimelineItem(c.ts_ns, "change", f"change ({c.kind}){where}: {c.summary} [{c.source}{who}] "
                                                     f"({records[c.id].type} change)"))
    for a in await store.alerts(inc.id):
        items.append(TimelineItem(a.created_ns, "alert", f"alert ({a.severity}) from {a.source or '?'}: "
                                                         f"{a.summary}"))
    for e in await store.log_entries(inc.id):
        if e.type == "annotate_log_entry":
            continue  # the note itself is listed below
        agent = names.get(e.agent.split(":", 1)[-1], e.agent) if e.agent else ""
        items.append(TimelineItem(e.created_ns, "log", f"{e.summary}" + (f" ({agent})" if agent else "")))
    for n in await store.notes(inc.id):
        items.append(TimelineItem(n.created_ns, "note", f"note by {names.get(n.user_id, n.user_id)}: {n.content}"))
    order = {"change": 0, "alert": 1, "log": 2, "note": 3}
    return sorted(items, key=lambda i: (i.ts_ns, order[i.kind]))


def _duration(ns: int) -> str:
    s = ns // 10**9
    h, rem = divmod(s, 3600)
    return f"{h}h {rem // 60}m {rem % 60}s" if h else f"{rem // 60}m {rem % 60}s"


SLOBudgets = Callable[[str, int, int], Awaitable[Sequence[Any]]]


async def _impact(inc: Incident, names: dict[str, str], end_ns: int, slo_budgets: SLOBudgets | None) -> list[str]:
    """The impact section's lines: the error budget each SLO of the incident's service spent while it was open."""
    placeholder = "_Who and what was affected, for how long._"
    if slo_budgets is None:
        return [placeholder, "", "_SLO error budget consumed: the SLO capability is not running._"]
    services = dict.fromkeys(x for x in (inc.signal_service, names.get(inc.service_id, "")) if x)
    start_ms, end_ms = inc.created_ns // 1_000_000, max(end_ns // 1_000_000, inc.created_ns // 1_000_000 + 1)
    lines = [placeholder, ""]
    for svc in services:
        try:
            uses = await slo_budgets(svc, start_ms, end_ms)
        except Exception as e:  # a failing query must not cost the whole draft
            lines.append(f"- SLOs of {svc}: budget not computed ({e})")
            continue
        for u in uses:
            share = "no data" if u.consumed is None else f"{u.consumed * 100:.2f}% of its error budget"
            lines.append(f"- SLO {u.name}: {share} consumed while the incident was open"
                         f" ({'; '.join(u.arithmetic[-1:])})")
    if len(lines) == 2:
        lines.append("- No SLO is defined for " + (" or ".join(services) or "this service") + ".")
    return lines


async def postmortem(inc: Incident, store: _Reads, changes: _Changes, names: dict[str, str], *,
                     now_ns: int, slo_budgets: SLOBudgets | None = None) -> str:
    """A Markdown postmortem draft: summary, impact (with the SLO budget spent, when ``slo_budgets`` is given),
    the whole timeline, follow-up placeholders."""
    items = await timeline(inc, store, changes, names, now_ns=now_ns)
    end = inc.resolved_ns or now_ns
    acks = [a["at"] for a in inc.acknowledgements]
    lines = [
        f"# Postmortem: [#{inc.number}] {inc.title}",
        "",
        "## Summary",
        "",
        f"- Incident: {inc.id} (#{inc.number}), service {names.get(inc.service_id, inc.service_id)}, "
        f"urgency {inc.urgency}, status {inc.status}",
        f"- Triggered: {iso(inc.created_ns)}",
        f"- Acknowledged: {iso(acks[0]) if acks else 'never'}"
        + (f" (time to acknowledge {_duration(acks[0] - inc.created_ns)})" if acks else ""),
        f"- Resolved: {iso(inc.resolved_ns) if inc.resolved_ns else 'not yet'}",
        f"- Duration: {_duration(end - inc.created_ns)}" + ("" if inc.resolved_ns else " so far"),
        f"- Alerts: {inc.alert_counts.get('all', 0)}; highest escalation level reached: {inc.escalation_level}",
        *(["- Tickets: " + ", ".join(f"{_SYSTEMS[r.system]} [{r.external_id}]({r.external_url})"
                                      if r.external_url else f"{_SYSTEMS[r.system]} {r.external_id}"
                                      for r in inc.external_references)] if inc.external_references else []),
        "",
        "## Impact",
        "",
        *await _impact(inc, names, end, slo_budgets),
        "",
        "## Timeline (UTC)",
        "",
        "| time | what |",
        "|---|---|",
    ]
    for it in items:
        text = it.text.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {iso(it.ts_ns)} | {text} |")
    changes_seen = sum(1 for it in items if it.kind == "change")
    lines += [
        "",
        f"{changes_seen} change event(s) from one hour before the incident until its resolution are listed above.",
        "",
        "## Root cause",
        "",
        "_To be written._",
        "",
        "## What went well / what went badly",
        "",
        "- _..._",
        "",
        "## Follow-up actions",
        "",
        "| action | owner | ticket |",
        "|---|---|---|",
        "| _..._ | _..._ | _..._ |",
        "",
    ]
    return "\n".join(lines)
