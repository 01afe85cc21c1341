"""Who is on call: schedule layers, restrictions and overrides, as PagerDuty renders a schedule.

A layer hands over every ``rotation_turn_length_seconds`` counted from its
``rotation_virtual_start``: at time t the user on call is
``users[floor((t - rotation_virtual_start) / turn_length) mod len(users)]``,
within ``[start, end)``. The subtraction is done on the schedule's local wall
clock (its ``time_zone``), so a daily or weekly handoff at 09:00 stays at
09:00 local time across a DST change, as it does in PagerDuty; turns that
span the change are one hour shorter or longer in real time.

Restrictions mask a layer: it has someone on call only inside one of its
daily (every day from ``start_time_of_day`` for ``duration_seconds``) or
weekly (from ``start_day_of_week`` at that time) windows, in local time.
The final schedule takes, at each instant, the last layer of
``schedule_layers`` that has someone (higher layers win, as layer 2 over
layer 1 in PagerDuty's schedule editor); an override beats every layer, and of
overlapping overrides the one created last wins.

Everything here is pure arithmetic on nanosecond timestamps, tested on
hand-worked schedules.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pitwall.incidents.errors import InvalidInput
from pitwall.incidents.model import Override, Restriction, Schedule, ScheduleLayer

__all__ = [
    "MAX_SPANS",
    "Span",
    "final_schedule",
    "from_ns",
    "layer_spans",
    "on_call_at",
    "parse_time",
    "shifts_overlapping",
    "to_ns",
    "user_in_layer",
]

MAX_SPANS = 20_000  # boundaries examined per request: a 1-minute rotation over 2 weeks fits
_NS = 1_000_000_000


@dataclass(frozen=True)
class Span:
    """``user`` on call from ``start_ns`` (inclusive) to ``end_ns`` (exclusive)."""

    start_ns: int
    end_ns: int
    user: str


def parse_time(text: str, tz: str = "UTC") -> int:
    """ISO 8601 (with offset or ``Z``; a bare local time is read in ``tz``) to Unix nanoseconds."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"not an ISO 8601 time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(tz))
    return to_ns(dt)


def to_ns(dt: datetime) -> int:
    return int(dt.timestamp()) * _NS + dt.microsecond * 1000


def from_ns(ns: int, tz: str = "UTC") -> datetime:
    return datetime.fromtimestamp(ns / _NS, UTC).astimezone(ZoneInfo(tz))


def _wall(ns: int, zone: ZoneInfo) -> datetime:
    """Local wall-clock time (naive) of instant ``ns``."""
    return datetime.fromtimestamp(ns // _NS, zone).replace(tzinfo=None, microsecond=(ns % _NS) // 1000)


def _instant(wall: datetime, zone: ZoneInfo) -> int:
    """The instant of local wall time ``wall`` (the earlier one when ambiguous)."""
    return to_ns(wall.replace(tzinfo=zone))


def _in_restriction(r: Restriction, wall: datetime) -> bool:
    day0 = datetime(wall.year, wall.month, wall.day)
    if r.type == "daily_restriction":
        starts = [day0 - timedelta(days=1), day0]
    else:
        assert r.start_day_of_week is not None
        back = (wall.isoweekday() - r.start_day_of_week) % 7
        starts = [day0 - timedelta(days=back + 7), day0 - timedelta(days=back)]
    for d in starts:
        start = d + timedelta(seconds=r.start_seconds)
        if start <= wall < start + timedelta(seconds=r.duration_seconds):
            return True
    return False


def user_in_layer(layer: ScheduleLayer, tz: str, t_ns: int) -> str | None:
    """The user layer ``layer`` puts on call at ``t_ns`` (None outside it or its restrictions)."""
    zone = ZoneInfo(tz)
    if t_ns < parse_time(layer.start, tz) or (layer.end and t_ns >= parse_time(layer.end, tz)):
        return None
    wall = _wall(t_ns, zone)
    if layer.restrictions and not any(_in_restriction(r, wall) for r in layer.restrictions):
        return None
    vstart = _wall(parse_time(layer.rotation_virtual_start, tz), zone)
    elapsed = (wall - vstart) // timedelta(seconds=1)
    turn = elapsed // layer.rotation_turn_length_seconds
    return layer.users[turn % len(layer.users)]


def _layer_boundaries(layer: ScheduleLayer, tz: str, since: int, until: int) -> Iterable[int]:
    zone = ZoneInfo(tz)
    yield parse_time(layer.start, tz)
    if layer.end:
        yield parse_time(layer.end, tz)
    vstart = _wall(parse_time(layer.rotation_virtual_start, tz), zone)
    length = timedelta(seconds=layer.rotation_turn_length_seconds)
    first = (_wall(since, zone) - vstart) // length
    end_wall = _wall(until, zone)
    for k in range(first, first + MAX_SPANS + 2):
        wall = vstart + k * length
        if wall > end_wall:
            break
        yield _instant(wall, zone)
    day = _wall(since, zone).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=8)
    while layer.restrictions and day <= end_wall:
        for r in layer.restrictions:
            if r.type == "daily_restriction" or day.isoweekday() == r.start_day_of_week:
                start = day + timedelta(seconds=r.start_seconds)
                yield _instant(start, zone)
                yield _instant(start + timedelta(seconds=r.duration_seconds), zone)
        day += timedelta(days=1)


