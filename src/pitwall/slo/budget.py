"""Error budgets of the loaded SLOs, computed with PromQL through the metrics query interface.

Rolling windows (Sloth's): over the SLO period ``P`` ending now,

    error budget        = 1 - objective
    error ratio (P)     = the SLI rendered with window P          (events: errors[P] / total[P])
    period burn rate    = error ratio (P) / error budget
    budget remaining    = 1 - period burn rate                    (may go below 0)
    burn rate now       = error ratio (short window) / error budget  (short = the page alert's, 5m for 30d)

Calendar windows (``calendar="month"|"week"``, UTC, weeks from Monday) judge the same
ratio over the calendar period so far: ``P`` = now - the period's start.

Each ``SLOStatus`` carries these lines with the numbers filled in
(``arithmetic``) and the queries that produced them, plus what the generated
recording rules last recorded (``slo:current_burn_rate:ratio``,
``slo:period_burn_rate:ratio``, ``slo:period_error_budget_remaining:ratio``)
when the rule manager has run them. The SLI is evaluated directly, so the
figures are right from the first minute; the recordings average the 5m
ratio over the period as Sloth does, so they converge to it as history fills.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pitwall.core.errors import BadData
from pitwall.slo.errors import SLONotFound
from pitwall.slo.generate import GenerateOptions, label_filter, sli_metric
from pitwall.slo.model import SLO
from pitwall.slo.promfmt import prom_duration
from pitwall.slo.validate import render_window
from pitwall.slo.windows import WindowsCatalog

__all__ = ["BudgetUse", "SLOService", "SLOSource", "SLOStatus", "SLOStatusQuery", "ScalarQuery", "calendar_start_ms", "sli_expr"]


@dataclass
class SLOStatus:
    """The SLO status other capabilities gate on (``breaching`` once the budget is spent)."""

    name: str  # sloth_id: "<service>-<slo>"
    service: str
    slo: str
    objective: float  # ratio, 0.999
    error_budget: float
    period: str  # the span judged: "30d" rolling, the time since the period's start for a calendar one
    window: str  # "rolling", "calendar-month" or "calendar-week"
    at_ms: int
    error_ratio_period: float | None
    error_ratio_now: float | None
    burn_rate_period: float | None
    burn_rate_now: float | None
    budget_remaining: float | None  # ratio of the budget left, 1 = untouched, <0 = overspent
    breaching: bool
    arithmetic: list[str] = field(default_factory=list)
    queries: dict[str, str] = field(default_factory=dict)
    recorded: dict[str, float | None] = field(default_factory=dict)
    source: str = ""  # "namespace/name" of the PrometheusServiceLevel
    notes: list[str] = field(default_factory=list)  # e.g. an interpolated latency threshold

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


# Runs a PromQL expression at a time (ms) and returns its sample values (one per series).
ScalarQuery = Callable[[str, int], Sequence[float]]
# The loaded SLOs with the "namespace/name" of the object each came from.
SLOSource = Callable[[], Awaitable[list[tuple[SLO, str]]]]


class SLOStatusQuery(Protocol):
    """What the release and chaos gates are handed: ``await slo_status("myservice-requests-availability")``."""

    async def __call__(self, name: str) -> SLOStatus: ...


def sli_expr(slo: SLO, window_ms: int) -> str:
    """The SLI error ratio over ``window_ms`` as Sloth's recording rule computes it."""
    w = prom_duration(window_ms)
    if slo.sli.is_events:
        return render_window(f"({slo.sli.error_query})\n/\n({slo.sli.total_query})", w)
    return render_window(f"({slo.sli.error_ratio_query})", w)


