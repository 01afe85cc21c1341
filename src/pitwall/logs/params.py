"""Loki's HTTP parameter rules: timestamps, durations, limits, direction, with Loki's messages."""

from __future__ import annotations

import math
import time
from datetime import datetime

from pitwall.core.durations import parse_duration_ms
from pitwall.core.errors import BadData
from pitwall.logs.model import Direction

NS = 1_000_000_000
DEFAULT_SINCE_NS = 3600 * NS
DEFAULT_LIMIT = 100
MAX_QUERY_TIME_NS = 1 << 62  # as core.params.MAX_QUERY_TIME_MS


def parse_timestamp_ns(text: str) -> int:
    """Loki's timestamp: unix ns (or seconds when 10 digits or fewer), float seconds, or RFC 3339.

    Clamped to 2^62 ns either side of 1970, as ``core.params.parse_time_ms``: no int64 overflow downstream.
    """
    return _clamp_ns(_parse_timestamp_ns(text))


def _clamp_ns(ns: int) -> int:
    return max(-MAX_QUERY_TIME_NS, min(MAX_QUERY_TIME_NS, ns))


def _parse_timestamp_ns(text: str) -> int:
    v = text.strip()
    if "." in v and not any(c in v for c in "T:"):
        try:
            f = float(v)
        except ValueError:
            pass
        else:
            if math.isnan(f) or math.isinf(f):
                raise BadData(f"invalid timestamp {text!r}")
            secs = math.floor(f)
            return secs * NS + round((f - secs) * 1000) * 1_000_000
    if not (v.lstrip("-").isascii() and v.lstrip("-").isdigit()):  # isdigit alone passes "²"
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise BadData(f'cannot parse "{text}" to a valid timestamp') from None
        if dt.tzinfo is None:
            raise BadData(f'cannot parse "{text}" to a valid timestamp')
        return int(dt.timestamp()) * NS + dt.microsecond * 1000
    n = int(v)
    if len(v.lstrip("-")) <= 10:
        return n * NS
    return n


def parse_duration_ns(text: str, name: str = "step") -> int:
    """A Loki duration parameter: a duration string (``60s``, ``1500ms``) or float seconds."""
    v = text.strip()
    try:
        f = float(v)
    except ValueError:
        try:
            return parse_duration_ms(v) * 1_000_000
        except ValueError:
            raise BadData(f'invalid {name}: cannot parse "{text}" to a valid duration') from None
    if math.isnan(f) or math.isinf(f):
        raise BadData(f'invalid {name}: cannot parse "{text}" to a valid duration')
    return round(f * NS)


def parse_limit(text: str | None, default: int = DEFAULT_LIMIT) -> int:
    if text is None or text == "":
        return default
    try:
        n = int(text)
    except ValueError:
        raise BadData(f'invalid limit: strconv.ParseUint: parsing "{text}": invalid syntax') from None
    if n <= 0:
        raise BadData("limit must be a positive value")
    return n


def parse_direction(text: str | None) -> Direction:
    if not text:
        return Direction.BACKWARD
    try:
        return Direction(text.lower())
    except ValueError:
        raise BadData(f"invalid direction '{text}'") from None


def bounds(start: str | None, end: str | None, since: str | None = None) -> tuple[int, int]:
    """[start, end] in ns with Loki's defaults: end now, start end minus ``since`` (1h)."""
    end_ns = parse_timestamp_ns(end) if end else time.time_ns()
    if start:
        start_ns = parse_timestamp_ns(start)
    else:
        start_ns = _clamp_ns(end_ns - (parse_duration_ns(since, "since") if since else DEFAULT_SINCE_NS))
    if end_ns < start_ns:
        raise BadData("end timestamp must not be before or equal to start time")
    return start_ns, end_ns


def default_step_ns(start_ns: int, end_ns: int) -> int:
    """Loki's default range step: (end - start) / 250, whole seconds, at least 1s."""
    return max(math.floor((end_ns - start_ns) / NS / 250), 1) * NS
