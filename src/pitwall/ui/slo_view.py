"""What the SLO pages show, arranged from the SLO capability's error budgets.

``SLOSource`` is the UI's read interface onto SLOs (the composition root hands
in ``pitwall.slo.SLOService``, the same object the budget API
``/api/slo/v1/slos`` serves). The charts are PromQL fed to the UI's chart
endpoint: the budget API's own queries (``SLOStatus.queries``) put into its
own arithmetic (remaining = 1 - error ratio / budget, burn rate = error ratio
/ budget), next to what Sloth's generated recording rules recorded. Everything
here is pure functions, tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode

if TYPE_CHECKING:
    from pitwall.slo import BudgetUse, SLOStatus

__all__ = [
    "ChartSpec",
    "SLORow",
    "SLOSource",
    "budget_chart",
    "burn_rate_chart",
    "service_incidents",
    "slo_alerts",
    "slo_row",
]

Obj = dict[str, Any]
CHART_SRC = "/ui/api/chart?"


class SLOSource(Protocol):
    """The reads of the SLO pages (``pitwall.slo.SLOService``)."""

    async def list(self, calendar: str = "") -> list[SLOStatus]:
        """Every loaded SLO's status."""
        ...

    async def slo_status(self, name: str, calendar: str = "") -> SLOStatus:
        """One SLO's status by sloth id; ``SLONotFound`` when absent."""
        ...

    async def consumed(self, name: str, start_ms: int, end_ms: int) -> BudgetUse:
        """The share of the budget ``[start_ms, end_ms]`` spent."""
        ...


@dataclass(frozen=True)
class SLORow:
    """One SLO at a glance."""

    id: str  # sloth_id: "<service>-<slo>"
    namespace: str  # of the PrometheusServiceLevel it came from
    object: str  # its name
    service: str
    slo: str
    objective: float  # ratio
    period: str
    window: str
    remaining: float | None
    burn_now: float | None
    burn_period: float | None
    state: str  # "ok", "burning" (faster than the budget allows), "exhausted", "no data"
    href: str


def _state(s: SLOStatus) -> str:
    if s.budget_remaining is None:
        return "no data"
    if s.breaching:
        return "exhausted"
    return "burning" if (s.burn_rate_now or 0) > 1 else "ok"


def slo_row(s: SLOStatus) -> SLORow:
    """The row of one SLO status."""
    ns, _, obj = s.source.partition("/")
    return SLORow(id=s.name, namespace=ns, object=obj, service=s.service, slo=s.slo, objective=s.objective,
                  period=s.period, window=s.window, remaining=s.budget_remaining, burn_now=s.burn_rate_now,
                  burn_period=s.burn_rate_period, state=_state(s),
                  href=f"/slos/{quote(ns or '-', safe='')}/{quote(s.name, safe='')}")


def _num(x: float) -> str:
    return format(x, ".10g")


def _selector(s: SLOStatus) -> str:
    def q(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"')

    return f'{{sloth_id="{q(s.name)}",sloth_service="{q(s.service)}",sloth_slo="{q(s.slo)}"}}'


@dataclass(frozen=True)
class ChartSpec:
    """A chart: its title, its series (PromQL with legends) and the URL the chart script loads."""

    title: str
    unit: str
    series: list[tuple[str, str]]  # (legend, expr)
    src: str


def _chart(title: str, unit: str, series: list[tuple[str, str]], rng: dict[str, str]) -> ChartSpec:
    pairs = [p for legend, expr in series for p in (("expr", expr), ("legend", legend))]
    return ChartSpec(title, unit, series, CHART_SRC + urlencode([*pairs, *rng.items()]))


def _range(s: SLOStatus, rng: dict[str, str] | None) -> dict[str, str]:
    return rng or {"from": f"now-{s.period}", "to": "now"}


def budget_chart(s: SLOStatus, rng: dict[str, str] | None = None) -> ChartSpec:
    """Remaining error budget over ``rng`` (default: the SLO's period up to now): the budget API's
    arithmetic evaluated at each step (``1 - period error ratio / budget``) and Sloth's
    ``slo:period_error_budget_remaining:ratio``."""
    computed = f"1 - (\n{s.queries['period_error_ratio']}\n) / {_num(s.error_budget)}"
    return _chart("Error budget remaining (1 = untouched, 0 = spent)", "ratio",
                  [("remaining (from the SLI)", computed),
                   ("remaining (recording rule)", f"slo:period_error_budget_remaining:ratio{_selector(s)}")],
                  _range(s, rng))


def burn_rate_chart(s: SLOStatus, rng: dict[str, str] | None = None) -> ChartSpec:
    """Burn rate over the period: ``current error ratio / budget`` (1 spends the budget exactly over the
    period) and Sloth's ``slo:current_burn_rate:ratio``."""
    computed = f"(\n{s.queries['current_error_ratio']}\n) / {_num(s.error_budget)}"
    return _chart("Burn rate (1 = spends the budget exactly over the period)", "×",
                  [("burn rate (from the SLI)", computed),
                   ("burn rate (recording rule)", f"slo:current_burn_rate:ratio{_selector(s)}")],
                  _range(s, rng))


def slo_alerts(slo_id: str, rules: list[Any], alerts: list[Any]) -> tuple[list[Any], list[Any]]:
    """The SLO's generated alerting rules (group ``sloth-slo-alerts-<id>``) and its firing or pending
    alerts (those from these rules, or labelled with its ``sloth_id``)."""
    group = f"sloth-slo-alerts-{slo_id}"
    mine = [r for r in rules if r.group == group and r.kind == "alerting"]
    names = {r.name for r in mine}
    firing = [a for a in alerts if a.labels.get("sloth_id") == slo_id
              or (a.name in names and a.labels.get("sloth_id", slo_id) == slo_id)]
    return mine, firing


def _ns(iso: Any) -> int:
    if not isinstance(iso, str) or not iso:
        return 0
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return 0


MAX_INCIDENT_BUDGETS = 50  # incidents on one SLO page whose budget use is computed (two queries each)


def incident_window(incident: Obj, start_ms: int, end_ms: int) -> tuple[int, int]:
    """The part of ``[start_ms, end_ms]`` (the SLO's period) during which ``incident`` was open."""
    created, resolved = _ns(incident.get("created_at")) // 1_000_000, _ns(incident.get("resolved_at")) // 1_000_000
    return max(created, start_ms), min(resolved or end_ms, end_ms)


def service_incidents(incidents: list[Obj], service: str, start_ms: int, end_ms: int) -> list[Obj]:
    """Incidents about ``service`` (the PagerDuty service, or the service the alerts named) open at
    some time in ``[start_ms, end_ms]``."""
    out = []
    for i in incidents:
        names = {(i.get("service") or {}).get("summary"), (i.get("pitwall") or {}).get("service")}
        if service not in names:
            continue
        created, resolved = _ns(i.get("created_at")), _ns(i.get("resolved_at"))
        if created <= end_ms * 1_000_000 and (not resolved or resolved >= start_ms * 1_000_000):
            out.append(i)
    return out