def calendar_start_ms(calendar: str, at_ms: int) -> int:
    """Start (UTC) of the calendar ``month`` or ``week`` (ISO, from Monday) holding ``at_ms``."""
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if calendar == "month":
        start = day.replace(day=1)
    elif calendar == "week":
        start = day - timedelta(days=day.weekday())
    else:
        raise BadData(f'calendar: must be "month" or "week", got {calendar!r}')
    return int(start.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt(x: float | None) -> str:
    return "no data" if x is None else format(x, ".10g")


def _one(values: Sequence[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else None  # several series: the worst one


@dataclass
class BudgetUse:
    """The share of an SLO's error budget that ``[start_ms, end_ms]`` spent (an incident's window)."""

    name: str
    start_ms: int
    end_ms: int
    consumed: float | None  # 0.25 = a quarter of the period's budget; None when the window has no data
    arithmetic: list[str] = field(default_factory=list)
    queries: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


MIN_WINDOW_MS = 60_000  # shorter windows are measured over their last minute (rate() needs two samples)


class SLOService:
    """Computes ``SLOStatus`` for the SLOs ``source`` yields; ``query`` evaluates PromQL."""

    def __init__(self, source: SLOSource, query: ScalarQuery, *, windows: WindowsCatalog | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.query = query
        self.windows = windows or GenerateOptions().windows
        self.clock = clock

    async def list(self, calendar: str = "") -> list[SLOStatus]:
        return [await self._status(s, src, calendar)
                for s, src in sorted(await self.source(), key=lambda x: x[0].id)]

    async def slo_status(self, name: str, calendar: str = "") -> SLOStatus:
        """The status of SLO ``name`` (its sloth_id); ``SLONotFound`` when no loaded SLO has it.

        ``calendar`` ("month" or "week", UTC) judges the budget over the calendar period so far instead
        of the rolling period."""
        for s, src in await self.source():
            if s.id == name:
                return await self._status(s, src, calendar)
        raise SLONotFound(f"SLO {name!r} not found")

    async def consumed(self, name: str, start_ms: int, end_ms: int) -> BudgetUse:
        """The share of SLO ``name``'s error budget (over its rolling period ending at ``end_ms``) spent in
        ``[start_ms, end_ms]``: the window's bad events over the period's allowance of bad events. With an
        events SLI both are counted; with a raw error-ratio SLI the window's ratio is weighted by its share of
        the period (traffic assumed even), as the arithmetic says."""
        slo = next((s for s, _ in await self.source() if s.id == name), None)
        if slo is None:
            raise SLONotFound(f"SLO {name!r} not found")
        if end_ms <= start_ms:
            raise BadData("end must be after start")
        budget = 1 - slo.objective / 100
        win_ms = max(MIN_WINDOW_MS, (end_ms - start_ms) // 1000 * 1000)
        w, p = prom_duration(win_ms), prom_duration(slo.period_ms)
        use = BudgetUse(name, start_ms, end_ms, None)
        if slo.sli.is_events:
            q_bad = render_window(f"({slo.sli.error_query})", w)
            q_all = render_window(f"({slo.sli.total_query})", p)
            bad, total = await self._run(q_bad, end_ms), await self._run(q_all, end_ms)
            bad_n = None if bad is None else bad * win_ms / 1000
            allowed = None if total is None else total * slo.period_ms / 1000 * budget
            if bad_n is not None and allowed:
                use.consumed = bad_n / allowed
            use.queries = {"bad_rate_window": q_bad, "total_rate_period": q_all}
            use.arithmetic = [
                f"bad events in the window ({w}) = {_fmt(bad)}/s x {win_ms / 1000:g} s = {_fmt(bad_n)}",
                f"events in the period ({p}) = {_fmt(total)}/s x {slo.period_ms / 1000:g} s",
                f"bad events the budget allows = events x (1 - {_fmt(slo.objective / 100)}) = {_fmt(allowed)}",
                f"budget consumed = {_fmt(bad_n)} / {_fmt(allowed)} = {_fmt(use.consumed)}"]
        else:
            q = sli_expr(slo, win_ms)
            ratio = await self._run(q, end_ms)
            share = win_ms / slo.period_ms
            if ratio is not None:
                use.consumed = ratio * share / budget
            use.queries = {"error_ratio_window": q}
            use.arithmetic = [
                f"error ratio over the window ({w}) = {_fmt(ratio)}",
                f"the window's share of the period ({p}) = {_fmt(share)} (traffic assumed even)",
                f"budget consumed = {_fmt(ratio)} x {_fmt(share)} / {_fmt(budget)} = {_fmt(use.consumed)}"]
        return use

    async def consumed_by_service(self, service: str, start_ms: int, end_ms: int) -> Sequence[BudgetUse]:
        """``consumed`` for every SLO of ``service`` (Sloth's ``service`` field), by SLO id."""
        ids = sorted(s.id for s, _ in await self.source() if s.service == service)
        return [await self.consumed(i, start_ms, end_ms) for i in ids]

    async def _run(self, expr: str, at_ms: int) -> float | None:
        return _one(await asyncio.to_thread(self.query, expr, at_ms))

    async def _status(self, slo: SLO, src: str, calendar: str = "") -> SLOStatus:
        at_ms = int(self.clock() * 1000)
        objective = slo.objective / 100
        budget = 1 - objective
        short_ms = self.windows.alerts(slo.period_ms, slo.objective).page_quick.short_ms
        window, span_ms, since = "rolling", slo.period_ms, ""
        if calendar:
            start_ms = calendar_start_ms(calendar, at_ms)
            window, since = f"calendar-{calendar}", _iso(start_ms)
            span_ms = max(60_000, (at_ms - start_ms) // 1000 * 1000)  # whole seconds, at least a minute
        period, short = prom_duration(span_ms), prom_duration(short_ms)
        q_period, q_now = sli_expr(slo, span_ms), sli_expr(slo, short_ms)
        ratio_p, ratio_now = await self._run(q_period, at_ms), await self._run(q_now, at_ms)
        burn_p = None if ratio_p is None else ratio_p / budget
        burn_now = None if ratio_now is None else ratio_now / budget
        remaining = None if burn_p is None else 1 - burn_p
        f = label_filter({"sloth_id": slo.id, "sloth_service": slo.service, "sloth_slo": slo.name})
        recorded = {
            "slo:current_burn_rate:ratio": await self._run(f"slo:current_burn_rate:ratio{f}", at_ms),
            "slo:period_burn_rate:ratio": await self._run(f"slo:period_burn_rate:ratio{f}", at_ms),
            "slo:period_error_budget_remaining:ratio": await self._run(
                f"slo:period_error_budget_remaining:ratio{f}", at_ms),
            sli_metric(slo.period_ms): await self._run(f"{sli_metric(slo.period_ms)}{f}", at_ms),
        }
        arithmetic = [
            f"error budget = 1 - objective = 1 - {_fmt(objective)} = {_fmt(budget)}",
            (f"error ratio since {since} ({period}) = {_fmt(ratio_p)} (query period_error_ratio)" if since else
             f"error ratio over the last {period} = {_fmt(ratio_p)} (query period_error_ratio)"),
            f"period burn rate = {_fmt(ratio_p)} / {_fmt(budget)} = {_fmt(burn_p)}",
            f"budget remaining = 1 - {_fmt(burn_p)} = {_fmt(remaining)}"
            + ("" if remaining is None else f" ({_fmt(round(remaining * 100, 4))}% of the budget left)"),
            f"error ratio over the last {short} = {_fmt(ratio_now)} (query current_error_ratio)",
            f"burn rate now = {_fmt(ratio_now)} / {_fmt(budget)} = {_fmt(burn_now)}",
        ]
        return SLOStatus(
            name=slo.id, service=slo.service, slo=slo.name, objective=objective, error_budget=budget,
            period=period, window=window, at_ms=at_ms, error_ratio_period=ratio_p, error_ratio_now=ratio_now,
            burn_rate_period=burn_p, burn_rate_now=burn_now, budget_remaining=remaining,
            breaching=remaining is not None and remaining <= 0, arithmetic=arithmetic,
            queries={"period_error_ratio": q_period, "current_error_ratio": q_now}, recorded=recorded, source=src,
            notes=list(slo.notes))