def _check_range(since: int, until: int) -> None:
    if until <= since:
        raise InvalidInput("until must be after since")


def _spans(points: Iterable[int], since: int, until: int, who: Callable[[int], str | None]) -> list[Span]:
    cuts = sorted({p for p in points if since < p < until} | {since, until})
    if len(cuts) > MAX_SPANS:
        raise InvalidInput(f"the range holds more than {MAX_SPANS} handoffs; ask for a shorter one")
    out: list[Span] = []
    for a, b in itertools.pairwise(cuts):
        user = who(a)
        if user is None:
            continue
        if out and out[-1].user == user and out[-1].end_ns == a:
            out[-1] = Span(out[-1].start_ns, b, user)
        else:
            out.append(Span(a, b, user))
    return out


def layer_spans(layer: ScheduleLayer, tz: str, since: int, until: int) -> list[Span]:
    """The layer's own rendered schedule over ``[since, until)``."""
    _check_range(since, until)
    return _spans(_layer_boundaries(layer, tz, since, until), since, until,
                  lambda t: user_in_layer(layer, tz, t))


def on_call_at(schedule: Schedule, overrides: Sequence[Override], t_ns: int) -> str | None:
    """The user on call in ``schedule`` at ``t_ns``: the newest covering override, else the highest layer."""
    covering = [o for o in overrides if o.start_ns <= t_ns < o.end_ns]
    if covering:
        return max(covering, key=lambda o: (o.created_ns, o.id)).user
    for layer in reversed(schedule.schedule_layers):
        user = user_in_layer(layer, schedule.time_zone, t_ns)
        if user is not None:
            return user
    return None


def final_schedule(schedule: Schedule, overrides: Sequence[Override], since: int, until: int) -> list[Span]:
    """The final schedule over ``[since, until)``: consecutive shifts of the same user are merged."""
    _check_range(since, until)
    points: list[int] = []
    for layer in schedule.schedule_layers:
        points.extend(_layer_boundaries(layer, schedule.time_zone, since, until))
        if len(points) > MAX_SPANS * 4:
            raise InvalidInput(f"the range holds more than {MAX_SPANS} handoffs; ask for a shorter one")
    for o in overrides:
        points += [o.start_ns, o.end_ns]
    return _spans(points, since, until,
                  lambda t: on_call_at(schedule, overrides, t))


def shifts_overlapping(schedule: Schedule, overrides: Sequence[Override], since: int, until: int) -> list[Span]:
    """The final schedule's shifts that overlap ``[since, until)``, whole: a shift under way at ``since``
    keeps its real start and one going on past ``until`` its real end (looked for up to 93 days out)."""
    spans = final_schedule(schedule, overrides, since, until)
    if not spans:
        return spans
    day = 86_400 * _NS
    for pad in (day, 8 * day, 32 * day, 93 * day):
        try:
            wider = final_schedule(schedule, overrides, since - pad, until + pad)
        except InvalidInput:  # too many handoffs to look that far: keep what is known
            break
        inner = [sp for sp in wider if sp.start_ns < until and sp.end_ns > since]
        if inner and inner[0].start_ns > since - pad and inner[-1].end_ns < until + pad:
            return inner
        spans = inner or spans
    return spans
