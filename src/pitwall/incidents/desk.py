"""``IncidentDesk``: the incidents capability's read interface for the web UI, and an on-call
engineer's three actions (acknowledge, resolve, add a note).

Records come in the PagerDuty REST API's JSON shapes (``Views``) with links
relative to the server (``/pagerduty/...``, the UI's ``/graph``...), so the UI
arranges the same data ``pitwall incident show`` prints. The timeline, the
postmortem draft, the on-call computation and the note are the REST API's own
code, called here rather than repeated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pitwall.incidents.api import RestDeps, add_note
from pitwall.incidents.api_config import oncall_entries
from pitwall.incidents.errors import InvalidInput, NotFoundError
from pitwall.incidents.model import Service, User
from pitwall.incidents.store import IncidentStore
from pitwall.incidents.timeline import postmortem, timeline
from pitwall.incidents.views import Views, iso

__all__ = ["STATUSES", "IncidentDesk"]

STATUSES = ("triggered", "acknowledged", "resolved")
Obj = dict[str, Any]


class IncidentDesk:
    """Reads and actions over the REST API's dependencies (``IncidentsPart.rest``)."""

    def __init__(self, rest: RestDeps) -> None:
        self.rest = rest
        self.views = Views("")  # links relative to the server the UI runs on

    @property
    def _store(self) -> IncidentStore:
        return self.rest.store

    async def incidents(self, statuses: Sequence[str] = (), service: str = "", limit: int = 200) -> list[Obj]:
        """Incidents newest first, filtered by status and by service (id or name); at most ``limit``.
        Their ``pitwall.links`` are left empty (``incident`` has them): a list shows none."""
        bad = [s for s in statuses if s not in STATUSES]
        if bad:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, not {bad[0]!r}")
        names = await self.rest.names()
        out = []
        for i in sorted(await self._store.incidents(), key=lambda i: -i.number):
            if statuses and i.status not in statuses:
                continue
            if service and service not in (i.service_id, names.get(i.service_id)):
                continue
            out.append(self.views.incident(i, names.get(i.service_id, i.service_id),
                                           names.get(i.escalation_policy_id, ""), names, links=False))
            if len(out) >= limit:
                break
        return out

    async def services(self) -> list[Obj]:
        """The PagerDuty services (``id``, ``name``), by name."""
        return [{"id": s.id, "name": s.name} for s in sorted(await self._store.list_all(Service),
                                                               key=lambda s: s.name)]

    async def users(self) -> list[Obj]:
        """The users who can act on incidents (``id``, ``name``, ``email``), by name."""
        return [{"id": u.id, "name": u.name, "email": u.email}
                for u in sorted(await self._store.list_all(User), key=lambda u: u.name)]

    async def incident(self, incident_id: str) -> Obj | None:
        """One incident, or None."""
        inc = await self._store.get_incident(incident_id)
        if inc is None:
            return None
        names = await self.rest.names()
        return self.views.incident(inc, names.get(inc.service_id, inc.service_id),
                                   names.get(inc.escalation_policy_id, ""), names)

    async def alerts(self, incident_id: str) -> list[Obj]:
        """The incident's alerts, oldest first."""
        inc = await self.rest.service.require(incident_id)
        names = await self.rest.names()
        return [self.views.alert(a, names.get(inc.service_id, "")) for a in await self._store.alerts(incident_id)]

    async def timeline(self, incident_id: str) -> list[Obj]:
        """The one timeline (``at``, ``kind``: change/alert/log/note, ``text``) in time order."""
        inc = await self.rest.service.require(incident_id)
        items = await timeline(inc, self._store, self.rest.changes, await self.rest.names(),
                               now_ns=self.rest.service.clock())
        return [{"at": iso(it.ts_ns), "ts_ns": it.ts_ns, "kind": it.kind, "text": it.text} for it in items]

    async def postmortem(self, incident_id: str) -> str:
        """The Markdown draft ``pitwall incident postmortem`` prints."""
        inc = await self.rest.service.require(incident_id)
        return await postmortem(inc, self._store, self.rest.changes, await self.rest.names(),
                                now_ns=self.rest.service.clock(), slo_budgets=self.rest.slo_budgets)

    async def oncalls_now(self) -> list[Obj]:
        """Who is on call now, per escalation policy and level (``pitwall oncall``'s entries)."""
        now = self.rest.service.clock()
        return await oncall_entries(self.rest, now, now + 1)

    async def _user(self, user_id: str) -> User:
        user = await self._store.get(User, user_id)
        if user is None:
            raise InvalidInput(f"user {user_id!r} not found")
        return user

    async def acknowledge(self, incident_id: str, user_id: str) -> Obj:
        """Acknowledge as ``user_id`` (a no-op on a resolved incident, as in PagerDuty)."""
        user = await self._user(user_id)
        await self.rest.service.require(incident_id)
        await self.rest.service.acknowledge(incident_id, user.id)
        return await self._required(incident_id)

    async def resolve(self, incident_id: str, user_id: str) -> Obj:
        """Resolve as ``user_id``."""
        user = await self._user(user_id)
        await self.rest.service.require(incident_id)
        await self.rest.service.resolve(incident_id, user.id)
        return await self._required(incident_id)

    async def add_note(self, incident_id: str, user_id: str, content: str) -> Obj:
        """Add a note by ``user_id``; ``InvalidInput`` when empty or too long."""
        user = await self._user(user_id)
        await self.rest.service.require(incident_id)
        note = await add_note(self.rest, incident_id, user.id, content)
        return self.views.note(note, await self.rest.names())

    async def _required(self, incident_id: str) -> Obj:
        inc = await self.incident(incident_id)
        if inc is None:
            raise NotFoundError(f"Incident {incident_id} not found")
        return inc
