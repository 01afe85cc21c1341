"""GitLab's human-readable durations (``timeout: 1h 30m``, ``start_in: 3 minutes``, ``expire_in: 1 week``)."""

from __future__ import annotations

import re

__all__ = ["parse_human_duration"]

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "wk": 604800, "week": 604800, "weeks": 604800,
    "mo": 2592000, "month": 2592000, "months": 2592000,
    "y": 31536000, "yr": 31536000, "year": 31536000, "years": 31536000,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*(?:and\s*|,\s*)?")


def parse_human_duration(text: str | int | float) -> float:
    """Seconds in ``text``: a number is seconds; else parts like ``1h``, ``30 minutes``, ``2 days 4 hours``.

    ``never`` (artifacts that never expire) is the caller's business. Raises ``ValueError``."""
    if isinstance(text, bool):
        raise ValueError(f"invalid duration: {text!r}")
    if isinstance(text, int | float):
        return float(text)
    s = text.strip().lower()
    if len(s) > 100 or not s:
        raise ValueError(f"invalid duration: {text!r}")
    total, pos = 0.0, 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"invalid duration: {text!r}")
        unit = m.group(2) or "s"
        if unit not in _UNITS:
            raise ValueError(f"invalid duration: {text!r} (unknown unit {unit!r})")
        total += float(m.group(1)) * _UNITS[unit]
        pos = m.end()
    return total
