"""The time range shared by every page: ``from``/``to`` (relative or absolute) and ``refresh``.

``from``/``to`` accept ``now``, ``now-15m`` (any duration Prometheus accepts),
unix seconds or milliseconds, or RFC 3339. The raw strings stay in the URL so a
link keeps meaning "the last hour" when it is shared; ``start_ms``/``end_ms``
are what they resolve to at request time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from pitwall.core.durations import parse_duration_ms
from pitwall.core.errors import BadData

__all__ = ["QUICK_RANGES", "REFRESH_CHOICES", "TimeRange", "parse_time", "pick_step_ms"]

QUICK_RANGES = ["5m", "15m", "1h", "3h", "6h", "12h", "24h", "2d", "7d"]
REFRESH_CHOICES = ["off", "5s", "10s", "30s", "1m", "5m"]
MAX_RANGE_MS = 90 * 86_400_000


def parse_time(raw: str, now_ms: int) -> int:
    """One end of a range, in unix milliseconds."""
    text = raw.strip()
    if text == "now":
        return now_ms
    if text.startswith("now-") or text.startswith("now+"):
        try:
            d = parse_duration_ms(text[4:])
        except ValueError:
            raise BadData(f"invalid time {raw[:64]!r}: expected now-<duration>, e.g. now-1h") from None
        return now_ms - d if text[3] == "-" else now_ms + d
    try:
        f = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(f) or math.isinf(f):
            raise BadData(f"invalid time {raw[:64]!r}")
        # 13+ digits are milliseconds (the URLs the UI writes), fewer are seconds.
        return int(f) if abs(f) >= 1e12 else round(f * 1000)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadData(f"invalid time {raw[:64]!r}: expected now, now-1h, unix seconds or RFC 3339") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


@dataclass(frozen=True)
class TimeRange:
    raw_from: str
    raw_to: str
    refresh: str
    start_ms: int
    end_ms: int

    @classmethod
    def parse(cls, raw_from: str | None, raw_to: str | None, refresh: str | None, default: str = "1h",
              now_ms: int | None = None) -> TimeRange:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        f = (raw_from or "").strip() or f"now-{default}"
        t = (raw_to or "").strip() or "now"
        r = (refresh or "").strip() or "off"
        if r not in REFRESH_CHOICES:
            raise BadData(f"invalid refresh {r[:16]!r}: one of {', '.join(REFRESH_CHOICES)}")
        start, end = parse_time(f, now), parse_time(t, now)
        if end <= start:
            raise BadData("the time range is empty: 'to' must be after 'from'")
        if end - start > MAX_RANGE_MS:
            raise BadData("the time range is longer than 90 days")
        return cls(f, t, r, start, end)

    @property
    def span_ms(self) -> int:
        return self.end_ms - self.start_ms

    @property
    def relative(self) -> bool:
        return self.raw_to == "now" and self.raw_from.startswith("now-")

    @property
    def label(self) -> str:
        if self.relative:
            return f"Last {self.raw_from[4:]}"
        return f"{_iso(self.start_ms)} → {_iso(self.end_ms)}"

    @property
    def refresh_ms(self) -> int:
        return 0 if self.refresh == "off" else parse_duration_ms(self.refresh)

    def params(self) -> dict[str, str]:
        p = {"from": self.raw_from, "to": self.raw_to}
        if self.refresh != "off":
            p["refresh"] = self.refresh
        return p

    def qs(self, **extra: str) -> str:
        """The query string of this range plus ``extra`` (empty values left out)."""
        items = {**self.params(), **{k: v for k, v in extra.items() if v}}
        return urlencode(items)

    @property
    def start_iso(self) -> str:
        return _iso(self.start_ms)

    @property
    def end_iso(self) -> str:
        return _iso(self.end_ms)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pick_step_ms(span_ms: int, points: int, min_step_ms: int = 1000) -> int:
    """A step that gives at most ``points`` points over ``span_ms`` (charts decimate to screen width)."""
    points = max(10, min(points, 4000))
    raw = max(span_ms / points, min_step_ms)
    for nice in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if nice * 1000 >= raw:
            return nice * 1000
    return math.ceil(raw / 86_400_000) * 86_400_000
