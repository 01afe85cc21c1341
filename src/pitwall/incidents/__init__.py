"""Incidents, on-call and the change-event stream every capability reports to.

PagerDuty's Events API v2 and REST API v2 on pitwall's port, schedules and
escalation policies computed as PagerDuty computes them, and one timeline per
incident that includes every change event (``ChangeLog``) around it. Other
pillars use ``ChangeLog``/``ChangeSink`` to report their changes.
"""

from pitwall.incidents.changes import CHANGE_KINDS, ChangeEvent, ChangeKind, ChangeLog, ChangeSink
from pitwall.incidents.desk import IncidentDesk
from pitwall.incidents.service import IncidentService, Page, Pager

__all__ = ["CHANGE_KINDS", "ChangeEvent", "ChangeKind", "ChangeLog", "ChangeSink", "IncidentDesk", "IncidentService", "Page", "Pager"]
