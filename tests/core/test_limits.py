"""The in-flight byte budget: reservations grow, refuse with 429 + Retry-After, and always release."""

from __future__ import annotations

import threading

import pytest

from pitwall.core.errors import Overloaded
from pitwall.core.limits import InflightBudget, LimitsSettings


def test_a_lone_request_may_exceed_the_budget_but_not_a_second_one() -> None:
    b = InflightBudget(100, retry_after=2.0)
    a = b.reservation()
    a.grow(150)  # alone: a body within max_request_bytes always goes through on an idle server
    assert b.used == 150
    with pytest.raises(Overloaded) as e:
        b.reservation().grow(1)
    assert e.value.retry_after == 2.0 and "in flight" in e.value.message
    a.release()
    assert b.used == 0
    with b.reserve(60) as r:
        r.grow(40)
        with pytest.raises(Overloaded):
            b.reservation().grow(1)
    assert b.used == 0


def test_a_refused_grow_holds_nothing_more() -> None:
    b = InflightBudget(100)
    first = b.reservation()
    first.grow(80)
    second = b.reservation()
    second.grow(10)
    with pytest.raises(Overloaded):
        second.grow(20)
    assert second.held == 10 and b.used == 90
    second.release()
    first.release()
    assert b.used == 0


def test_concurrent_reservations_never_overcommit() -> None:
    b = InflightBudget(1000)
    peak = [0]
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(300):
            r = b.reservation()
            try:
                r.grow(100)
                with lock:
                    peak[0] = max(peak[0], b.used)
            except Overloaded:
                pass
            finally:
                r.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.used == 0 and peak[0] <= 1000


def test_limits_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_inflight_bytes"):
        LimitsSettings(max_inflight_bytes=0)
