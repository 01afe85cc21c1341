"""The cron schedule parser: fields, names, steps, descriptors, day-of-month/week rule, time zones, DST."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pitwall.controllers.cron import CronError, Schedule, missed_times


def nexts(spec: str, start: datetime, n: int, tz: str | None = None) -> list[datetime]:
    s = Schedule.parse(spec, tz)
    out, t = [], start
    for _ in range(n):
        nxt = s.next(t)
        assert nxt is not None
        out.append(nxt)
        t = nxt
    return out


T0 = datetime(2026, 3, 2, 10, 7, 30, tzinfo=UTC)  # a Monday


def test_every_fifteen_minutes_in_utc() -> None:
    assert [t.strftime("%H:%M") for t in nexts("*/15 * * * *", T0, 4)] == ["10:15", "10:30", "10:45", "11:00"]


def test_strictly_after() -> None:
    s = Schedule.parse("0 * * * *")
    assert s.next(datetime(2026, 1, 1, 10, 0, tzinfo=UTC)) == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    assert s.previous(datetime(2026, 1, 1, 10, 0, tzinfo=UTC)) == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def test_lists_ranges_steps_and_names() -> None:
    got = nexts("5,10-12 9-17/4 * * MON-fri", T0, 6)
    assert [t.strftime("%a %H:%M") for t in got] == ["Mon 13:05", "Mon 13:10", "Mon 13:11", "Mon 13:12",
                                                     "Mon 17:05", "Mon 17:10"]
    assert Schedule.parse("0 0 1 jan,JUL ?").months == frozenset({1, 7})
    assert Schedule.parse("30/10 * * * *").minutes == frozenset({30, 40, 50})


@pytest.mark.parametrize(("spec", "first"), [
    ("@hourly", datetime(2026, 3, 2, 11, 0, tzinfo=UTC)),
    ("@daily", datetime(2026, 3, 3, 0, 0, tzinfo=UTC)),
    ("@midnight", datetime(2026, 3, 3, 0, 0, tzinfo=UTC)),
    ("@weekly", datetime(2026, 3, 8, 0, 0, tzinfo=UTC)),  # Sunday
    ("@monthly", datetime(2026, 4, 1, 0, 0, tzinfo=UTC)),
    ("@yearly", datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
    ("@annually", datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
    ("@every 90s", datetime(2026, 3, 2, 10, 9, 0, tzinfo=UTC)),
])
def test_descriptors(spec: str, first: datetime) -> None:
    assert Schedule.parse(spec).next(T0) == first


def test_day_of_month_or_day_of_week() -> None:
    # both restricted: either matches (the 13th, or any Friday)
    got = nexts("0 0 13 * 5", datetime(2026, 2, 1, tzinfo=UTC), 4)
    assert [t.day for t in got] == [6, 13, 20, 27]
    # one is *: both must match
    got = nexts("0 0 * * 5", datetime(2026, 2, 1, tzinfo=UTC), 2)
    assert [t.day for t in got] == [6, 13]
    assert Schedule.parse("0 0 30 2 *").next(T0) is None  # never


@pytest.mark.parametrize("bad", ["* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 7",
                                 "5-1 * * * *", "*/0 * * * *", "x * * * *", "@fortnightly", "@every 5x",
                                 "TZ=UTC * * * * *"])
def test_rejected(bad: str) -> None:
    with pytest.raises(CronError):
        Schedule.parse(bad)


def test_time_zone() -> None:
    with pytest.raises(CronError, match="time zone"):
        Schedule.parse("0 9 * * *", "Mars/Olympus")
    paris = ZoneInfo("Europe/Paris")
    got = Schedule.parse("0 9 * * *", "Europe/Paris").next(datetime(2026, 1, 5, 12, tzinfo=UTC))
    assert got == datetime(2026, 1, 6, 9, tzinfo=paris)
    assert got is not None and got.astimezone(UTC).hour == 8  # CET = UTC+1
    summer = Schedule.parse("0 9 * * *", "Europe/Paris").next(datetime(2026, 7, 5, 12, tzinfo=UTC))
    assert summer is not None and summer.astimezone(UTC).hour == 7  # CEST = UTC+2


def test_dst_gap_is_skipped_and_overlap_runs_once() -> None:
    ny = "America/New_York"
    # 2026-03-08 02:30 does not exist in New York
    got = nexts("30 2 * * *", datetime(2026, 3, 7, 12, tzinfo=UTC), 2, ny)
    assert [t.day for t in got] == [9, 10]
    # 2026-11-01 01:30 happens twice; one run
    got = nexts("30 1 * * *", datetime(2026, 10, 31, 12, tzinfo=UTC), 2, ny)
    assert [t.astimezone(ZoneInfo(ny)).day for t in got] == [1, 2]
    second = datetime(2026, 11, 1, 6, 10, tzinfo=UTC)  # 01:10 EST, the repeated hour: 01:30 already ran
    assert Schedule.parse("30 1 * * *", ny).next(second) == datetime(2026, 11, 2, 1, 30, tzinfo=ZoneInfo(ny))
    utc_hours = [t.astimezone(UTC) for t in nexts("0 * * * *", datetime(2026, 3, 8, 5, 30, tzinfo=UTC), 3, ny)]
    assert [b - a for a, b in itertools.pairwise(utc_hours)] == [timedelta(hours=1)] * 2


def test_missed_times() -> None:
    s = Schedule.parse("* * * * *")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert missed_times(s, start, start + timedelta(seconds=30)) == (None, 0)
    assert missed_times(s, start, start + timedelta(minutes=3, seconds=5)) == (start + timedelta(minutes=3), 3)
    latest, n = missed_times(s, start, start + timedelta(days=2))
    assert latest == start + timedelta(days=2) and n == 101
    every = Schedule.parse("@every 1m")
    latest, n = missed_times(every, start, start + timedelta(hours=5, seconds=1))
    assert latest == start + timedelta(hours=5) and n == 101
