"""On-call arithmetic on hand-worked schedules: rotations, restrictions, layers, overrides, DST.

Every expected span below was worked out by hand from PagerDuty's rules (see
``pitwall.incidents.oncall``), not produced by the code under test.
"""

from __future__ import annotations

from typing import Any

import pytest

from pitwall.incidents.errors import InvalidInput
from pitwall.incidents.model import Override, Schedule, ScheduleLayer
from pitwall.incidents.oncall import final_schedule, layer_spans, on_call_at, parse_time, shifts_overlapping

pytestmark = pytest.mark.timeout(30)


def t(text: str) -> int:
    return parse_time(text)


def spans(sched: Schedule, since: str, until: str, overrides: list[Override] | None = None) -> list[tuple[str, ...]]:
    from pitwall.incidents.views import iso

    return [(str(iso(s.start_ns)), str(iso(s.end_ns)), s.user)
            for s in final_schedule(sched, overrides or [], t(since), t(until))]


def layer(**kw: Any) -> ScheduleLayer:
    base: dict[str, Any] = {"start": "2026-01-01T00:00:00Z", "rotation_virtual_start": "2026-01-05T00:00:00Z",
                            "rotation_turn_length_seconds": 86_400, "users": ["A", "B", "C"]}
    return ScheduleLayer(**{**base, **kw})


def test_daily_rotation_counts_turns_from_the_virtual_start() -> None:
    sched = Schedule(name="s", schedule_layers=[layer()])
    # 2026-01-09 12:00 is 4.5 days after the virtual start: turn 4, 4 mod 3 = 1 -> B.
    assert on_call_at(sched, [], t("2026-01-09T12:00:00Z")) == "B"
    # Before the virtual start the turn number is negative: 2026-01-04 is turn -1 -> users[-1 mod 3] = C.
    assert on_call_at(sched, [], t("2026-01-04T12:00:00Z")) == "C"
    assert spans(sched, "2026-01-05T00:00:00Z", "2026-01-08T06:00:00Z") == [
        ("2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z", "A"),
        ("2026-01-06T00:00:00Z", "2026-01-07T00:00:00Z", "B"),
        ("2026-01-07T00:00:00Z", "2026-01-08T00:00:00Z", "C"),
        ("2026-01-08T00:00:00Z", "2026-01-08T06:00:00Z", "A"),
    ]


def test_layer_start_and_end_bound_it() -> None:
    sched = Schedule(name="s", schedule_layers=[layer(start="2026-01-06T12:00:00Z", end="2026-01-07T12:00:00Z")])
    assert on_call_at(sched, [], t("2026-01-06T11:59:59Z")) is None
    assert spans(sched, "2026-01-05T00:00:00Z", "2026-01-09T00:00:00Z") == [
        ("2026-01-06T12:00:00Z", "2026-01-07T00:00:00Z", "B"),
        ("2026-01-07T00:00:00Z", "2026-01-07T12:00:00Z", "C"),
    ]


def test_one_user_shifts_merge() -> None:
    sched = Schedule(name="s", schedule_layers=[layer(users=["A"])])
    assert spans(sched, "2026-01-05T00:00:00Z", "2026-01-08T00:00:00Z") == [
        ("2026-01-05T00:00:00Z", "2026-01-08T00:00:00Z", "A")]


def test_daily_restriction_masks_the_rotation() -> None:
    # Weekly A/B from Monday 2026-01-05, on call only 09:00-17:00 each day.
    lay = layer(rotation_turn_length_seconds=7 * 86_400, users=["A", "B"],
                restrictions=[{"type": "daily_restriction", "start_time_of_day": "09:00:00",
                               "duration_seconds": 8 * 3600}])
    sched = Schedule(name="s", schedule_layers=[lay])
    assert on_call_at(sched, [], t("2026-01-06T08:59:59Z")) is None
    assert on_call_at(sched, [], t("2026-01-06T09:00:00Z")) == "A"
    assert on_call_at(sched, [], t("2026-01-13T16:59:59Z")) == "B"
    assert on_call_at(sched, [], t("2026-01-13T17:00:00Z")) is None
    assert spans(sched, "2026-01-11T00:00:00Z", "2026-01-13T00:00:00Z") == [
        ("2026-01-11T09:00:00Z", "2026-01-11T17:00:00Z", "A"),  # Sunday: still A's week
        ("2026-01-12T09:00:00Z", "2026-01-12T17:00:00Z", "B"),  # Monday 00:00 handoff, hidden until 09:00
    ]


