"""A/B reports read from metrics: the one code path behind ``/api/releases/v1/abtest``, the ``/releases/abtest``
page and ``pitwall releases abtest`` (a client of the endpoint).

:func:`run_abtest` runs the queries of an :class:`~pitwall.releases.abtest_spec.ABTestSpec` at its ``time``
(default now) through the metrics pillar's ``InstantQuery``, so a remote Prometheus-API backend answers them as
well as the embedded engine; builds the report of :mod:`pitwall.releases.abtest`; and adds the sample-size
estimate (R's ``power.prop.test`` for the spec's ``mde``, ``alpha`` and ``power``), a verdict per treatment and
the arithmetic written out. A query's error, or counts the report refuses, name the field they came from.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pitwall.core.durations import format_duration_ms
from pitwall.core.errors import BadData, ExecutionError
from pitwall.metrics import InstantQuery, QueryResult, labels_string
from pitwall.releases.abtest import (
    MAX_VARIANTS,
    ABReport,
    Comparison,
    Variant,
    ab_report,
    sample_size_per_variant,
)
from pitwall.releases.abtest_spec import ABTestInputError, ABTestSpec, queries

__all__ = ["ABTestResult", "SampleSize", "Verdict", "arithmetic", "run_abtest"]


@dataclass(frozen=True, slots=True)
class SampleSize:
    """Trials each variant needs to detect a relative change ``mde`` of the control's rate."""

    baseline: float
    mde: float
    alpha: float  # Bonferroni-adjusted, as the tests are
    power: float
    per_variant: int

    def to_dict(self) -> dict[str, Any]:
        return {"baselineRate": self.baseline, "mde": self.mde, "alpha": self.alpha, "power": self.power,
                "perVariant": self.per_variant}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a treatment's comparison says: ``better``, ``worse``, ``no-difference`` (enough trials, no
    significant change), ``keep-running`` (not enough trials yet) or ``inconclusive`` (no sample size)."""

    treatment: str
    outcome: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"treatment": self.treatment, "outcome": self.outcome, "text": self.text}


@dataclass
class ABTestResult:
    """The report, the queries as run, the sample-size estimate, the verdicts and the arithmetic."""

    report: ABReport
    spec: ABTestSpec
    at_ms: int
    queries: list[tuple[str, str]]
    sample_size: SampleSize | None
    verdicts: list[Verdict]
    arithmetic: list[str]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = self.report.to_dict()
        by_name = {v.treatment: v.to_dict() for v in self.verdicts}
        for c in out["comparisons"]:
            c["verdict"] = by_name.get(c["treatment"])
        out["notes"] = [*out["notes"], *self.notes]
        out.update({
            "time": self.at_ms / 1000,
            "window": None if self.spec.window_ms is None else format_duration_ms(self.spec.window_ms),
            "queries": [{"field": f, "query": q} for f, q in self.queries],
            "alpha": self.spec.alpha, "power": self.spec.power, "mde": self.spec.mde,
            "sampleSize": None if self.sample_size is None else self.sample_size.to_dict(),
            "verdict": _overall(self.verdicts).to_dict() if self.verdicts else None,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "arithmetic": self.arithmetic,
        })
        return out


async def run_abtest(instant: InstantQuery, spec: ABTestSpec, tenant: str = "default") -> ABTestResult:
    """Query the spec's counts at its time (default now) and judge them."""
    at_ms = spec.at_ms if spec.at_ms is not None else int(time.time() * 1000)
    notes: list[str] = []
    variants = await (_split(instant, spec, at_ms, tenant) if not spec.variants
                      else _queried(instant, spec, at_ms, tenant, notes))
    report = _report(spec, variants)
    size = _sample_size(spec, report, notes)
    verdicts = [_verdict(c, report, size, spec) for c in report.comparisons]
    return ABTestResult(report=report, spec=spec, at_ms=at_ms,
                        queries=[(f, spec.render(q)) for f, q in queries(spec)], sample_size=size,
                        verdicts=verdicts, arithmetic=arithmetic(report, size, spec), notes=notes)


async def _run(instant: InstantQuery, name: str, expr: str, at_ms: int, tenant: str) -> QueryResult:
    """One query off the event loop; its errors name the field."""
    try:
        return await asyncio.to_thread(instant, expr, at_ms, tenant)
    except BadData as e:
        raise ABTestInputError(name, e.message) from None
    except ExecutionError as e:
        raise ExecutionError(f"{name}: {e.message}") from None


