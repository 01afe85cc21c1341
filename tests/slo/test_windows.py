"""Alert windows: Sloth's catalogs, burn-rate factors, AlertWindows files, scaling for other periods."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitwall.slo.errors import SpecError
from pitwall.slo.windows import WindowsCatalog, burn_rate_factor, load_windows

pytestmark = pytest.mark.timeout(10)

M, H, D = 60_000, 3_600_000, 86_400_000


def _factors(cat: WindowsCatalog, period: int) -> list[float]:
    a = cat.alerts(period, 99.9)
    return [round(x.burn_rate_factor, 9) for x in (a.page_quick, a.page_slow, a.ticket_quick, a.ticket_slow)]


def test_google_windows_give_the_workbook_factors() -> None:
    cat = WindowsCatalog()
    assert _factors(cat, 30 * D) == [14.4, 6, 3, 1]
    # 28 days: 2% of 672h in 1h = 13.44; 5% in 6h = 5.6; 10% in 1d = 2.8; 10% in 3d = 0.9333...
    assert _factors(cat, 28 * D) == [13.44, 5.6, 2.8, 0.933333333]
    assert cat.alerts(30 * D, 99.9).windows_ms() == [5 * M, 30 * M, H, 2 * H, 6 * H, D, 3 * D]
    assert burn_rate_factor(30 * D, 2, H) == 14.4


def test_other_periods_scale_the_30d_windows_unless_strict() -> None:
    a = WindowsCatalog().alerts(7 * D, 99)
    # 1h * 7/30 = 14m, 6h -> 1h24m, 1d -> 5h36m, 3d -> 16h48m; 5m -> 1m10s rounds to 1m, 30m -> 7m, 2h -> 28m
    assert (a.page_quick.short_ms, a.page_quick.long_ms) == (1 * M, 14 * M)
    assert (a.page_slow.short_ms, a.page_slow.long_ms) == (7 * M, 84 * M)
    assert (a.ticket_quick.short_ms, a.ticket_quick.long_ms) == (28 * M, 336 * M)
    assert a.ticket_slow.long_ms == 1008 * M
    assert _factors(WindowsCatalog(), 7 * D) == [14.4, 6, 3, 1]
    with pytest.raises(SpecError, match="the 1w SLO period time window is not supported"):
        WindowsCatalog(strict=True).alerts(7 * D, 99)


def test_windows_files(tmp_path: Path) -> None:
    good = """apiVersion: sloth.slok.dev/v1
kind: AlertWindows
spec:
  sloPeriod: 7d
  page:
    quick: {errorBudgetPercent: 8, shortWindow: 5m, longWindow: 1h}
    slow: {errorBudgetPercent: 12.5, shortWindow: 30m, longWindow: 6h}
  ticket:
    quick: {errorBudgetPercent: 20, shortWindow: 2h, longWindow: 24h}
    slow: {errorBudgetPercent: 42, shortWindow: 6h, longWindow: 72h}
"""
    (tmp_path / "7d.yaml").write_text(good)
    cat = WindowsCatalog.from_dir(tmp_path)
    assert _factors(cat, 7 * D) == [13.44, 3.5, 1.4, 0.98]
    with pytest.raises(SpecError, match="the 30d SLO period time window is not supported"):
        cat.alerts(30 * D, 99)  # a directory replaces the defaults
    with pytest.raises(SpecError, match=r"w.yaml: spec.page.slow.longWindow: not a valid duration string"):
        load_windows(good.replace("longWindow: 6h", "longWindow: six"), "w.yaml")
    with pytest.raises(SpecError, match=r"spec.ticket.quick.errorBudgetPercent is required"):
        load_windows(good.replace("errorBudgetPercent: 20, ", ""), "w.yaml")
    with pytest.raises(SpecError, match="invalid spec version"):
        load_windows(good.replace("AlertWindows", "Windows"), "w.yaml")
    (tmp_path / "other.yml").write_text(good.replace("errorBudgetPercent: 8", "errorBudgetPercent: 9"))
    with pytest.raises(SpecError, match="1w slo period is already loaded"):
        WindowsCatalog.from_dir(tmp_path)


def test_windows_file_with_a_bad_percent() -> None:
    text = """apiVersion: sloth.slok.dev/v1
kind: AlertWindows
spec:
  sloPeriod: 7d
  page: {quick: {errorBudgetPercent: lots, shortWindow: 5m, longWindow: 1h}}
"""
    with pytest.raises(SpecError, match=r"spec\.page\.quick\.errorBudgetPercent: not a number: 'lots'"):
        load_windows(text, "w.yaml")
    with pytest.raises(SpecError, match="must be mappings"):
        load_windows(text.replace("page: {quick", "page: [{quick").replace("1h}}", "1h}}]"), "w.yaml")