def test_daily_restriction_over_midnight() -> None:
    lay = layer(users=["N"], restrictions=[{"type": "daily_restriction", "start_time_of_day": "22:00",
                                            "duration_seconds": 8 * 3600}])
    sched = Schedule(name="s", schedule_layers=[lay])
    assert spans(sched, "2026-01-05T00:00:00Z", "2026-01-06T12:00:00Z") == [
        ("2026-01-05T00:00:00Z", "2026-01-05T06:00:00Z", "N"),  # the window that began on the 4th
        ("2026-01-05T22:00:00Z", "2026-01-06T06:00:00Z", "N"),
    ]


def test_weekly_restriction_business_week() -> None:
    # Monday 09:00 to Friday 17:00: 4 days and 8 hours.
    lay = layer(users=["A", "B"], rotation_turn_length_seconds=7 * 86_400,
                restrictions=[{"type": "weekly_restriction", "start_day_of_week": 1, "start_time_of_day": "09:00:00",
                               "duration_seconds": 4 * 86_400 + 8 * 3600}])
    sched = Schedule(name="s", schedule_layers=[lay])
    assert on_call_at(sched, [], t("2026-01-05T08:00:00Z")) is None  # Monday before 09:00
    assert on_call_at(sched, [], t("2026-01-07T03:00:00Z")) == "A"  # Wednesday night: inside the window
    assert on_call_at(sched, [], t("2026-01-09T17:00:00Z")) is None  # Friday 17:00
    assert on_call_at(sched, [], t("2026-01-10T12:00:00Z")) is None  # Saturday
    assert spans(sched, "2026-01-03T00:00:00Z", "2026-01-17T00:00:00Z") == [
        ("2026-01-05T09:00:00Z", "2026-01-09T17:00:00Z", "A"),
        ("2026-01-12T09:00:00Z", "2026-01-16T17:00:00Z", "B"),
    ]


def _two_layers() -> Schedule:
    # Layer 1: weekly A/B. Layer 2 (higher): C every night 22:00-06:00.
    return Schedule(name="s", schedule_layers=[
        layer(users=["A", "B"], rotation_turn_length_seconds=7 * 86_400),
        layer(users=["C"], restrictions=[{"type": "daily_restriction", "start_time_of_day": "22:00:00",
                                          "duration_seconds": 8 * 3600}]),
    ])


def test_higher_layer_wins_and_lower_shows_through() -> None:
    assert spans(_two_layers(), "2026-01-05T00:00:00Z", "2026-01-07T00:00:00Z") == [
        ("2026-01-05T00:00:00Z", "2026-01-05T06:00:00Z", "C"),
        ("2026-01-05T06:00:00Z", "2026-01-05T22:00:00Z", "A"),
        ("2026-01-05T22:00:00Z", "2026-01-06T06:00:00Z", "C"),
        ("2026-01-06T06:00:00Z", "2026-01-06T22:00:00Z", "A"),
        ("2026-01-06T22:00:00Z", "2026-01-07T00:00:00Z", "C"),
    ]


def test_overrides_win_and_the_newest_overlapping_one_wins() -> None:
    d = Override(id="o1", start_ns=t("2026-01-05T12:00:00Z"), end_ns=t("2026-01-05T14:00:00Z"), user="D",
                 created_ns=1)
    e = Override(id="o2", start_ns=t("2026-01-05T13:00:00Z"), end_ns=t("2026-01-05T15:00:00Z"), user="E",
                 created_ns=2)
    window = ("2026-01-05T06:00:00Z", "2026-01-05T22:00:00Z")
    assert spans(_two_layers(), *window, overrides=[d, e]) == [
        ("2026-01-05T06:00:00Z", "2026-01-05T12:00:00Z", "A"),
        ("2026-01-05T12:00:00Z", "2026-01-05T13:00:00Z", "D"),
        ("2026-01-05T13:00:00Z", "2026-01-05T15:00:00Z", "E"),
        ("2026-01-05T15:00:00Z", "2026-01-05T22:00:00Z", "A"),
    ]
    d_newer = d.model_copy(update={"created_ns": 3})
    assert spans(_two_layers(), *window, overrides=[d_newer, e]) == [
        ("2026-01-05T06:00:00Z", "2026-01-05T12:00:00Z", "A"),
        ("2026-01-05T12:00:00Z", "2026-01-05T14:00:00Z", "D"),
        ("2026-01-05T14:00:00Z", "2026-01-05T15:00:00Z", "E"),
        ("2026-01-05T15:00:00Z", "2026-01-05T22:00:00Z", "A"),
    ]
    # An override beats the higher layer too.
    night = Override(id="o3", start_ns=t("2026-01-05T23:00:00Z"), end_ns=t("2026-01-06T01:00:00Z"), user="D")
    assert on_call_at(_two_layers(), [night], t("2026-01-06T00:00:00Z")) == "D"