async def _split(instant: InstantQuery, spec: ABTestSpec, at_ms: int, tenant: str) -> list[Variant]:
    num, den = await asyncio.gather(
        _run(instant, "numerator", spec.render(spec.numerator), at_ms, tenant),
        _run(instant, "denominator", spec.render(spec.denominator), at_ms, tenant))
    by_num, by_den = _by_label(num, spec.by, "numerator"), _by_label(den, spec.by, "denominator")
    extra = sorted(set(by_num) - set(by_den))
    if extra:
        raise ABTestInputError("numerator", f"variants with a numerator but no denominator: {', '.join(extra)}")
    if len(by_den) > MAX_VARIANTS:
        raise ABTestInputError("denominator", f"{len(by_den)} variants, more than the limit of {MAX_VARIANTS}")
    # Sorted by name: the control defaults to the first, whatever order the engine answered in.
    return [_variant("numerator", name, by_num.get(name, 0.0), trials) for name, trials in sorted(by_den.items())]


def _by_label(res: QueryResult, label: str, name: str) -> dict[str, float]:
    """An instant vector keyed by each series' ``label`` value."""
    if res.result_type != "vector":
        raise ABTestInputError(name, f"the query gives a {res.result_type}, not an instant vector split by {label}")
    out: dict[str, float] = {}
    for labels, values in zip(res.series, res.values, strict=True):
        key = dict(labels).get(label)
        if key is None:
            raise ABTestInputError(name, f"a series has no {label!r} label: {labels_string(labels)} "
                                   f"(aggregate with sum by ({label}))")
        if key in out:
            raise ABTestInputError(name, f"two series for {label}={key!r} (aggregate with sum by ({label}))")
        out[key] = float(values[-1])
    return out


async def _queried(instant: InstantQuery, spec: ABTestSpec, at_ms: int, tenant: str,
                   notes: list[str]) -> list[Variant]:
    fields = queries(spec)
    results = await asyncio.gather(*(_run(instant, f, spec.render(q), at_ms, tenant) for f, q in fields))
    values = [_one(res, f, notes) for (f, _), res in zip(fields, results, strict=True)]
    return [_variant(f"variants[{i}]", v.name, values[2 * i], values[2 * i + 1])
            for i, v in enumerate(spec.variants)]


def _one(res: QueryResult, name: str, notes: list[str]) -> float:
    """The one number of a scalar or a single-series vector; no series counts as 0 (nothing happened)."""
    if res.result_type not in ("vector", "scalar"):
        raise ABTestInputError(name, f"the query gives a {res.result_type}, not one number")
    if not res.series:
        notes.append(f"{name}: no series, counted as 0")
        return 0.0
    if len(res.series) > 1:
        raise ABTestInputError(name, f"the query gives {len(res.series)} series, not one (aggregate with sum(...))")
    return float(res.values[0][-1])


def _variant(name: str, variant: str, successes: float, trials: float) -> Variant:
    try:
        return Variant(variant, successes, trials)
    except ValueError as e:
        raise ABTestInputError(name, str(e)) from None


def _report(spec: ABTestSpec, variants: list[Variant]) -> ABReport:
    names = [v.name for v in variants]
    if spec.control is not None and spec.control not in names:
        raise ABTestInputError("control", f"{spec.control!r} is not among the variants {names}")
    try:
        return ab_report(variants, control=spec.control, confidence=spec.confidence)
    except ValueError as e:  # fewer than two variants found by the queries
        raise ABTestInputError("denominator" if not spec.variants else "variants", str(e)) from None


def _sample_size(spec: ABTestSpec, report: ABReport, notes: list[str]) -> SampleSize | None:
    ctrl = next(v for v in report.variants if v.name == report.control)
    if ctrl.rate is None or not 0 < ctrl.rate < 1:
        notes.append("no sample-size estimate: the control's rate is not strictly between 0 and 1")
        return None
    alpha = spec.alpha / max(1, len(report.comparisons))
    try:
        n = sample_size_per_variant(ctrl.rate, spec.mde, alpha=alpha, power=spec.power)
    except ValueError as e:
        notes.append(f"no sample-size estimate: {e}")
        return None
    return SampleSize(ctrl.rate, spec.mde, alpha, spec.power, n)


def _verdict(c: Comparison, report: ABReport, size: SampleSize | None, spec: ABTestSpec) -> Verdict:
    trials = {v.name: v.trials for v in report.variants}
    p = f"p = {c.p_adjusted:.4g}{' (adjusted)' if len(report.comparisons) > 1 else ''}"
    if c.significant:
        outcome = "better" if c.difference > 0 else "worse"
        return Verdict(c.treatment, outcome, f"{c.treatment} converts {outcome} than {c.control}: "
                       f"{c.difference * 100:+.2f} points, {p} < {spec.alpha:g}")
    if size is None:
        return Verdict(c.treatment, "inconclusive", f"no significant difference ({p}) and no sample-size estimate")
    short = min(trials[c.treatment], trials[c.control])
    if short >= size.per_variant:
        return Verdict(c.treatment, "no-difference",
                       f"no significant difference ({p}) with the {size.per_variant} trials per variant that "
                       f"detect a {spec.mde:+.0%} change at power {spec.power:g}")
    return Verdict(c.treatment, "keep-running",
                   f"not significant yet ({p}); {size.per_variant} trials per variant detect a {spec.mde:+.0%} "
                   f"change at power {spec.power:g}, the smaller arm has {short:g} ({short / size.per_variant:.0%})")


