"""Promotion gates beyond Flagger's: the service's SLO error budget and its open incidents.

A Canary annotated ``releases.pitwall.dev/slo-gate: NAME[,NAME]`` is promoted
only while each named SLO (the ``sloth_id`` the SLO API shows) has more than
``releases.pitwall.dev/min-budget-remaining`` of its error budget left
(default 0: not overspent); with ``releases.pitwall.dev/incident-gate:
SERVICE[,SERVICE]`` only while none of those PagerDuty services has an open
incident. A closed gate holds the Canary in WaitingPromotion, as an
unapproved ``confirm-promotion`` hook does: its metric checks go on, and a
threshold breach while it waits still rolls it back (flagger#1801).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pitwall.slo import SLONotFound, SLOStatusQuery

__all__ = ["INCIDENT_GATE", "MIN_BUDGET", "SLO_GATE", "Gates", "OpenIncidents"]

SLO_GATE = "releases.pitwall.dev/slo-gate"
MIN_BUDGET = "releases.pitwall.dev/min-budget-remaining"
INCIDENT_GATE = "releases.pitwall.dev/incident-gate"
# The open incidents ("#12") of a PagerDuty service named or with that id.
OpenIncidents = Callable[[str], Awaitable[list[str]]]


class Gates:
    """The SLO and incident queries the gates read; either may be absent (a gate naming it then stays closed)."""

    def __init__(self, slo_status: SLOStatusQuery | None = None, open_incidents: OpenIncidents | None = None) -> None:
        self.slo_status = slo_status
        self.open_incidents = open_incidents  # handed in once the incidents part exists (server.py)

    async def closed(self, annotations: dict[str, Any]) -> str | None:
        """Why promotion must wait (the first closed gate), or None when every gate is open."""
        for service in _names(annotations.get(INCIDENT_GATE)):
            if self.open_incidents is None:
                return f"incident gate on {service}, but this server has no incidents"
            open_ = await self.open_incidents(service)
            if open_:
                return f"incident {', '.join(open_[:5])} is open on service {service}"
        names = _names(annotations.get(SLO_GATE))
        if not names:
            return None
        try:
            floor = float(annotations.get(MIN_BUDGET) or 0.0)
        except ValueError:
            return f"{MIN_BUDGET} must be a number, not {annotations.get(MIN_BUDGET)!r}"
        for name in names:
            if self.slo_status is None:
                return f"SLO gate on {name}, but this server has no SLO status"
            try:
                st = await self.slo_status(name)
            except SLONotFound:
                return f"SLO gate on {name}, which does not exist"
            if st.budget_remaining is None:
                return f"SLO {name} has no error budget figure yet"
            if st.budget_remaining <= floor:
                return f"SLO {name} has {st.budget_remaining:.3g} of its error budget left, not above {floor:g}"
        return None


def _names(v: Any) -> list[str]:
    return [n.strip() for n in str(v or "").split(",") if n.strip()]
