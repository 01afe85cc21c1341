"""What the incidents pages show, arranged from the incidents capability's records.

``IncidentsSource`` is the UI's read interface onto incidents (the composition
root hands in ``pitwall.incidents.IncidentDesk``): records in the PagerDuty
REST API's JSON shapes, the timeline, the postmortem draft, who is on call.
Everything else here is pure functions from those records to rows for the
templates, so they are tested without a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pitwall.core.durations import short_age

__all__ = [
    "STATUSES",
    "IncidentRow",
    "IncidentsSource",
    "OnCallRow",
    "acting_user",
    "incident_row",
    "oncall_rows",
    "postmortem_filename",
]

Obj = dict[str, Any]
STATUSES = ("triggered", "acknowledged", "resolved")


class IncidentsSource(Protocol):
    """The reads and actions of the incidents pages (``pitwall.incidents.IncidentDesk``)."""

    async def incidents(self, statuses: Sequence[str] = (), service: str = "", limit: int = 200) -> list[Obj]:
        """Incidents newest first, filtered by status and service (id or name); no signal links."""
        ...

    async def services(self) -> list[Obj]:
        """Services as ``{"id", "name"}``."""
        ...

    async def users(self) -> list[Obj]:
        """Users as ``{"id", "name", "email"}``."""
        ...

    async def incident(self, incident_id: str) -> Obj | None:
        """One incident, or None."""
        ...

    async def alerts(self, incident_id: str) -> list[Obj]:
        """The incident's alerts."""
        ...

    async def timeline(self, incident_id: str) -> list[Obj]:
        """``{"at", "kind", "text"}`` in time order."""
        ...

    async def postmortem(self, incident_id: str) -> str:
        """The Markdown postmortem draft."""
        ...

    async def oncalls_now(self) -> list[Obj]:
        """On-call entries now (PagerDuty's ``oncalls`` shape)."""
        ...

    async def acknowledge(self, incident_id: str, user_id: str) -> Obj:
        """Acknowledge as ``user_id``."""
        ...

    async def resolve(self, incident_id: str, user_id: str) -> Obj:
        """Resolve as ``user_id``."""
        ...

    async def add_note(self, incident_id: str, user_id: str, content: str) -> Obj:
        """Add a note by ``user_id``."""
        ...


def _age(iso: Any, now: datetime) -> str:
    if not isinstance(iso, str) or not iso:
        return "—"
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return "—"
    return short_age((now - t).total_seconds())


@dataclass(frozen=True)
class IncidentRow:
    """An incident at a glance: the columns of the incidents list."""

    id: str
    number: int
    title: str
    status: str
    urgency: str
    service: str
    assignees: list[str]
    age: str  # since it was triggered
    created_at: str
    resolved_at: str
    signal_service: str


def incident_row(inc: Obj, now: datetime | None = None) -> IncidentRow:
    """The row of one incident in the REST API's shape."""
    now = now or datetime.now(UTC)
    return IncidentRow(
        id=str(inc.get("id", "")), number=int(inc.get("incident_number") or 0), title=str(inc.get("title", "")),
        status=str(inc.get("status", "")), urgency=str(inc.get("urgency", "")),
        service=str((inc.get("service") or {}).get("summary", "")),
        assignees=[str((a.get("assignee") or {}).get("summary", "")) for a in inc.get("assignments") or []],
        age=_age(inc.get("created_at"), now), created_at=str(inc.get("created_at") or ""),
        resolved_at=str(inc.get("resolved_at") or ""),
        signal_service=str((inc.get("pitwall") or {}).get("service") or ""))


@dataclass(frozen=True)
class OnCallRow:
    """Who is on call at one level of an escalation policy."""

    policy: str
    level: int
    users: list[str]  # "Ann (Primary schedule, until 2026-12-07T09:00:00Z)"


def oncall_rows(entries: list[Obj]) -> list[OnCallRow]:
    """On-call entries grouped by escalation policy and level, in policy then level order."""
    grouped: dict[tuple[str, int], list[str]] = {}
    for e in entries:
        key = (str((e.get("escalation_policy") or {}).get("summary", "")), int(e.get("escalation_level") or 0))
        who = str((e.get("user") or {}).get("summary", ""))
        sched = (e.get("schedule") or {}).get("summary")
        detail = ", ".join(x for x in (str(sched) if sched else "", f"until {e['end']}" if e.get("end") else "") if x)
        text = f"{who} ({detail})" if detail else who
        if text not in grouped.setdefault(key, []):
            grouped[key].append(text)
    return [OnCallRow(p, lvl, users) for (p, lvl), users in sorted(grouped.items())]


def acting_user(users: list[Obj], principal_name: str = "", inc: Obj | None = None) -> str:
    """The user id to preselect as the one acting: the signed-in principal's (by email or name), else the
    incident's first assignee (the one paged), else none."""
    low = principal_name.lower()
    if low:
        for u in users:
            if low in (str(u.get("email", "")).lower(), str(u.get("name", "")).lower()):
                return str(u["id"])
    for a in (inc or {}).get("assignments") or []:
        return str((a.get("assignee") or {}).get("id", ""))
    return ""


def postmortem_filename(inc: Obj) -> str:
    """``postmortem-<number>.md``, the download's name."""
    return f"postmortem-{int(inc.get('incident_number') or 0)}.md"
