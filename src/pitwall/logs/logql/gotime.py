"""Go's ``time.Time`` for LogQL templates: a value, ``Format`` and ``ParseInLocation``.

Contract: ``GoTime`` is nanoseconds since the epoch plus a fixed zone and prints
as Go's ``time.Time.String()``; ``go_format_time`` and ``go_parse_time`` accept
Go reference layouts (``2006-01-02T15:04:05.999999999Z07:00``); a value that does
not match its layout raises ``ValueError`` with Go's wording. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

__all__ = ["GoTime", "go_format_time", "go_parse_time"]


class GoTime:
    """A ``time.Time``: nanoseconds since the epoch plus a fixed zone."""

    __slots__ = ("ns", "tz")

    def __init__(self, ns: int, tz: timezone = UTC) -> None:
        self.ns = ns
        self.tz = tz

    def dt(self) -> datetime:
        return datetime.fromtimestamp(self.ns // 1_000_000_000, self.tz)

    def __str__(self) -> str:
        return go_format_time(self, "2006-01-02 15:04:05.999999999 -0700 MST")


_LAYOUT_TOKENS = [
    "January",
    "Monday",
    "2006",
    "-07:00:00",
    "-0700",
    "-07:00",
    "Z07:00",
    "Z0700",
    "-07",
    "Z07",
    "Jan",
    "Mon",
    "MST",
    "002",
    "__2",
    "_2",
    "15",
    "01",
    "02",
    "03",
    "04",
    "05",
    "06",
    "PM",
    "pm",
    "1",
    "2",
    "3",
    "4",
    "5",
]
_FRAC = re.compile(r"[.,](0+|9+)")


def _layout_tokens(layout: str) -> list[tuple[bool, str]]:
    out: list[tuple[bool, str]] = []
    i = 0
    while i < len(layout):
        m = _FRAC.match(layout, i)
        if m and (i + len(m.group(0)) == len(layout) or not layout[i + len(m.group(0))].isdigit()):
            out.append((True, m.group(0)))
            i = m.end()
            continue
        for tok in _LAYOUT_TOKENS:
            if layout.startswith(tok, i):
                out.append((True, tok))
                i += len(tok)
                break
        else:
            out.append((False, layout[i]))
            i += 1
    return out


def _zone_offset(dt: datetime, colon: bool, z: bool, seconds: bool = False, short: bool = False) -> str:
    off = dt.utcoffset() or timedelta(0)
    secs = int(off.total_seconds())
    if z and secs == 0:
        return "Z"
    sign = "-" if secs < 0 else "+"
    secs = abs(secs)
    hh, mm, ss = secs // 3600, secs % 3600 // 60, secs % 60
    if short:
        return f"{sign}{hh:02d}"
    sep = ":" if colon else ""
    out = f"{sign}{hh:02d}{sep}{mm:02d}"
    if seconds:
        out += f"{sep}{ss:02d}"
    return out


def go_format_time(t: GoTime, layout: str) -> str:
    """``time.Time.Format`` for Go reference layouts (``2006-01-02T15:04:05Z07:00``)."""
    dt = t.dt()
    nanos = t.ns % 1_000_000_000
    out: list[str] = []
    for is_tok, tok in _layout_tokens(layout):
        if not is_tok:
            out.append(tok)
            continue
        out.append(_format_token(tok, dt, nanos))
    return "".join(out)


def _format_token(tok: str, dt: datetime, nanos: int) -> str:
    simple: dict[str, Callable[[], str]] = {
        "January": lambda: dt.strftime("%B"),
        "Jan": lambda: dt.strftime("%b"),
        "Monday": lambda: dt.strftime("%A"),
        "Mon": lambda: dt.strftime("%a"),
        "2006": lambda: f"{dt.year:04d}",
        "06": lambda: f"{dt.year % 100:02d}",
        "01": lambda: f"{dt.month:02d}",
        "1": lambda: str(dt.month),
        "02": lambda: f"{dt.day:02d}",
        "2": lambda: str(dt.day),
        "_2": lambda: f"{dt.day:2d}",
        "002": lambda: f"{dt.timetuple().tm_yday:03d}",
        "__2": lambda: f"{dt.timetuple().tm_yday:3d}",
        "15": lambda: f"{dt.hour:02d}",
        "03": lambda: f"{(dt.hour % 12) or 12:02d}",
        "3": lambda: str((dt.hour % 12) or 12),
        "04": lambda: f"{dt.minute:02d}",
        "4": lambda: str(dt.minute),
        "05": lambda: f"{dt.second:02d}",
        "5": lambda: str(dt.second),
        "PM": lambda: "PM" if dt.hour >= 12 else "AM",
        "pm": lambda: "pm" if dt.hour >= 12 else "am",
        "MST": lambda: (dt.tzname() or "UTC") if dt.utcoffset() else "UTC",
        "-0700": lambda: _zone_offset(dt, False, False),
        "-07:00": lambda: _zone_offset(dt, True, False),
        "-07:00:00": lambda: _zone_offset(dt, True, False, seconds=True),
        "-07": lambda: _zone_offset(dt, False, False, short=True),
        "Z0700": lambda: _zone_offset(dt, False, True),
        "Z07:00": lambda: _zone_offset(dt, True, True),
        "Z07": lambda: _zone_offset(dt, False, True, short=True),
    }
    if tok in simple:
        return simple[tok]()
    # fractional seconds: .000 fixed width, .999 trailing zeros trimmed
    digits = len(tok) - 1
    frac = f"{nanos:09d}"[:digits]
    if tok[1] == "9":
        frac = frac.rstrip("0")
        return tok[0] + frac if frac else ""
    return tok[0] + frac


_PARSE_PATTERNS: dict[str, str] = {
    "January": r"(?P<month_name>[A-Za-z]+)",
    "Jan": r"(?P<month_abbr>[A-Za-z]{3})",
    "Monday": r"[A-Za-z]+",
    "Mon": r"[A-Za-z]{3}",
    "2006": r"(?P<year>\d{4})",
    "06": r"(?P<year2>\d{2})",
    "01": r"(?P<month>\d{2})",
    "1": r"(?P<month>\d{1,2})",
    "02": r"(?P<day>\d{2})",
    "2": r"(?P<day>\d{1,2})",
    "_2": r" ?(?P<day>\d{1,2})",
    "002": r"(?P<yday>\d{3})",
    "__2": r" {0,2}(?P<yday>\d{1,3})",
    "15": r"(?P<hour>\d{1,2})",
    "03": r"(?P<hour12>\d{2})",
    "3": r"(?P<hour12>\d{1,2})",
    "04": r"(?P<minute>\d{2})",
    "4": r"(?P<minute>\d{1,2})",
    "05": r"(?P<second>\d{2})",
    "5": r"(?P<second>\d{1,2})",
    "PM": r"(?P<ampm>AM|PM)",
    "pm": r"(?P<ampm>am|pm)",
    "MST": r"(?P<tzname>[A-Z]{3,4}|[+-]\d{2,4})",
    "-0700": r"(?P<tz>[+-]\d{4})",
    "-07:00": r"(?P<tz>[+-]\d{2}:\d{2})",
    "-07:00:00": r"(?P<tz>[+-]\d{2}:\d{2}:\d{2})",
    "-07": r"(?P<tz>[+-]\d{2})",
    "Z0700": r"(?P<tz>Z|[+-]\d{4})",
    "Z07:00": r"(?P<tz>Z|[+-]\d{2}:\d{2})",
    "Z07": r"(?P<tz>Z|[+-]\d{2})",
}


def go_parse_time(layout: str, value: str, default_tz: timezone = UTC) -> GoTime:
    """``time.ParseInLocation`` for the layouts ``go_format_time`` writes."""
    parts: list[str] = []
    for is_tok, tok in _layout_tokens(layout):
        if not is_tok:
            parts.append(re.escape(tok))
        elif tok in _PARSE_PATTERNS:
            parts.append(_PARSE_PATTERNS[tok])
        else:
            parts.append(r"(?:[.,](?P<frac>\d+))?" if tok[1] == "9" else r"[.,](?P<frac>\d+)")
    # Go also accepts fractional seconds right after seconds even when the layout has none.
    rx = "".join(parts).replace(r"(?P<second>\d{2})", r"(?P<second>\d{2})(?:[.,](?P<frac2>\d+))?", 1)
    m = re.fullmatch(rx, value)
    if m is None:
        raise ValueError(f'parsing time "{value}" as "{layout}": cannot parse')
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    year = int(g.get("year", 0)) if "year" in g else (2000 + int(g["year2"]) if "year2" in g else 0)
    if "month_name" in g or "month_abbr" in g:
        name = (g.get("month_name") or g.get("month_abbr") or "")[:3].title()
        month = datetime.strptime(name, "%b").month
    else:
        month = int(g.get("month", 1))
    day = int(g.get("day", 1))
    hour = int(g.get("hour", 0))
    if "hour12" in g:
        hour = int(g["hour12"]) % 12 + (12 if g.get("ampm", "").lower() == "pm" else 0)
    minute, second = int(g.get("minute", 0)), int(g.get("second", 0))
    frac = g.get("frac") or g.get("frac2") or ""
    nanos = int((frac + "000000000")[:9]) if frac else 0
    tz = default_tz
    if "tz" in g and g["tz"] != "Z":
        s = g["tz"].replace(":", "")
        sign = -1 if s[0] == "-" else 1
        hh, mm = int(s[1:3]), int(s[3:5] or 0) if len(s) >= 5 else 0
        tz = timezone(sign * timedelta(hours=hh, minutes=mm))
    elif "tz" in g:
        tz = UTC
    if year == 0:
        # Go's zero year is year 0; Python cannot hold it, and Loki users always give a year.
        year = 1
    dt = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    secs = int((dt - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    return GoTime(secs * 1_000_000_000 + nanos, tz)

