"""Incidents, on-call and the change-event stream every capability reports to.

PagerDuty's Events API v2 and REST API v2 on pitwall's port, schedules and
escalation policies computed as PagerDuty computes them, and one timeline per
incident that includes every change event (``ChangeLog``) around it. Other
pillars use ``ChangeLog``/``ChangeSink`` to report their changes; ``AlertIntake``
takes pitwall's own alerts in process (``pitwall_incident_configs``).

Names load on first use (``pitwall.core.exports``), so ``pitwall.config`` can import the settings module cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitwall.core.exports import lazy_exports

if TYPE_CHECKING:
    from pitwall.incidents.changes import CHANGE_KINDS, ChangeEvent, ChangeKind, ChangeLog, ChangeSink
    from pitwall.incidents.desk import IncidentDesk
    from pitwall.incidents.intake import AlertIntake
    from pitwall.incidents.service import IncidentService, Page, Pager

_EXPORTS = {
    "AlertIntake": "pitwall.incidents.intake",
    "CHANGE_KINDS": "pitwall.incidents.changes",
    "ChangeEvent": "pitwall.incidents.changes",
    "ChangeKind": "pitwall.incidents.changes",
    "ChangeLog": "pitwall.incidents.changes",
    "ChangeSink": "pitwall.incidents.changes",
    "IncidentDesk": "pitwall.incidents.desk",
    "IncidentService": "pitwall.incidents.service",
    "Page": "pitwall.incidents.service",
    "Pager": "pitwall.incidents.service",
}

__all__ = ["CHANGE_KINDS", "AlertIntake", "ChangeEvent", "ChangeKind", "ChangeLog", "ChangeSink", "IncidentDesk",
           "IncidentService", "Page", "Pager"]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