def test_daily_handoff_keeps_local_time_across_spring_forward() -> None:
    # Europe/Berlin moves from UTC+1 to UTC+2 on 2026-03-29: the 09:00 handoff goes from 08:00Z to 07:00Z.
    sched = Schedule(name="s", time_zone="Europe/Berlin", schedule_layers=[layer(
        start="2026-03-01T00:00:00+01:00", rotation_virtual_start="2026-03-27T09:00:00+01:00", users=["A", "B"])])
    assert spans(sched, "2026-03-27T08:00:00Z", "2026-03-31T07:00:00Z") == [
        ("2026-03-27T08:00:00Z", "2026-03-28T08:00:00Z", "A"),
        ("2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z", "B"),  # 23 hours of real time
        ("2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z", "A"),
        ("2026-03-30T07:00:00Z", "2026-03-31T07:00:00Z", "B"),
    ]


def test_daily_handoff_keeps_local_time_across_fall_back() -> None:
    # And back to UTC+1 on 2026-10-25: the turn over the change lasts 25 hours.
    sched = Schedule(name="s", time_zone="Europe/Berlin", schedule_layers=[layer(
        start="2026-10-01T00:00:00+02:00", rotation_virtual_start="2026-10-23T09:00:00+02:00", users=["A", "B"])])
    assert spans(sched, "2026-10-23T07:00:00Z", "2026-10-26T08:00:00Z") == [
        ("2026-10-23T07:00:00Z", "2026-10-24T07:00:00Z", "A"),
        ("2026-10-24T07:00:00Z", "2026-10-25T08:00:00Z", "B"),
        ("2026-10-25T08:00:00Z", "2026-10-26T08:00:00Z", "A"),
    ]


def test_restrictions_are_local_time_across_dst() -> None:
    # 09:00-17:00 in New York: 14:00-22:00Z in winter (EST), 13:00-21:00Z after 2026-03-08 (EDT).
    lay = layer(start="2026-03-01T00:00:00-05:00", rotation_virtual_start="2026-03-02T00:00:00-05:00",
                rotation_turn_length_seconds=7 * 86_400, users=["A"],
                restrictions=[{"type": "daily_restriction", "start_time_of_day": "09:00:00",
                               "duration_seconds": 8 * 3600}])
    sched = Schedule(name="s", time_zone="America/New_York", schedule_layers=[lay])
    assert spans(sched, "2026-03-07T00:00:00Z", "2026-03-09T00:00:00Z") == [
        ("2026-03-07T14:00:00Z", "2026-03-07T22:00:00Z", "A"),
        ("2026-03-08T13:00:00Z", "2026-03-08T21:00:00Z", "A"),
    ]


def test_layer_spans_and_whole_shifts() -> None:
    sched = Schedule(name="s", schedule_layers=[layer(users=["A", "B"], rotation_turn_length_seconds=7 * 86_400)])
    assert [(s.user) for s in layer_spans(sched.schedule_layers[0], "UTC", t("2026-01-08T00:00:00Z"),
                                          t("2026-01-20T00:00:00Z"))] == ["A", "B", "A"]
    # The shift under way at a moment, whole: A has 2026-01-05 to 2026-01-12.
    (shift,) = shifts_overlapping(sched, [], t("2026-01-08T00:00:00Z"), t("2026-01-08T00:00:01Z"))
    assert (shift.user, shift.start_ns, shift.end_ns) == ("A", t("2026-01-05T00:00:00Z"), t("2026-01-12T00:00:00Z"))


def test_bounded_work_and_bad_ranges() -> None:
    sched = Schedule(name="s", schedule_layers=[layer(rotation_turn_length_seconds=60)])
    with pytest.raises(InvalidInput, match="handoffs"):
        final_schedule(sched, [], t("2026-01-01T00:00:00Z"), t("2026-03-01T00:00:00Z"))
    with pytest.raises(InvalidInput, match="after"):
        final_schedule(sched, [], t("2026-01-02T00:00:00Z"), t("2026-01-01T00:00:00Z"))
    with pytest.raises(InvalidInput, match="ISO 8601"):
        parse_time("next tuesday")
