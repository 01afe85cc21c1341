"""Alert grouping per service, as PagerDuty's ``alert_grouping_parameters`` on the Service object.

- ``type: null`` (the default): every alert with a new dedup key opens its own incident.
- ``time``: alerts join the service's newest open incident for ``config.timeout`` minutes after
  that incident was created (``0``: until it is resolved).
- ``content_based``: alerts join the newest open incident whose first alert has the same values of
  ``config.fields`` (``aggregate: all``: every field equal; ``any``: at least one), while the new alert
  arrives within ``config.time_window`` seconds of the incident's latest alert (a rolling window,
  extended by each grouped alert, for at most 24 hours after the incident was created).
- ``intelligent``: PagerDuty's machine-learning model is not reproduced. pitwall groups an alert
  into the newest open incident holding an alert whose summary is similar (Jaccard similarity of the
  summaries' word sets, numbers and hex ids masked, at least ``SIMILARITY``), under the same rolling
  ``time_window`` as content-based grouping.

Only incidents that are still open absorb alerts; a resolved incident never does. Grouping needs
``alert_creation: create_alerts_and_incidents`` (a ``create_incidents`` service has no alerts).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["CONTENT_FIELDS", "MAX_GROUP_NS", "SIMILARITY", "AlertGrouping", "GroupingConfig", "field_value",
           "matches", "similar", "valid_field", "window_ns"]

_S_NS = 1_000_000_000
MAX_GROUP_NS = 86_400 * _S_NS  # a rolling window is extended for at most 24 hours
RECOMMENDED_WINDOW_S = 300  # what ``time_window: 0`` (PagerDuty's "recommended" window) means here
SIMILARITY = 0.5
# The alert fields content-based grouping may compare (custom_details.<path> besides these).
CONTENT_FIELDS = ("summary", "source", "severity", "component", "group", "class")
_MASK = re.compile(r"\b(?:0x)?[0-9a-f]*\d[0-9a-f]*\b")
_WORD = re.compile(r"[a-z0-9_#.\-]+")


class GroupingConfig(BaseModel):
    """``alert_grouping_parameters.config``; which fields apply depends on the grouping type."""

    model_config = ConfigDict(extra="forbid")

    timeout: int | None = Field(None, description="time: minutes to group for; 0 until the incident resolves")
    aggregate: Literal["all", "any"] | None = None
    fields: list[str] | None = Field(None, max_length=20)
    time_window: int | None = Field(None, description="content_based/intelligent: seconds, 0 or 300..86400")
    recommended_time_window: int | None = None  # read-only in PagerDuty; accepted back and ignored
    iag_fields: list[str] | None = None  # PagerDuty's intelligent fields: accepted, not used


class AlertGrouping(BaseModel):
    """``alert_grouping_parameters``: ``{"type": "time"|"intelligent"|"content_based"|null, "config": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["time", "intelligent", "content_based"] | None = None
    config: GroupingConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> AlertGrouping:
        c = self.config or GroupingConfig()
        if self.type == "time" and c.timeout is not None and not 0 <= c.timeout <= 1440:
            raise ValueError("config.timeout must be between 0 and 1440 minutes (0: until resolved)")
        if self.type == "content_based":
            if c.aggregate is None:
                raise ValueError("config.aggregate is required for content_based grouping: 'all' or 'any'")
            if not c.fields:
                raise ValueError("config.fields must name at least one field for content_based grouping")
            for f in c.fields:
                if not valid_field(f):
                    raise ValueError(f"config.fields: {f[:64]!r} is not an alert field (one of "
                                     f"{', '.join(CONTENT_FIELDS)} or custom_details.<name>)")
        if self.type in ("content_based", "intelligent") and c.time_window not in (None, 0):
            assert c.time_window is not None
            if not 300 <= c.time_window <= 86_400:
                raise ValueError("config.time_window must be 0 (recommended) or between 300 and 86400 seconds")
        return self

    def render(self) -> dict[str, Any]:
        """PagerDuty's JSON shape (the config keys that apply to the type, with their effective values)."""
        if self.type is None:
            return {"type": None, "config": None}
        c = self.config or GroupingConfig()
        if self.type == "time":
            return {"type": "time", "config": {"timeout": c.timeout or 0}}
        cfg: dict[str, Any] = {"time_window": c.time_window or 0, "recommended_time_window": RECOMMENDED_WINDOW_S}
        if self.type == "content_based":
            cfg |= {"aggregate": c.aggregate, "fields": list(c.fields or [])}
        return {"type": self.type, "config": cfg}


def valid_field(name: str) -> bool:
    if name in CONTENT_FIELDS:
        return True
    head, _, rest = name.partition(".")
    return head == "custom_details" and bool(rest) and len(name) <= 256 and all(rest.split("."))


def window_ns(g: AlertGrouping) -> int:
    """The rolling window of content-based and intelligent grouping, in nanoseconds."""
    tw = (g.config.time_window if g.config else None) or RECOMMENDED_WINDOW_S
    return tw * _S_NS


def field_value(payload: dict[str, Any], name: str) -> str | None:
    """The value of an alert field (``summary``, ``custom_details.a.b``) as canonical JSON; None if absent."""
    if name in CONTENT_FIELDS:
        v = payload.get(name)
    else:
        v = payload.get("custom_details")
        for part in name.split(".")[1:]:
            v = v.get(part) if isinstance(v, dict) else None
    return None if v is None or v == "" else orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()


def matches(aggregate: str, fields: list[str], first: dict[str, Any], payload: dict[str, Any]) -> bool:
    """Content-based match of a new alert's ``payload`` against the payload of an incident's first alert;
    a field absent from either never matches."""
    hits = [(v := field_value(payload, f)) is not None and v == field_value(first, f) for f in fields]
    return all(hits) if aggregate == "all" else any(hits)


def _words(summary: str) -> set[str]:
    return set(_WORD.findall(_MASK.sub("#", summary.lower())))


def similar(a: str, b: str) -> bool:
    """Intelligent grouping's stand-in: the summaries' word sets overlap by at least ``SIMILARITY``."""
    wa, wb = _words(a), _words(b)
    if not wa or not wb:
        return False
    return len(wa & wb) / len(wa | wb) >= SIMILARITY
