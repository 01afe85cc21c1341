"""Kong's rate-limiting plugin, local policy: fixed windows per period, counted exactly.

Kong's local policy reads the counters, decides, and increments later in a
timer, so concurrent requests all see the same count and a limit is
overshot (Kong/kong#2629). Here the check and the increment of every
period happen together in one synchronous step on the event loop: with N
concurrent clients a limit of L admits exactly L requests per window.

Headers and messages follow ``kong/plugins/rate-limiting/handler.lua``:
``X-RateLimit-Limit-<Period>`` / ``X-RateLimit-Remaining-<Period>`` for each
configured period, ``RateLimit-Limit`` / ``RateLimit-Remaining`` /
``RateLimit-Reset`` for the period closest to its limit, ``Retry-After`` on
429 (``error_code``/``error_message``); ``hide_client_headers`` drops them
all. Windows start at whole seconds, minutes, hours, UTC days, months and
years, as Kong's ``timestamp.get_timestamps``; the reset uses Kong's fixed
period lengths (a month is 30 days).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pitwall.traffic.gateway.context import Ctx, kong_error
from pitwall.traffic.gateway.plugins.base import Plugin

__all__ = ["Counters", "RateLimiting", "window_start"]

PERIODS = ("second", "minute", "hour", "day", "month", "year")
EXPIRATION = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "month": 2592000, "year": 31536000}
_NAMES = {p: p.capitalize() for p in PERIODS}
MAX_KEYS = 1_000_000  # counters kept; past this, windows that have ended are dropped


_FIXED = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_calendar_cache: dict[tuple[str, int], int] = {}


def window_start(period: str, now: float) -> int:
    """Start of the window holding ``now`` (seconds since the epoch, UTC)."""
    n = int(now)
    size = _FIXED.get(period)
    if size is not None:
        return n - n % size
    day = n - n % 86400  # months and years start on a day boundary: computed once a day
    got = _calendar_cache.get((period, day))
    if got is None:
        if len(_calendar_cache) > 64:
            _calendar_cache.clear()
        got = _calendar_cache[(period, day)] = _calendar_start(period, n)
    return got


def _calendar_start(period: str, n: int) -> int:
    d = datetime.fromtimestamp(n, UTC)
    start = d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if period == "year":
        start = start.replace(month=1)
    return int(start.timestamp())


class Counters:
    """Usage per (plugin, identifier, period) in the current window; shared across reloads of one plugin."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], tuple[int, int]] = {}  # key -> (window start, count)

    def usage(self, key: tuple[str, str, str], start: int) -> int:
        got = self.counts.get(key)
        return got[1] if got is not None and got[0] == start else 0

    def add(self, key: tuple[str, str, str], start: int, n: int) -> None:
        self.make_room()
        got = self.counts.get(key)
        self.counts[key] = (start, (got[1] if got is not None and got[0] == start else 0) + n)

    def make_room(self) -> None:
        """Before adding keys: past ``MAX_KEYS``, windows that have ended go."""
        if len(self.counts) >= MAX_KEYS:
            self._sweep()

    def _sweep(self) -> None:
        now = time.time()
        self.counts = {k: v for k, v in self.counts.items() if v[0] == window_start(k[2], now)}


COUNTERS = Counters()  # the local policy's store: one per process, as Kong's is one per node


# One configured period, made once per plugin instance: (period, limit, limit header, limit text,
# remaining header, window length in seconds).
_Row = tuple[str, int, str, str, str, int]
# One period of one request: (row, remaining before this request, window start, counter key, used).
_Usage = tuple[_Row, int, int, tuple[str, str, str], int]


class RateLimiting(Plugin):
    name = "rate-limiting"
    priority = 910

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.limits = [(p, int(self.conf[p])) for p in PERIODS if self.conf.get(p) is not None]
        # Header names and limit texts are the same on every request: made here, not per request.
        self.rows: list[_Row] = [(p, limit, f"X-RateLimit-Limit-{_NAMES[p]}", str(limit),
                                  f"X-RateLimit-Remaining-{_NAMES[p]}", EXPIRATION[p]) for p, limit in self.limits]
        self.scope = self.entity["id"]
        self.counters = COUNTERS
        self.limit_by: str = self.conf["limit_by"]
        self.hide = bool(self.conf["hide_client_headers"])

    def identifier(self, ctx: Ctx) -> str:
        by = self.limit_by
        ident: str | None = None
        if by == "consumer":
            ident = (ctx.consumer or {}).get("id") or (ctx.credential or {}).get("id")
        elif by == "service":
            ident = ctx.service.id if ctx.service is not None else None
        elif by == "credential":
            ident = (ctx.credential or {}).get("id")
        elif by == "header":
            ident = ctx.req.headers.get(self.conf["header_name"].lower())
        elif by == "path" and ctx.req.path == self.conf["path"]:
            ident = ctx.req.path
        return ident or ctx.client_ip

    def access(self, ctx: Ctx) -> None:
        now = time.time()
        ident = self.identifier(ctx)
        counters = self.counters
        counters.make_room()
        counts = counters.counts  # read and written directly: this runs for every request
        usage: list[_Usage] = []
        stop: str | None = None
        for row in self.rows:
            period = row[0]
            start = window_start(period, now)
            key = (self.scope, ident, period)
            got = counts.get(key)
            used = got[1] if got is not None and got[0] == start else 0
            remaining = row[1] - used
            usage.append((row, remaining, start, key, used))
            if remaining <= 0:
                stop = period
        headers = None if self.hide else self._headers(usage, stop, now)
        if stop is not None:
            if headers is not None:
                headers.append(("Retry-After", headers[-1][1]))
            raise kong_error(int(self.conf["error_code"]), self.conf["error_message"], headers)
        for _row, _remaining, start, key, used in usage:  # same step as the check: no other request between
            counts[key] = (start, used + 1)
        if headers is not None:
            if ctx.resp_headers is None:
                ctx.resp_headers = headers
            else:
                ctx.resp_headers += headers

    @staticmethod
    def _headers(usage: list[_Usage], stop: str | None, now: float) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        best: tuple[int, int, str, int] | None = None  # (remaining, window, limit text, reset)
        for (period, _limit, limit_name, limit_text, remaining_name, window), remaining, start, _key, _used in usage:
            rem = remaining - 1 if stop is None or stop == period else remaining
            if rem < 0:
                rem = 0
            reset = window - int(now - start)
            if reset < 1:
                reset = 1
            if best is None or rem < best[0] or (rem == best[0] and window > best[1]):
                best = (rem, window, limit_text, reset)
            out.append((limit_name, limit_text))
            out.append((remaining_name, str(rem)))
        assert best is not None
        out += [("RateLimit-Limit", best[2]), ("RateLimit-Remaining", str(best[0])),
                ("RateLimit-Reset", str(best[3]))]
        return out
