"""Cron schedules as Kubernetes' CronJob controller reads them (robfig/cron's standard parser).

``Schedule.parse("*/15 9-17 * * MON-FRI", "Europe/Paris")`` understands the
five fields minute, hour, day of month, month, day of week with ``*``,
``?``, lists, ranges, steps (``*/n``, ``a-b/n``, ``a/n`` = from ``a`` to the
end), month names JAN-DEC and day names SUN-SAT (case-insensitive, 0 =
Sunday, up to 6), the descriptors ``@yearly``/``@annually``, ``@monthly``,
``@weekly``, ``@daily``/``@midnight``, ``@hourly`` and ``@every <duration>``
(``1h30m``, ``90s``). As in cron, when both day fields are restricted a day
matching either runs; when one is ``*`` both must match.

Times are evaluated on the wall clock of the time zone (IANA name; UTC
without one): a local time skipped by a daylight-saving change does not
run, a repeated one runs once (its first occurrence). Pure functions, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CronError", "Schedule", "missed_times"]

_MONTHS = {n: i + 1 for i, n in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                          "nov", "dec"))}
_DAYS = {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_BOUNDS: tuple[tuple[int, int, dict[str, int]], ...] = ((0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, _MONTHS), (0, 6, _DAYS))
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_SEARCH_YEARS = 5


class CronError(ValueError):
    """An unparseable schedule or an unknown time zone (the message says which)."""


def _value(s: str, lo: int, hi: int, names: dict[str, int]) -> int:
    v = names.get(s.lower())
    if v is None:
        if not s.isdigit():
            raise CronError(f"failed to parse int from {s}")
        v = int(s)
    if not lo <= v <= hi:
        raise CronError(f"value ({v}) out of range [{lo}, {hi}]")
    return v


def _field(text: str, lo: int, hi: int, names: dict[str, int]) -> tuple[frozenset[int], bool]:
    """The values a field allows, and whether it was ``*``/``?`` (matters for the day fields)."""
    out: set[int] = set()
    star = False
    for part in text.split(","):
        rng, _, step_s = part.partition("/")
        step = 1
        if step_s:
            if not step_s.isdigit() or int(step_s) == 0:
                raise CronError(f"invalid step in {part!r}")
            step = int(step_s)
        if rng in ("*", "?"):
            a, b = lo, hi
            star = star or not step_s
        elif "-" in rng:
            a_s, _, b_s = rng.partition("-")
            a, b = _value(a_s, lo, hi, names), _value(b_s, lo, hi, names)
            if a > b:
                raise CronError(f"beginning of range ({a}) beyond end of range ({b}): {part}")
        else:
            a = _value(rng, lo, hi, names)
            b = hi if step_s else a
        out.update(range(a, b + 1, step))
    return frozenset(out), star


def _duration(s: str) -> timedelta:
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        pos = m.end()
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[m.group(2)]
    if pos != len(s) or not s or total <= 0:
        raise CronError(f"failed to parse duration @every {s}")
    return timedelta(seconds=max(1.0, round(total)))  # at least a second, whole seconds, as robfig


@dataclass(frozen=True)
class Schedule:
    """A parsed cron schedule in a time zone; ``next(t)`` is the first activation strictly after ``t``."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_star: bool
    weekdays_star: bool
    tz: tzinfo
    every: timedelta | None = None

    @classmethod
    def parse(cls, spec: str, time_zone: str | None = None) -> Schedule:
        """Parse ``spec`` for the IANA ``time_zone`` (UTC when None or empty); raise ``CronError``."""
        tz: tzinfo = UTC
        if time_zone:
            try:
                tz = ZoneInfo(time_zone)
            except (ZoneInfoNotFoundError, ValueError) as e:
                raise CronError(f"unknown time zone {time_zone}") from e
        s = spec.strip()
        if s.startswith(("TZ=", "CRON_TZ=")):
            raise CronError("CRON_TZ or TZ used in schedule is not supported, please use the timeZone field")
        if s.startswith("@every "):
            return cls(frozenset(), frozenset(), frozenset(), frozenset(), frozenset(), True, True, tz,
                       every=_duration(s[len("@every "):].strip()))
        if s.startswith("@"):
            if s.lower() not in _DESCRIPTORS:
                raise CronError(f"unrecognized descriptor: {s}")
            s = _DESCRIPTORS[s.lower()]
        fields = s.split()
        if len(fields) != 5:
            raise CronError(f"expected exactly 5 fields, found {len(fields)}: {spec}")
        parsed = [_field(f, lo, hi, names) for f, (lo, hi, names) in zip(fields, _BOUNDS, strict=True)]
        return cls(parsed[0][0], parsed[1][0], parsed[2][0], parsed[3][0], parsed[4][0], parsed[2][1],
                   parsed[4][1], tz)

    def _day_matches(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def _local(self, naive: datetime) -> datetime | None:
        """The aware time of a wall-clock time in the zone; None when a DST change skips it."""
        aware = naive.replace(tzinfo=self.tz, fold=0)
        if aware.astimezone(UTC).astimezone(self.tz).replace(tzinfo=None) != naive:
            return None
        return aware

    def next(self, after: datetime) -> datetime | None:
        """The first activation strictly after ``after`` (aware), in the schedule's zone; None if none within
        five years (e.g. ``0 0 30 2 *``)."""
        if self.every is not None:
            t = after.replace(microsecond=0) + self.every
            return t.astimezone(self.tz)
        local = after.astimezone(self.tz).replace(second=0, microsecond=0, tzinfo=None) + timedelta(minutes=1)
        hours, minutes = sorted(self.hours), sorted(self.minutes)
        day = local.date()
        for _ in range(366 * _SEARCH_YEARS):
            if self._day_matches(day):
                for h in hours:
                    if day == local.date() and h < local.hour:
                        continue
                    for m in minutes:
                        cand = datetime(day.year, day.month, day.day, h, m)
                        if cand < local:
                            continue
                        aware = self._local(cand)
                        if aware is not None and aware.astimezone(UTC) > after.astimezone(UTC):
                            return aware
            day += timedelta(days=1)
        return None

    def previous(self, at: datetime) -> datetime | None:
        """The latest activation at or before ``at`` (within five years), for catching up missed runs."""
        if self.every is not None:
            return None  # an interval has no fixed grid: callers walk it with next()
        local = at.astimezone(self.tz).replace(second=0, microsecond=0, tzinfo=None)
        hours, minutes = sorted(self.hours, reverse=True), sorted(self.minutes, reverse=True)
        day = local.date()
        for _ in range(366 * _SEARCH_YEARS):
            if self._day_matches(day):
                for h in hours:
                    if day == local.date() and h > local.hour:
                        continue
                    for m in minutes:
                        cand = datetime(day.year, day.month, day.day, h, m)
                        if cand > local:
                            continue
                        aware = self._local(cand)
                        if aware is not None and aware.astimezone(UTC) <= at.astimezone(UTC):
                            return aware
            day -= timedelta(days=1)
        return None


def missed_times(schedule: Schedule, earliest: datetime, now: datetime, limit: int = 100) -> tuple[datetime | None, int]:
    """``(most recent activation in (earliest, now], how many there were)``, counting at most ``limit + 1``
    (upstream's ``mostRecentScheduleTime``: more than ``limit`` missed is reported, only the latest runs)."""
    t = schedule.next(earliest)
    if t is None or t > now:
        return None, 0
    count, latest = 0, t
    while t is not None and t <= now and count <= limit:
        count += 1
        latest = t
        t = schedule.next(t)
    if count > limit:
        prev = schedule.previous(now)
        if prev is not None:
            latest = prev
        else:  # an @every interval: step straight to the last one
            assert schedule.every is not None
            steps = int((now - latest) / schedule.every)
            latest = latest + steps * schedule.every
    return latest, count
