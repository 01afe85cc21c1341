"""Alertmanager time intervals: when a route is muted or active.

A named interval holds a list of ``TimeInterval`` specs; a time is inside the
named interval when any spec contains it. A spec contains a time when every
field it sets (times, weekdays, days_of_month, months, years) contains it,
evaluated in the spec's ``location`` (UTC by default), as Alertmanager's
``timeinterval`` package does.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["NamedTimeInterval", "TimeInterval", "TimeRange", "any_contains"]

_WEEKDAYS = {name: i for i, name in enumerate(
    ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"])}
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_HHMM = re.compile(r"^(\d{2}):(\d{2})$")


def _minutes(text: str) -> int:
    m = _HHMM.match(text)
    if m is None:
        raise ValueError(f"couldn't parse timestamp {text}, invalid format")
    h, mi = int(m.group(1)), int(m.group(2))
    if h > 24 or mi > 59 or (h == 24 and mi != 0):
        raise ValueError(f"timestamp {text} out of range")
    return h * 60 + mi


class TimeRange(BaseModel):
    """``start_time``/``end_time`` as ``HH:MM`` (end exclusive, ``24:00`` allowed)."""

    model_config = ConfigDict(extra="forbid")
    start_time: str
    end_time: str

    @model_validator(mode="after")
    def _order(self) -> TimeRange:
        if _minutes(self.start_time) >= _minutes(self.end_time):
            raise ValueError("start time cannot be equal or greater than end time")
        return self

    @property
    def minutes(self) -> tuple[int, int]:
        return _minutes(self.start_time), _minutes(self.end_time)


def _range(text: str, parse_one: Any) -> tuple[int, int]:
    first, sep, second = str(text).partition(":")
    lo = parse_one(first)
    hi = parse_one(second) if sep else lo
    return lo, hi


def _weekday(text: str) -> int:
    try:
        return _WEEKDAYS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text} is not a valid weekday") from None


def _month(text: str) -> int:
    t = text.strip().lower()
    if t in _MONTHS:
        return _MONTHS[t]
    if t.isdigit() and 1 <= int(t) <= 12:
        return int(t)
    raise ValueError(f"{text} is not a valid month")


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"invalid range {text}") from None


class TimeInterval(BaseModel):
    """One Alertmanager ``time_intervals`` entry."""

    model_config = ConfigDict(extra="forbid")
    times: list[TimeRange] | None = None
    weekdays: list[str] | None = None
    days_of_month: list[str] | None = None
    months: list[str] | None = None
    years: list[str] | None = None
    location: str | None = None

    @field_validator("weekdays")
    @classmethod
    def _check_weekdays(cls, v: list[str] | None) -> list[str] | None:
        for item in v or []:
            lo, hi = _range(item, _weekday)
            if lo > hi:
                raise ValueError("start day cannot be before end day")
        return v

    @field_validator("months")
    @classmethod
    def _check_months(cls, v: list[str] | None) -> list[str] | None:
        for item in v or []:
            lo, hi = _range(item, _month)
            if lo > hi:
                raise ValueError("end month is before start month")
        return v

    @field_validator("days_of_month")
    @classmethod
    def _check_days(cls, v: list[str] | None) -> list[str] | None:
        for item in v or []:
            lo, hi = _range(item, _int)
            for d in (lo, hi):
                if d == 0 or not -31 <= d <= 31:
                    raise ValueError(f"{d} is not a valid day of the month: out of range")
            if (lo > 0) == (hi > 0) and lo > hi:
                raise ValueError("start day must be before end day")
        return v

    @field_validator("years")
    @classmethod
    def _check_years(cls, v: list[str] | None) -> list[str] | None:
        for item in v or []:
            lo, hi = _range(item, _int)
            if lo > hi:
                raise ValueError("end year must be after start year")
        return v

    @field_validator("location")
    @classmethod
    def _check_location(cls, v: str | None) -> str | None:
        if v is not None and v not in ("UTC", "Local"):
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v}") from None
        return v

    def _zone(self) -> tzinfo:
        if self.location is None or self.location == "UTC":
            return UTC
        if self.location == "Local":
            tz = datetime.now().astimezone().tzinfo
            return tz if tz is not None else UTC
        return ZoneInfo(self.location)

    def contains(self, t: datetime) -> bool:
        """Whether ``t`` (timezone-aware) falls inside this spec."""
        t = t.astimezone(self._zone())
        if self.times is not None:
            minute = t.hour * 60 + t.minute
            if not any(lo <= minute < hi for lo, hi in (r.minutes for r in self.times)):
                return False
        if self.days_of_month is not None and not self._day_ok(t):
            return False
        if self.months is not None and not _in_ranges(t.month, self.months, _month):
            return False
        # Go's Weekday counts from Sunday = 0; Python's weekday() from Monday = 0.
        if self.weekdays is not None and not _in_ranges((t.weekday() + 1) % 7, self.weekdays, _weekday):
            return False
        return self.years is None or _in_ranges(t.year, self.years, _int)

    def _day_ok(self, t: datetime) -> bool:
        days = calendar.monthrange(t.year, t.month)[1]
        for item in self.days_of_month or []:
            lo, hi = _range(item, _int)
            begin = days + lo + 1 if lo < 0 else lo
            end = days + hi + 1 if hi < 0 else hi
            if begin > days:
                continue
            begin, end = max(-days, min(begin, days)), max(-days, min(end, days))
            if begin <= t.day <= end:
                return True
        return False


def _in_ranges(value: int, items: list[str], parse_one: Any) -> bool:
    for item in items:
        lo, hi = _range(item, parse_one)
        if lo <= value <= hi:
            return True
    return False


class NamedTimeInterval(BaseModel):
    """A top-level ``time_intervals`` (or legacy ``mute_time_intervals``) entry."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    time_intervals: list[TimeInterval] = Field(default_factory=list)

    def contains(self, t: datetime) -> bool:
        return any(ti.contains(t) for ti in self.time_intervals)


def any_contains(names: list[str], intervals: dict[str, NamedTimeInterval], t: datetime) -> list[str]:
    """The names among ``names`` whose interval contains ``t``."""
    return [n for n in names if n in intervals and intervals[n].contains(t)]