_RANK = {"better": 0, "worse": 1, "keep-running": 2, "inconclusive": 3, "no-difference": 4}


def _overall(verdicts: Sequence[Verdict]) -> Verdict:
    """The most decisive comparison: a winner, then a loser, then one that needs more trials."""
    return min(verdicts, key=lambda v: _RANK[v.outcome])


def arithmetic(report: ABReport, size: SampleSize | None, spec: ABTestSpec) -> list[str]:
    """The report's numbers written out as formulas, for a reader to check by hand."""
    level = f"{spec.confidence * 100:.4g}%"
    lines = [f"{v.name}: rate = {v.successes:g} / {v.trials:g} = {_f(v.rate)}; Wilson {level} interval "
             f"[{_f(v.lower)}, {_f(v.upper)}]" for v in report.variants if v.rate is not None]
    counts = {v.name: (v.successes, v.trials) for v in report.variants}
    for c in report.comparisons:
        lines += _comparison_lines(c, counts[c.control], counts[c.treatment], len(report.comparisons), spec)
    if size is not None:
        p2 = size.baseline * (1 + size.mde)
        lines.append(f"sample size (R's power.prop.test): p1 = {_f(size.baseline)} (the control's rate), "
                     f"p2 = p1 × (1 {'+' if size.mde > 0 else '−'} {abs(size.mde):g}) = {_f(p2)}, "
                     f"p̄ = (p1 + p2) / 2; n = (z(1 − α/2) √(2 p̄ (1 − p̄)) + z(power) √(p1 (1 − p1) + p2 (1 − p2)))² "
                     f"/ (p2 − p1)² with α = {size.alpha:.4g}, power = {size.power:g} → {size.per_variant} per variant")
    return lines


def _comparison_lines(c: Comparison, ctrl: tuple[float, float], treat: tuple[float, float], k: int,
                      spec: ABTestSpec) -> list[str]:
    (x1, n1), (x2, n2) = ctrl, treat
    p1, p2 = x1 / n1, x2 / n2
    head = f"{c.treatment} vs {c.control}"
    if c.test == "z":
        pooled = (x1 + x2) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        test = (f"{head}: pooled p = ({x2:g} + {x1:g}) / ({n2:g} + {n1:g}) = {_f(pooled)}; "
                f"SE = √(p (1 − p) (1/{n2:g} + 1/{n1:g})) = {_f(se)}; z = ({_f(p2)} − {_f(p1)}) / SE = "
                f"{_f(c.z)}; p = 2 (1 − Φ(|z|)) = {c.p_value:.4g} (two-proportion z-test, R's "
                f"prop.test(correct = FALSE))")
    else:
        test = (f"{head}: a cell of the 2×2 table [[{x2:g}, {n2 - x2:g}], [{x1:g}, {n1 - x1:g}]] expects fewer "
                f"than 5 counts, so Fisher's exact test: p = {c.p_value:.4g}")
    adjusted = f"p × {k} = {c.p_adjusted:.4g} (Bonferroni over {k} treatments)" if k > 1 else f"p = {c.p_value:.4g}"
    sig = "<" if c.significant else "≥"
    lines = [test, f"{head}: {adjusted} {sig} α = {spec.alpha:.4g}: "
                   f"{'significant' if c.significant else 'not significant'}",
             f"{head}: difference = {_f(p2)} − {_f(p1)} = {_f(c.difference)}; interval ± z √(p1 (1 − p1)/{n1:g} + "
             f"p2 (1 − p2)/{n2:g}) = [{_f(c.difference_lower)}, {_f(c.difference_upper)}]"]
    if c.lift is not None:
        lines.append(f"{head}: lift = {_f(p2)} / {_f(p1)} − 1 = {c.lift:+.2%}; Katz log interval "
                     f"exp(ln(p2/p1) ± z √(1/{x2:g} − 1/{n2:g} + 1/{x1:g} − 1/{n1:g})) − 1 = "
                     f"[{_pct(c.lift_lower)}, {_pct(c.lift_upper)}]")
    return lines


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.5g}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:+.2%}"
