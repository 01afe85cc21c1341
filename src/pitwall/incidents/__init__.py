"""Incidents, on-call and the change-event stream every capability reports to."""

from pitwall.incidents.changes import CHANGE_KINDS, ChangeEvent, ChangeKind, ChangeLog, ChangeSink

__all__ = ["CHANGE_KINDS", "ChangeEvent", "ChangeKind", "ChangeLog", "ChangeSink"]
