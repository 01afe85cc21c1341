"""Rate-limiting windows and counters, without sockets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pitwall.traffic.gateway.plugins import ratelimit
from pitwall.traffic.gateway.plugins.ratelimit import Counters, window_start

pytestmark = pytest.mark.timeout(10)


def _ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_windows_start_at_whole_periods_utc() -> None:
    now = _ts(2026, 3, 17, 13, 45, 30) + 0.25
    assert window_start("second", now) == _ts(2026, 3, 17, 13, 45, 30)
    assert window_start("minute", now) == _ts(2026, 3, 17, 13, 45)
    assert window_start("hour", now) == _ts(2026, 3, 17, 13)
    assert window_start("day", now) == _ts(2026, 3, 17)
    assert window_start("month", now) == _ts(2026, 3, 1)
    assert window_start("year", now) == _ts(2026, 1, 1)
    assert window_start("month", _ts(2026, 4, 1)) == _ts(2026, 4, 1)


def test_counters_reset_with_the_window_and_sweep_ended_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    c = Counters()
    key = ("plugin", "client", "minute")
    c.add(key, 60, 1)
    c.add(key, 60, 1)
    assert c.usage(key, 60) == 2 and c.usage(key, 120) == 0
    c.add(key, 120, 1)
    assert c.usage(key, 120) == 1
    monkeypatch.setattr(ratelimit, "MAX_KEYS", 2)
    c.add(("plugin", "other", "minute"), 120, 1)
    c.add(("plugin", "third", "minute"), 120, 1)  # over the bound: windows that ended are dropped first
    assert len(c.counts) <= 3 and c.usage(("plugin", "third", "minute"), 120) == 1
