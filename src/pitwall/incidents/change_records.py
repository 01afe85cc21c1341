"""ITSM change records derived from the one change stream: each ``ChangeEvent`` as standard, normal or emergency.

Nothing is stored twice: the type and the incident links are computed when an
event is served (``/pagerduty/change_events``, a service's and an incident's
related change events), from the event and the incidents as stored. The rule,
first match wins:

1. **emergency**: the change is a rollback (``kind: rollback``), a halt or
   abort (``details.action`` in halt/abort/rollback, or a canary whose
   ``details.phase`` is ``Failed``: Flagger rolls it back), or it was made while
   an incident on the same service was open (triggered or acknowledged at the
   change's time). The open incidents are listed in ``incidents``.
2. **standard**: made by automation: ``who`` is empty, ``pitwall``, the
   event's own ``source``, a ``system:`` identity or a ``*-controller``
   (a Deployment rollout by the deployment controller, a scheduled backup, a
   canary step).
3. **normal**: everything else: a person's or a token's change through
   kubectl, the Kubernetes/Consul/REST APIs or the configuration.

A change's service (``namespace/name`` or a PagerDuty service name) is the
same service as an incident's when it equals, or its name part equals, the
incident's PagerDuty service name or the service its alerts name
(``signal_service``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pitwall.incidents.changes import ChangeEvent
from pitwall.incidents.model import Incident

__all__ = ["ChangeRecord", "ChangeType", "change_record", "change_records", "same_service"]

ChangeType = Literal["standard", "normal", "emergency"]
_HALTS = frozenset({"halt", "abort", "rollback"})
_AUTOMATION = frozenset({"", "pitwall"})


@dataclass(frozen=True)
class ChangeRecord:
    """The ITSM view of one change event: its type, why, and the incidents open on its service then."""

    type: ChangeType
    reason: str
    incidents: list[str] = field(default_factory=list)


def _automated(ev: ChangeEvent) -> bool:
    who = ev.who.strip()
    return (who in _AUTOMATION or who == ev.source or who.startswith("system:")
            or who.endswith("-controller"))


def _halt(ev: ChangeEvent) -> str:
    """Why the change is a rollback or halt, or ``""``."""
    if ev.kind == "rollback":
        return "a rollback"
    details = ev.details if isinstance(ev.details, dict) else {}
    action = str(details.get("action") or "").lower()
    if action in _HALTS:
        return f"a {action}"
    if ev.kind == "release" and details.get("phase") == "Failed":
        return "a failed canary rolled back"
    return ""


def same_service(change_service: str, names: Iterable[str]) -> bool:
    """Whether a change on ``change_service`` is on the service known by any of ``names``."""
    if not change_service:
        return False
    short = change_service.rsplit("/", 1)[-1]
    return any(n and (n in (change_service, short) or n.rsplit("/", 1)[-1] == change_service) for n in names)


def _open_at(inc: Incident, ts_ns: int) -> bool:
    return inc.created_ns <= ts_ns and (inc.status != "resolved" or ts_ns < inc.resolved_ns)


def change_record(ev: ChangeEvent, incidents: Iterable[Incident], service_names: Mapping[str, str]) -> ChangeRecord:
    """Classify ``ev``; ``incidents`` are candidates to link, ``service_names`` maps PagerDuty service ids to names."""
    linked = [i.id for i in incidents if _open_at(i, ev.ts_ns)
              and same_service(ev.service, (service_names.get(i.service_id, ""), i.signal_service))]
    halt = _halt(ev)
    if halt:
        return ChangeRecord("emergency", halt, linked)
    if linked:
        return ChangeRecord("emergency", f"made while incident(s) {', '.join(linked)} were open on the service",
                            linked)
    if _automated(ev):
        return ChangeRecord("standard", f"routine automated change by {ev.who or ev.source}")
    return ChangeRecord("normal", f"a change by {ev.who}")


def change_records(events: Iterable[ChangeEvent], incidents: list[Incident],
                   service_names: Mapping[str, str]) -> dict[str, ChangeRecord]:
    """Records of ``events`` by event id (the incidents list is scanned once per event)."""
    return {ev.id: change_record(ev, incidents, service_names) for ev in events}
