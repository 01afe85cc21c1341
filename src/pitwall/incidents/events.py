"""PagerDuty Events API v2: validating alert events and change events as PagerDuty does.

``parse_event`` and ``parse_change_event`` take the decoded JSON body and
return a normalised event, or raise ``InvalidEvent`` listing every problem
(PagerDuty's 400 ``{"status": "invalid event", "message": "Event object is
invalid", "errors": [...]}``), in PagerDuty's wording, typo included
("maiximum").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pitwall.incidents.errors import InvalidEvent, InvalidInput
from pitwall.incidents.oncall import parse_time

__all__ = ["ACTIONS", "MAX_DEDUP_KEY", "MAX_SUMMARY", "SEVERITIES", "AlertEvent", "ChangeEventIn",
           "parse_change_event", "parse_event"]

ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255
MAX_LINKS = 50
_ALNUM = re.compile(r"[A-Za-z0-9]*")


@dataclass(frozen=True)
class AlertEvent:
    routing_key: str
    action: str
    dedup_key: str
    payload: dict[str, Any] = field(default_factory=dict)
    client: str = ""
    client_url: str = ""
    links: list[dict[str, str]] = field(default_factory=list)
    images: list[dict[str, str]] = field(default_factory=list)
    # In process only (pitwall's own alerting, dedup per alert): a new alert joins the open incident under
    # this key (its notification group's) instead of opening one. The Events API never sets it.
    incident_key: str = ""


@dataclass(frozen=True)
class ChangeEventIn:
    routing_key: str
    summary: str
    source: str
    timestamp: str
    custom_details: Any
    links: list[dict[str, str]]


def _routing_key(body: dict[str, Any], errors: list[str]) -> str:
    key = body.get("routing_key")
    if not isinstance(key, str) or not key:
        errors.append("'routing_key' is missing or blank")
        return ""
    if len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    if not _ALNUM.fullmatch(key):
        errors.append("'routing_key' cannot contain non-alphanumeric characters.")
    return key


def _text(d: dict[str, Any], name: str, where: str, errors: list[str], *, required: bool = False) -> str:
    v = d.get(name)
    if v is None or v == "":
        if required:
            errors.append(f"'{where}{name}' is missing or blank")
        return ""
    if not isinstance(v, str):
        errors.append(f"'{where}{name}' must be a string")
        return ""
    return v


def _refs(body: dict[str, Any], name: str, keys: tuple[str, ...], errors: list[str]) -> list[dict[str, str]]:
    v = body.get(name)
    if v is None:
        return []
    if not isinstance(v, list) or len(v) > MAX_LINKS or not all(isinstance(x, dict) for x in v):
        errors.append(f"'{name}' must be an array of at most {MAX_LINKS} objects")
        return []
    out = []
    for x in v:
        out.append({k: str(x[k]) for k in keys if isinstance(x.get(k), str | int | float)})
    return out


def _check_summary(summary: str, errors: list[str]) -> None:
    if len(summary) > MAX_SUMMARY:
        errors.append(f"'summary' is too long (maiximum is {MAX_SUMMARY} characters)")


def parse_event(body: Any, *, keyed: bool = True) -> AlertEvent:
    """An alert event (trigger, acknowledge, resolve), or ``InvalidEvent``; ``keyed=False``: the event names
    its service otherwise (in process) and carries no ``routing_key``."""
    if not isinstance(body, dict):
        raise InvalidEvent(["Event object must be a JSON object"])
    errors: list[str] = []
    key = _routing_key(body, errors) if keyed else ""
    action = body.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' is missing or blank" if not action else
                      "'event_action' is invalid (must be one of the following: 'trigger', 'acknowledge' or "
                      "'resolve')")
    dedup = _text(body, "dedup_key", "", errors, required=action in ("acknowledge", "resolve"))
    if len(dedup) > MAX_DEDUP_KEY:
        errors.append(f"'dedup_key' is too long (maximum is {MAX_DEDUP_KEY} characters)")
    payload: dict[str, Any] = {}
    if action == "trigger":
        p = body.get("payload")
        if not isinstance(p, dict):
            errors.append("'payload' is missing or blank" if p is None else "'payload' must be an object")
        else:
            payload = _payload(p, errors)
    links = _refs(body, "links", ("href", "text"), errors)
    images = _refs(body, "images", ("src", "href", "alt"), errors)
    client = _text(body, "client", "", errors)
    client_url = _text(body, "client_url", "", errors)
    if errors:
        raise InvalidEvent(errors)
    return AlertEvent(key, str(action), dedup, payload, client, client_url, links, images)


def _payload(p: dict[str, Any], errors: list[str]) -> dict[str, Any]:
    summary = _text(p, "summary", "payload.", errors, required=True)
    _check_summary(summary, errors)
    source = _text(p, "source", "payload.", errors, required=True)
    severity = _text(p, "severity", "payload.", errors, required=True)
    if severity and severity not in SEVERITIES:
        errors.append("'payload.severity' is invalid (must be one of the following: 'critical', 'warning', "
                      "'error' or 'info')")
    out: dict[str, Any] = {"summary": summary, "source": source, "severity": severity}
    for name in ("timestamp", "component", "group", "class"):
        out[name] = _text(p, name, "payload.", errors)
    if out["timestamp"]:
        try:
            parse_time(out["timestamp"])
        except InvalidInput:
            errors.append("'payload.timestamp' is invalid (must be an ISO 8601 timestamp)")
    out["custom_details"] = p.get("custom_details")
    return out


def parse_change_event(body: Any) -> ChangeEventIn:
    """A change event (``/v2/change/enqueue``), or ``InvalidEvent``."""
    if not isinstance(body, dict):
        raise InvalidEvent(["Event object must be a JSON object"])
    errors: list[str] = []
    key = _routing_key(body, errors)
    p = body.get("payload")
    summary = source = timestamp = ""
    details: Any = None
    if not isinstance(p, dict):
        errors.append("'payload' is missing or blank" if p is None else "'payload' must be an object")
    else:
        summary = _text(p, "summary", "payload.", errors, required=True)
        _check_summary(summary, errors)
        source = _text(p, "source", "payload.", errors)
        timestamp = _text(p, "timestamp", "payload.", errors)
        details = p.get("custom_details")
    links = _refs(body, "links", ("href", "text"), errors)
    if errors:
        raise InvalidEvent(errors)
    return ChangeEventIn(key, summary, source, timestamp, details, links)
