"""pitwall's own alerting into incidents, in process: what ``pitwall_incident_configs`` sends to.

``AlertIntake`` is handed to the notification pipeline by the composition root
(the alerting pillar names only its ``IncidentIntake`` Protocol). A service is
named by id, integration key or name; an event is the Events API v2 body
without ``routing_key``, validated by the same ``parse_event`` as
``/v2/enqueue`` and applied by the same ``IncidentService.apply_event``, so
dedup, grouping, escalation and the "resolved incidents absorb nothing" rule
are the Events API's. There is no rate limit and no token: nothing crosses the
network. Errors are ``core`` kinds: ``NotFound`` (no such service) and
``BadData`` (an event PagerDuty would refuse) will fail again; a lost
compare-and-swap race is ``Unavailable`` (worth retrying).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pitwall.core.errors import Unavailable
from pitwall.incidents.errors import Conflict, InvalidEvent, NotFoundError
from pitwall.incidents.events import parse_event
from pitwall.incidents.model import Service
from pitwall.incidents.service import IncidentService

__all__ = ["AlertIntake"]


class AlertIntake:
    """Alert events from pitwall's notification pipeline, by service reference instead of routing key."""

    def __init__(self, service: IncidentService) -> None:
        self.service = service

    async def find(self, ref: str) -> Service:
        """The service with id, integration key or name ``ref`` (tried in that order)."""
        store = self.service.store
        svc = await store.get(Service, ref) or await store.service_for_key(ref)
        if svc is None:
            svc = next((s for s in await store.list_all(Service) if s.name == ref), None)
        if svc is None:
            raise NotFoundError(f"no incidents service with id, integration key or name {ref!r}")
        return svc

    async def alert_dedup(self, service: str) -> str:
        return (await self.find(service)).alert_dedup

    async def enqueue(self, service: str, events: Sequence[Mapping[str, Any]], incident_key: str = "") -> None:
        """Validate every event first (one invalid event refuses them all), then apply them in order."""
        svc = await self.find(service)
        parsed = []
        for event in events:
            try:
                ev = parse_event(dict(event), keyed=False)
            except InvalidEvent as e:  # the pipeline logs this message: name every problem, as the 400 body does
                raise InvalidEvent(e.errors, f"{e.message}: {'; '.join(e.errors)}") from None
            parsed.append(replace(ev, incident_key=incident_key) if incident_key else ev)
        try:
            for ev in parsed:
                await self.service.apply_event(svc, ev)
        except Conflict as e:
            raise Unavailable(e.message) from e
