"""The scenario and the load plan: a daily curve, a periodic outage, reproducible luck."""

from __future__ import annotations

import pytest

from pitwall.demo.loadgen import plan_visit
from pitwall.demo.scenario import Scenario, request_rng
from pitwall.demo.services import PRODUCTS

EPOCH = 1_700_000_000.0


def test_traffic_follows_a_daily_curve() -> None:
    s = Scenario(epoch=EPOCH, day_s=240.0)
    hourly = [s.visits_per_s(EPOCH + s.day_s * h / 24) for h in range(24)]
    # hour index i is shop time start_hour + i; find the rates at shop times 03:00 and 14:00.
    at = {round((s.start_hour + i) % 24): r for i, r in enumerate(hourly)}
    assert at[3] < at[9] < at[14]
    assert min(hourly) >= s.night_visits_per_s
    assert max(hourly) <= s.peak_visits_per_s
    # One simulated day later the curve repeats.
    assert s.visits_per_s(EPOCH + 10) == pytest.approx(s.visits_per_s(EPOCH + 10 + s.day_s))


def test_traffic_rises_to_the_lunch_peak_within_the_first_minute() -> None:
    s = Scenario(epoch=EPOCH)
    rates = [s.visits_per_s(EPOCH + t) for t in range(0, 61, 5)]
    peak = rates.index(max(rates))
    assert 40 <= peak * 5 <= 60  # lunch time (12:30) comes about 51 s into the run
    assert rates[:peak + 1] == sorted(rates[:peak + 1])


def test_payment_outage_is_periodic_and_starts_within_the_first_minute() -> None:
    s = Scenario(epoch=EPOCH)
    on = [t for t in range(0, 400) if s.payment_outage(EPOCH + t)]
    first = [t for t in on if t < s.incident_every_s]
    assert first[0] == s.incident_at_s and len(first) == s.incident_len_s
    assert first[-1] + 1 + 20 < 60  # over, and out of a 20 s rate window, within a minute
    assert s.payment_outage(EPOCH + s.incident_at_s + s.incident_every_s)
    assert not s.payment_outage(EPOCH + s.incident_at_s - 1)


def test_request_luck_depends_on_seed_and_request_only() -> None:
    a = [request_rng(1, "payment", "v1-3").random() for _ in range(2)]
    assert a[0] == a[1]
    assert request_rng(1, "payment", "v1-3").random() != request_rng(2, "payment", "v1-3").random()
    assert request_rng(1, "payment", "v1-3").random() != request_rng(1, "payment", "v1-4").random()


def test_visits_are_reproducible_and_well_formed() -> None:
    visits = [plan_visit(7, n) for n in range(1, 200)]
    assert visits == [plan_visit(7, n) for n in range(1, 200)]
    assert visits != [plan_visit(8, n) for n in range(1, 200)]
    checkouts = [v for v in visits if v.pages[-1].name == "checkout"]
    assert 0.2 < len(checkouts) / len(visits) < 0.5
    for v in visits:
        assert v.pages[0].path == "/"
        products = [p for p in v.pages if p.name == "product"]
        assert 1 <= len(products) <= 3
        assert all(p.path.removeprefix("/product/") in PRODUCTS for p in products)
    body = checkouts[0].pages[-1].body
    assert body is not None and body["order_id"] == f"ord-7-{checkouts[0].number}"
