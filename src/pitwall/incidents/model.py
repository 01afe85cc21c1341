"""The records of incident management, as stored (JSON values in the revisioned store).

Each model mirrors the PagerDuty REST API v2 object of the same name closely
enough that ``views`` renders it in PagerDuty's shape without losing a field;
times are Unix nanoseconds (UTC) inside pitwall and ISO 8601 on the wire.
Configuration (``incidents:`` in pitwall.yaml) and the REST API write the
same models, so both are validated alike.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pitwall.incidents.grouping import AlertGrouping

__all__ = [
    "INCIDENT_STATUSES",
    "URGENCIES",
    "Alert",
    "ContactMethod",
    "EscalationPolicy",
    "EscalationRule",
    "EscalationTarget",
    "ExternalReference",
    "Incident",
    "LogEntry",
    "Note",
    "Outbox",
    "Override",
    "Restriction",
    "Schedule",
    "ScheduleLayer",
    "Service",
    "User",
    "derived_id",
]

INCIDENT_STATUSES = ("triggered", "acknowledged", "resolved")
URGENCIES = ("high", "low")
IncidentStatus = Literal["triggered", "acknowledged", "resolved"]
Urgency = Literal["high", "low"]
_KEY_RE = re.compile(r"[A-Za-z0-9]{32}")
_TIME_OF_DAY = re.compile(r"([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?")


def derived_id(kind: str, name: str) -> str:
    """A stable PagerDuty-looking id (``P`` + 6 characters) for an object configured by name only."""
    return "P" + hashlib.sha256(f"{kind}\0{name}".encode()).hexdigest()[:6].upper()


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ContactMethod(_Record):
    """Where a user is reached: ``email`` (SMTP), ``slack`` (incoming webhook URL) or ``webhook`` (URL)."""

    id: str = ""
    type: Literal["email", "slack", "webhook"] = "email"
    address: str = Field(min_length=1, max_length=2048)
    label: str = ""


class User(_Record):
    id: str = ""
    name: str = Field(min_length=1, max_length=256)
    email: str = Field(min_length=3, max_length=256)
    time_zone: str = "Etc/UTC"
    role: str = "user"
    contact_methods: list[ContactMethod] = Field(default_factory=list, max_length=32)
    # Urgency -> contact method ids notified (PagerDuty's notification rules, immediate ones only); empty: all.
    notification_rules: dict[Urgency, list[str]] = Field(default_factory=dict)

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _time_zone(v)

    @model_validator(mode="after")
    def _ids(self) -> User:
        self.id = self.id or derived_id("user", self.email)
        for i, cm in enumerate(self.contact_methods):
            cm.id = cm.id or f"{self.id}C{i}"
        return self


class Service(_Record):
    id: str = ""
    name: str = Field(min_length=1, max_length=256)
    description: str = ""
    escalation_policy: str = Field("", description="escalation policy id or name")
    integration_keys: list[str] = Field(default_factory=list, max_length=32)
    acknowledgement_timeout: int | None = Field(1800, ge=0, description="seconds; null: never re-trigger")
    auto_resolve_timeout: int | None = Field(14400, ge=0, description="seconds; null: never auto-resolve")
    # PagerDuty's incident_urgency_rule: constant high or low, or severity_based (critical/error: high).
    urgency: Literal["high", "low", "severity_based"] = "high"
    status: Literal["active", "disabled"] = Field("active", description="disabled services drop events")
    # create_incidents: events open incidents without alert records (so nothing can be grouped).
    alert_creation: Literal["create_alerts_and_incidents", "create_incidents"] = "create_alerts_and_incidents"
    alert_grouping_parameters: AlertGrouping = Field(default_factory=AlertGrouping)
    # pitwall's extension: how pitwall's own alerting (pitwall_incident_configs) deduplicates for this service:
    # "group", one alert per Alertmanager notification group (as pagerduty_configs), or "alert", one per alert.
    alert_dedup: Literal["group", "alert"] = "group"

    @field_validator("integration_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for k in v:
            if not _KEY_RE.fullmatch(k):
                raise ValueError(f"integration key {k[:6]}...: must be 32 letters or digits (a routing key)")
        return v

    @model_validator(mode="after")
    def _id(self) -> Service:
        self.id = self.id or derived_id("service", self.name)
        if self.alert_creation == "create_incidents" and self.alert_grouping_parameters.type is not None:
            raise ValueError("alert_grouping_parameters: alert grouping requires alert_creation "
                             "create_alerts_and_incidents")
        if self.alert_creation == "create_incidents" and self.alert_dedup == "alert":
            raise ValueError("alert_dedup: dedup per alert requires alert_creation create_alerts_and_incidents")
        return self


class EscalationTarget(_Record):
    type: Literal["user_reference", "schedule_reference", "user", "schedule"]
    id: str = Field(min_length=1)

    @property
    def kind(self) -> Literal["user", "schedule"]:
        return "user" if self.type.startswith("user") else "schedule"


class EscalationRule(_Record):
    id: str = ""
    escalation_delay_in_minutes: int = Field(30, ge=1, le=60 * 24 * 7)
    targets: list[EscalationTarget] = Field(min_length=1, max_length=10)


class EscalationPolicy(_Record):
    id: str = ""
    name: str = Field(min_length=1, max_length=256)
    description: str = ""
    num_loops: int = Field(0, ge=0, le=9)
    escalation_rules: list[EscalationRule] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _ids(self) -> EscalationPolicy:
        self.id = self.id or derived_id("escalation_policy", self.name)
        for i, r in enumerate(self.escalation_rules):
            r.id = r.id or f"{self.id}R{i}"
        return self


class Restriction(_Record):
    """When a layer is on call: every day, or once a week, from a local time for ``duration_seconds``."""

    type: Literal["daily_restriction", "weekly_restriction"]
    start_time_of_day: str
    duration_seconds: int = Field(gt=0)
    start_day_of_week: int | None = Field(None, ge=1, le=7, description="ISO day, 1 = Monday (weekly only)")

    @field_validator("start_time_of_day")
    @classmethod
    def _tod(cls, v: str) -> str:
        if not _TIME_OF_DAY.fullmatch(v):
            raise ValueError(f"start_time_of_day: expected HH:MM:SS, got {v!r}")
        return v if len(v) == 8 else v + ":00"

    @model_validator(mode="after")
    def _fits(self) -> Restriction:
        if self.type == "daily_restriction" and self.duration_seconds > 86_400:
            raise ValueError("a daily restriction lasts at most 86400 seconds")
        if self.type == "weekly_restriction":
            if self.start_day_of_week is None:
                raise ValueError("a weekly restriction needs start_day_of_week")
            if self.duration_seconds > 7 * 86_400:
                raise ValueError("a weekly restriction lasts at most 604800 seconds")
        return self

    @property
    def start_seconds(self) -> int:
        h, m, s = (int(x) for x in self.start_time_of_day.split(":"))
        return h * 3600 + m * 60 + s


class ScheduleLayer(_Record):
    id: str = ""
    name: str = ""
    start: str = Field(description="ISO 8601 time the layer takes effect")
    end: str | None = None
    rotation_virtual_start: str
    rotation_turn_length_seconds: int = Field(gt=0, le=365 * 86_400)
    users: list[str] = Field(min_length=1, max_length=200, description="user ids in rotation order")
    restrictions: list[Restriction] = Field(default_factory=list, max_length=50)

    @field_validator("users", mode="before")
    @classmethod
    def _user_refs(cls, v: Any) -> Any:
        # PagerDuty's shape: [{"user": {"id": ..., "type": "user_reference"}}]; ours: ["PUSER1"].
        if isinstance(v, list):
            return [u["user"]["id"] if isinstance(u, dict) and isinstance(u.get("user"), dict) else u for u in v]
        return v


class Schedule(_Record):
    id: str = ""
    name: str = Field(min_length=1, max_length=256)
    description: str = ""
    time_zone: str = "Etc/UTC"
    schedule_layers: list[ScheduleLayer] = Field(min_length=1, max_length=20)

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _time_zone(v)

    @model_validator(mode="after")
    def _ids(self) -> Schedule:
        self.id = self.id or derived_id("schedule", self.name)
        for i, layer in enumerate(self.schedule_layers):
            layer.id = layer.id or f"{self.id}L{i}"
            layer.name = layer.name or f"Layer {i + 1}"
        return self


class Override(_Record):
    id: str = ""
    start_ns: int
    end_ns: int
    user: str
    created_ns: int = 0  # the newest of overlapping overrides wins

    @model_validator(mode="after")
    def _order(self) -> Override:
        if self.end_ns <= self.start_ns:
            raise ValueError("an override must end after it starts")
        return self


class Alert(_Record):
    id: str
    incident_id: str
    service_id: str
    dedup_key: str
    status: Literal["triggered", "resolved"] = "triggered"
    created_ns: int
    resolved_ns: int = 0
    summary: str
    severity: str
    source: str = ""
    component: str = ""
    group: str = ""
    class_: str = Field("", alias="class")
    custom_details: Any = None
    timestamp: str = ""
    client: str = ""
    client_url: str = ""
    links: list[dict[str, str]] = Field(default_factory=list)
    images: list[dict[str, str]] = Field(default_factory=list)


class Note(_Record):
    id: str
    created_ns: int
    user_id: str = ""
    content: str


class LogEntry(_Record):
    """One line of an incident's timeline, in PagerDuty's log entry types (``trigger_log_entry``, ...)."""

    id: str
    type: str
    created_ns: int
    summary: str
    agent: str = ""  # user id, or "service:<id>" for events
    channel: str = "api"
    assignees: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


class Outbox(_Record):
    """A notification decided in the same write as the incident change that caused it, sent afterwards."""

    key: str  # unique per (incident, user, reason): the notification log entry it claims
    user_id: str
    reason: str


class ExternalReference(_Record):
    """The incident's ticket in an ITSM system (kept on the incident so a retry never opens a second one).

    ``external_id`` is what people quote (Jira's issue key, ServiceNow's number), ``ticket_id`` what the
    API addresses (Jira's issue id, ServiceNow's ``sys_id``); ``synced`` is the incident status last
    applied to the ticket.
    """

    system: Literal["jira", "servicenow"]
    external_id: str
    ticket_id: str
    external_url: str = ""
    synced: IncidentStatus = "triggered"
    created_ns: int = 0


class Incident(_Record):
    id: str
    number: int
    title: str
    service_id: str
    escalation_policy_id: str = ""
    status: IncidentStatus = "triggered"
    urgency: Urgency = "high"
    incident_key: str
    created_ns: int
    updated_ns: int
    last_status_change_ns: int
    resolved_ns: int = 0
    assignments: list[dict[str, Any]] = Field(default_factory=list)  # {"user": id, "at": ns}
    acknowledgements: list[dict[str, Any]] = Field(default_factory=list)  # {"user": id or "", "at": ns}
    escalation_level: int = 1  # 1-based, as PagerDuty reports it
    loops_done: int = 0
    next_escalation_ns: int = 0  # 0: no further escalation scheduled
    ack_until_ns: int = 0  # acknowledgement timeout: re-trigger at this time
    resolve_at_ns: int = 0  # auto-resolve timeout
    alert_counts: dict[str, int] = Field(default_factory=lambda: {"all": 0, "triggered": 0, "resolved": 0})
    notify_seq: int = 0
    outbox: list[Outbox] = Field(default_factory=list)
    last_alert_severity: str = ""
    last_alert_ns: int = 0  # the latest alert grouped in: content-based grouping's rolling window
    signal_service: str = ""  # the service the first alert's payload names: links to its signals
    external_references: list[ExternalReference] = Field(default_factory=list)  # ITSM tickets
    itsm_pending: list[str] = Field(default_factory=list)  # systems sent a create whose outcome is unknown

    def reference(self, system: str) -> ExternalReference | None:
        """The ticket in ``system`` (``jira``, ``servicenow``), if one is known."""
        return next((r for r in self.external_references if r.system == system), None)


def _time_zone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (an IANA name such as Europe/Berlin)") from None
    return v
