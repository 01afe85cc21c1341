"""Error budget arithmetic over a fake query function (numbers by hand)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pitwall.slo.budget import SLOService, sli_expr
from pitwall.slo.errors import SLONotFound
from pitwall.slo.model import SLI, SLO

pytestmark = pytest.mark.timeout(10)

DAY = 86_400_000
SLO_A = SLO(id="pay-availability", name="availability", service="pay", period_ms=28 * DAY, objective=99.5,
            sli=SLI(error_query="sum(rate(errors[{{.window}}]))", total_query="sum(rate(total[{{.window}}]))"))


async def _source() -> list[tuple[SLO, str]]:
    return [(SLO_A, "prod/pay")]


def test_sli_expr_renders_the_window() -> None:
    assert sli_expr(SLO_A, 28 * DAY) == "(sum(rate(errors[4w])))\n/\n(sum(rate(total[4w])))"


async def test_arithmetic_and_worst_series() -> None:
    asked: list[str] = []

    def query(expr: str, at_ms: int) -> Sequence[float]:
        asked.append(expr)
        if "[4w]" in expr:
            return [0.002, 0.001]  # two series: the worst counts
        if "[5m]" in expr:
            return [0.0125]
        return []  # nothing recorded yet

    st = await SLOService(_source, query, clock=lambda: 1000.0).slo_status("pay-availability")
    # budget 1 - 0.995 = 0.005; period burn 0.002 / 0.005 = 0.4; remaining 0.6; now 0.0125 / 0.005 = 2.5
    assert st.error_budget == pytest.approx(0.005)
    assert st.burn_rate_period == pytest.approx(0.4) and st.budget_remaining == pytest.approx(0.6)
    assert st.burn_rate_now == pytest.approx(2.5) and not st.breaching
    assert st.period == "4w" and st.at_ms == 1_000_000 and st.source == "prod/pay"
    assert st.arithmetic[0] == "error budget = 1 - objective = 1 - 0.995 = 0.005"
    assert st.arithmetic[2] == "period burn rate = 0.002 / 0.005 = 0.4"
    assert st.recorded["slo:period_burn_rate:ratio"] is None
    assert any('slo:current_burn_rate:ratio{sloth_id="pay-availability"' in q for q in asked)


async def test_no_data_and_unknown_name() -> None:
    svc = SLOService(_source, lambda expr, at: [float("nan")])
    st = await svc.slo_status("pay-availability")
    assert st.error_ratio_period is None and st.budget_remaining is None and st.breaching is False
    assert "no data" in st.arithmetic[1]
    assert st.to_json()["burn_rate_now"] is None
    with pytest.raises(SLONotFound):
        await svc.slo_status("nope")


async def test_calendar_windows_judge_the_period_so_far() -> None:
    from datetime import UTC, datetime

    from pitwall.core.errors import BadData

    asked: list[str] = []

    def query(expr: str, at_ms: int) -> Sequence[float]:
        asked.append(expr)
        return [0.001] if "errors" in expr else []

    # Saturday 2026-12-05 12:00 UTC: the month began 4.5 days ago, the (ISO) week on Monday 30 Nov, 5.5 days ago.
    now = datetime(2026, 12, 5, 12, tzinfo=UTC).timestamp()
    svc = SLOService(_source, query, clock=lambda: now)
    month = await svc.slo_status("pay-availability", calendar="month")
    assert month.window == "calendar-month" and month.period == "4d12h"
    assert any("[4d12h]" in q for q in asked)
    assert month.arithmetic[1] == "error ratio since 2026-12-01T00:00:00Z (4d12h) = 0.001 (query period_error_ratio)"
    assert month.budget_remaining == pytest.approx(1 - 0.001 / 0.005)
    week = await svc.slo_status("pay-availability", calendar="week")
    assert week.window == "calendar-week" and week.period == "5d12h"
    with pytest.raises(BadData, match='calendar: must be "month" or "week"'):
        await svc.slo_status("pay-availability", calendar="year")


async def test_budget_consumed_by_a_window() -> None:
    raw = SLO(id="pay-latency", name="latency", service="pay", period_ms=28 * DAY, objective=99.0,
              sli=SLI(error_ratio_query="slow_ratio[{{.window}}]"))

    async def source() -> list[tuple[SLO, str]]:
        return [(SLO_A, "prod/pay"), (raw, "prod/pay")]

    def query(expr: str, at_ms: int) -> Sequence[float]:
        assert at_ms == 7_200_000  # evaluated at the window's end
        return {"(sum(rate(errors[1h])))": [0.5], "(sum(rate(total[4w])))": [10.0],
                "(slow_ratio[1h])": [0.28]}.get(expr, [])

    svc = SLOService(source, query)
    # events: 0.5/s bad for an hour = 1,800 bad; 10/s over 28 days = 24,192,000 events, 0.5% allowed = 120,960
    use = await svc.consumed("pay-availability", 3_600_000, 7_200_000)
    assert use.consumed == pytest.approx(1800 / 120_960)
    assert use.arithmetic[-1].startswith("budget consumed = 1800 / 120960 = ")
    # a raw ratio: 28% slow for an hour, 1/672 of the period, against a 1% budget
    use = await svc.consumed("pay-latency", 3_600_000, 7_200_000)
    assert use.consumed == pytest.approx(0.28 / 672 / 0.01)
    assert "traffic assumed even" in use.arithmetic[1]
    assert (await svc.consumed("pay-availability", 7_140_000, 7_200_000)).queries["bad_rate_window"] == \
        "(sum(rate(errors[1m])))"  # a minute: the shortest window measured
    with pytest.raises(SLONotFound):
        await svc.consumed("nope", 0, 1)
