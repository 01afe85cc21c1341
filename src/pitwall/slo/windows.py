"""Multi-window multi-burn-rate alert windows per SLO period (Sloth's ``AlertWindows``).

Sloth ships two catalogs, Google's SRE workbook windows for 30 and 28 days:
page when 2% of the budget burns in 1h (checked over 5m too) or 5% in 6h
(30m); ticket when 10% burns in 1d (2h) or 10% in 3d (6h). The burn-rate
factor of a window is ``budget% * period_hours / 100 / long_window_hours``:
14.4, 6, 3 and 1 over 30 days. A directory of ``AlertWindows`` files
replaces the catalog (``--slo-period-windows-path``).

Sloth refuses a period with no catalog entry. pitwall, unless ``strict``,
scales the 30-day windows to that period instead (each window times
``period / 30d``, rounded to the minute, at least 1m), which keeps the
budget percentages and therefore the burn-rate factors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from pitwall.core.durations import parse_duration_ms
from pitwall.slo.errors import SpecError
from pitwall.slo.promfmt import prom_duration as format_duration_ms

__all__ = ["MWMBAlert", "MWMBAlertGroup", "Window", "Windows", "WindowsCatalog", "burn_rate_factor"]

_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS


@dataclass(frozen=True)
class Window:
    error_budget_percent: float
    short_ms: int
    long_ms: int


@dataclass(frozen=True)
class Windows:
    period_ms: int
    page_quick: Window
    page_slow: Window
    ticket_quick: Window
    ticket_slow: Window


@dataclass(frozen=True)
class MWMBAlert:
    """One window pair with its burn-rate factor; ``error_budget`` in percent (100 - objective)."""

    short_ms: int
    long_ms: int
    burn_rate_factor: float
    error_budget: float
    severity: str


@dataclass(frozen=True)
class MWMBAlertGroup:
    page_quick: MWMBAlert
    page_slow: MWMBAlert
    ticket_quick: MWMBAlert
    ticket_slow: MWMBAlert

    def windows_ms(self) -> list[int]:
        """Every distinct window, shortest first (the SLI recordings needed)."""
        ws = {w for a in (self.page_quick, self.page_slow, self.ticket_quick, self.ticket_slow)
              for w in (a.short_ms, a.long_ms)}
        return sorted(ws)


def _hours(ms: int) -> float:
    # Go's Duration.Hours(): whole hours plus the remainder, in that order of float operations.
    return float(ms // _HOUR_MS) + float((ms % _HOUR_MS) * 1_000_000) / (60 * 60 * 1e9)


def burn_rate_factor(period_ms: int, error_budget_percent: float, long_ms: int) -> float:
    """How many times faster than "exactly on budget" burning ``error_budget_percent`` in ``long_ms`` is."""
    hours_required = error_budget_percent * _hours(period_ms) / 100
    return hours_required / _hours(long_ms)


def _google(period_ms: int) -> Windows:
    m = 60_000
    return Windows(period_ms,
                   Window(2, 5 * m, 60 * m), Window(5, 30 * m, 6 * 60 * m),
                   Window(10, 2 * 60 * m, 24 * 60 * m), Window(10, 6 * 60 * m, 3 * 24 * 60 * m))


class WindowsCatalog:
    """Windows per SLO period: Sloth's defaults, or the ``AlertWindows`` files of a directory."""

    def __init__(self, windows: dict[int, Windows] | None = None, *, strict: bool = False) -> None:
        self.windows = windows if windows is not None else {30 * _DAY_MS: _google(30 * _DAY_MS),
                                                            28 * _DAY_MS: _google(28 * _DAY_MS)}
        self.strict = strict

    @classmethod
    def from_dir(cls, path: str | Path, *, strict: bool = True) -> WindowsCatalog:
        """Every ``*.yaml``/``*.yml`` below ``path`` (replacing the defaults, as Sloth does)."""
        found: dict[int, Windows] = {}
        files = sorted(p for p in Path(path).rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        for f in files:
            w = load_windows(f.read_text(), str(f))
            if w.period_ms in found and found[w.period_ms] != w:
                raise SpecError(f"{f}: {format_duration_ms(w.period_ms)} slo period is already loaded")
            found[w.period_ms] = w
        return cls(found, strict=strict)

    def get(self, period_ms: int) -> Windows:
        """The windows for ``period_ms``; scaled from 30d when absent unless strict."""
        w = self.windows.get(period_ms)
        if w is not None:
            return w
        base = self.windows.get(30 * _DAY_MS)
        if self.strict or base is None:
            raise SpecError(f"the {format_duration_ms(period_ms)} SLO period time window is not supported")
        return _scaled(base, period_ms)

    def alerts(self, period_ms: int, objective: float) -> MWMBAlertGroup:
        """The four window pairs of an SLO (Sloth's ``GenerateMWMBAlerts``)."""
        w = self.get(period_ms)
        budget = 100 - objective

        def one(win: Window, severity: str) -> MWMBAlert:
            return MWMBAlert(win.short_ms, win.long_ms,
                             burn_rate_factor(w.period_ms, win.error_budget_percent, win.long_ms), budget, severity)

        return MWMBAlertGroup(one(w.page_quick, "page"), one(w.page_slow, "page"),
                              one(w.ticket_quick, "ticket"), one(w.ticket_slow, "ticket"))


def _scaled(base: Windows, period_ms: int) -> Windows:
    def s(ms: int) -> int:
        return max(60_000, round(ms * period_ms / base.period_ms / 60_000) * 60_000)

    def win(w: Window) -> Window:
        return replace(w, short_ms=s(w.short_ms), long_ms=s(w.long_ms))

    return Windows(period_ms, win(base.page_quick), win(base.page_slow), win(base.ticket_quick),
                   win(base.ticket_slow))


def load_windows(text: str, where: str = "windows") -> Windows:
    """One ``AlertWindows`` document (apiVersion ``sloth.slok.dev/v1``)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{where}: could not unmarshal YAML: {e}") from None
    if not isinstance(doc, dict) or doc.get("apiVersion") != "sloth.slok.dev/v1" or doc.get("kind") != "AlertWindows":
        raise SpecError(f"{where}: invalid spec version: want apiVersion sloth.slok.dev/v1, kind AlertWindows")
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict) or not all(isinstance(spec.get(k) or {}, dict) for k in ("page", "ticket")):
        raise SpecError(f"{where}: spec, spec.page and spec.ticket must be mappings")

    def dur(v: Any, path: str) -> int:
        try:
            return parse_duration_ms(str(v)) if v is not None else 0
        except ValueError as e:
            raise SpecError(f"{where}: spec.{path}: {e}") from None

    def win(sev: str, speed: str) -> Window:
        w = ((spec.get(sev) or {}).get(speed)) or {}
        path = f"{sev}.{speed}"
        try:
            pct = float(w.get("errorBudgetPercent") or 0)
        except (TypeError, ValueError):
            raise SpecError(f"{where}: spec.{path}.errorBudgetPercent: not a number: "
                            f"{w.get('errorBudgetPercent')!r}") from None
        out = Window(pct, dur(w.get("shortWindow"), path + ".shortWindow"),
                     dur(w.get("longWindow"), path + ".longWindow"))
        for value, name in ((out.long_ms, "longWindow"), (out.short_ms, "shortWindow"),
                            (out.error_budget_percent, "errorBudgetPercent")):
            if not value:
                raise SpecError(f"{where}: spec.{path}.{name} is required")
        return out

    period = dur(spec.get("sloPeriod"), "sloPeriod")
    if not period:
        raise SpecError(f"{where}: spec.sloPeriod is required")
    return Windows(period, win("page", "quick"), win("page", "slow"), win("ticket", "quick"), win("ticket", "slow"))
