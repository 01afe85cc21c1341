"""A/B reports for experiments that are not canaries: did a variant convert better?

Input is per-variant counts: successes out of trials (orders out of visits), or
any ratio of two PromQL results split by a variant label, e.g. the vectors of
``sum by (variant) (increase(checkout_total[7d]))`` and
``sum by (variant) (increase(sessions_total[7d]))`` handed to
:func:`variants_from_ratio`. Each treatment is compared with the control by the
two-proportion z-test (pooled; R's ``prop.test(correct = FALSE)``), or by
Fisher's exact test when a cell of the 2x2 table expects fewer than 5 counts;
p-values are Bonferroni-adjusted for the number of treatments. The difference
comes with a Wald interval, the relative lift with the Katz log interval of the
rate ratio, each rate with a Wilson interval, and :func:`sample_size_per_variant`
says how many trials each variant needs (R's ``power.prop.test``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pitwall.releases._stats import fisher_exact_2x2, pnorm, qnorm

__all__ = [
    "ABReport",
    "Comparison",
    "Variant",
    "VariantSummary",
    "ab_report",
    "compare",
    "sample_size_per_variant",
    "two_proportion_ztest",
    "variants_from_ratio",
    "wilson_interval",
]

MAX_VARIANTS = 50
FISHER_EXPECTED_MIN = 5.0  # Cochran's rule for the chi-square / z approximation

Test = Literal["z", "fisher"]


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of an experiment: ``successes`` out of ``trials``.

    Counts may be fractional: PromQL's ``increase()`` extrapolates.
    """

    name: str
    successes: float
    trials: float

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a variant needs a name")
        if not (math.isfinite(self.successes) and math.isfinite(self.trials)):
            raise ValueError(f"variant {self.name!r}: counts must be finite")
        if self.successes < 0 or self.trials < 0:
            raise ValueError(f"variant {self.name!r}: counts must not be negative")
        if self.successes > self.trials:
            raise ValueError(f"variant {self.name!r}: {self.successes:g} successes out of only "
                             f"{self.trials:g} trials")

    @property
    def rate(self) -> float | None:
        """successes / trials, or None without trials."""
        return self.successes / self.trials if self.trials > 0 else None


def variants_from_ratio(numerator: Mapping[str, float], denominator: Mapping[str, float]) -> list[Variant]:
    """Variants from two PromQL results keyed by the variant label's value (numerator / denominator).

    A variant in the denominator but not the numerator had no successes; one in
    the numerator only is an error (a ratio above 1 means the queries do not match).
    """
    extra = sorted(set(numerator) - set(denominator))
    if extra:
        raise ValueError(f"variants with a numerator but no denominator: {', '.join(extra)}")
    return [Variant(name, float(numerator.get(name, 0.0)), float(trials))
            for name, trials in denominator.items()]


def wilson_interval(successes: float, trials: float, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (R's ``prop.test(x, n, correct = FALSE)$conf.int``)."""
    _check_level(confidence)
    if trials <= 0:
        raise ValueError("a proportion needs trials")
    z = qnorm(1 - (1 - confidence) / 2)
    p = successes / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    denom = 1 + z * z / trials
    # The bounds are exactly 0 (1) with no (only) successes; keep rounding from saying otherwise.
    lower = 0.0 if successes == 0 else max(0.0, (centre - spread) / denom)
    upper = 1.0 if successes == trials else min(1.0, (centre + spread) / denom)
    return lower, upper


def two_proportion_ztest(control: Variant, treatment: Variant) -> tuple[float, float]:
    """(z, two-sided p) of the pooled two-proportion z-test, treatment minus control.

    z squared is the X-squared of R's ``prop.test(..., correct = FALSE)``. With
    no variation at all (every trial a success, or none) z is 0 and p is 1.
    """
    p1, p2 = _rates(control, treatment)
    pooled = (control.successes + treatment.successes) / (control.trials + treatment.trials)
    se = math.sqrt(pooled * (1 - pooled) * (1 / control.trials + 1 / treatment.trials))
    if se == 0:
        return 0.0, 1.0
    z = (p2 - p1) / se
    return z, min(1.0, 2 * pnorm(-abs(z)))


@dataclass(frozen=True, slots=True)
class Comparison:
    """A treatment against the control."""

    control: str
    treatment: str
    test: Test
    p_value: float
    p_adjusted: float  # Bonferroni over the report's comparisons
    significant: bool  # p_adjusted below 1 - confidence
    z: float | None  # the z statistic when the z-test was used
    difference: float  # treatment rate - control rate
    difference_lower: float
    difference_upper: float
    lift: float | None  # treatment rate / control rate - 1; None when the control never converted
    lift_lower: float | None
    lift_upper: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "control": self.control, "treatment": self.treatment, "test": self.test,
            "pValue": self.p_value, "pAdjusted": self.p_adjusted, "significant": self.significant,
            "z": self.z, "difference": self.difference,
            "differenceInterval": [self.difference_lower, self.difference_upper],
            "lift": self.lift, "liftInterval": [self.lift_lower, self.lift_upper],
        }


def compare(control: Variant, treatment: Variant, confidence: float = 0.95,
            comparisons: int = 1) -> Comparison:
    """Test ``treatment`` against ``control``; ``comparisons`` is the Bonferroni factor."""
    _check_level(confidence)
    p1, p2 = _rates(control, treatment)
    z_crit = qnorm(1 - (1 - confidence) / 2)
    test: Test = "fisher" if _small(control, treatment) else "z"
    z: float | None
    if test == "fisher":
        z = None
        p_value = fisher_exact_2x2(round(treatment.successes), round(treatment.trials - treatment.successes),
                                   round(control.successes), round(control.trials - control.successes))
    else:
        z, p_value = two_proportion_ztest(control, treatment)
    p_adjusted = min(1.0, p_value * comparisons)
    se = math.sqrt(p1 * (1 - p1) / control.trials + p2 * (1 - p2) / treatment.trials)
    lift, lift_lo, lift_hi = _lift(control, treatment, z_crit)
    return Comparison(control=control.name, treatment=treatment.name, test=test, p_value=p_value,
                      p_adjusted=p_adjusted, significant=p_adjusted < 1 - confidence, z=z,
                      difference=p2 - p1, difference_lower=p2 - p1 - z_crit * se,
                      difference_upper=p2 - p1 + z_crit * se, lift=lift, lift_lower=lift_lo,
                      lift_upper=lift_hi)


def sample_size_per_variant(baseline_rate: float, mde: float, alpha: float = 0.05, power: float = 0.8,
                            relative: bool = True) -> int:
    """Trials each variant needs to detect a change of ``mde`` in ``baseline_rate`` (two-sided).

    ``mde`` is relative (0.1 = a 10% lift) unless ``relative=False`` (0.01 = one
    percentage point). The closed form of R's ``power.prop.test`` (two-sided,
    ``strict = FALSE``), rounded up:
    n = (z(1-alpha/2) sqrt(2 pbar qbar) + z(power) sqrt(p1 q1 + p2 q2))^2 / (p2 - p1)^2.
    """
    if not 0.0 < baseline_rate < 1.0:
        raise ValueError("baseline_rate must be between 0 and 1")
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError("alpha and power must be between 0 and 1")
    p2 = baseline_rate * (1 + mde) if relative else baseline_rate + mde
    if mde == 0 or not 0.0 < p2 < 1.0:
        raise ValueError(f"the effect must move the rate to another value inside (0, 1), got {p2:g}")
    p1 = baseline_rate
    pbar = (p1 + p2) / 2
    top = (qnorm(1 - alpha / 2) * math.sqrt(2 * pbar * (1 - pbar))
           + qnorm(power) * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2)))
    return math.ceil((top / (p2 - p1)) ** 2 - 1e-9)


@dataclass(frozen=True, slots=True)
class VariantSummary:
    """A variant's counts, rate and Wilson interval (None without trials)."""

    name: str
    successes: float
    trials: float
    rate: float | None
    lower: float | None
    upper: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "successes": self.successes, "trials": self.trials, "rate": self.rate,
                "interval": [self.lower, self.upper]}


@dataclass(frozen=True, slots=True)
class ABReport:
    """Every variant's rate and every treatment against the control."""

    control: str
    confidence: float
    variants: list[VariantSummary]
    comparisons: list[Comparison]
    notes: list[str]  # why a comparison is missing (a variant without trials)

    def to_dict(self) -> dict[str, Any]:
        return {"control": self.control, "confidence": self.confidence,
                "variants": [v.to_dict() for v in self.variants],
                "comparisons": [c.to_dict() for c in self.comparisons], "notes": list(self.notes)}


def ab_report(variants: Sequence[Variant], control: str | None = None, confidence: float = 0.95) -> ABReport:
    """Rates of every variant, and each treatment tested against ``control`` (default: the first)."""
    _check_level(confidence)
    if len(variants) < 2:
        raise ValueError("an experiment needs at least two variants")
    if len(variants) > MAX_VARIANTS:
        raise ValueError(f"more than {MAX_VARIANTS} variants")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError("variant names must be unique")
    ctrl_name = names[0] if control is None else control
    if ctrl_name not in names:
        raise ValueError(f"control {ctrl_name!r} is not among the variants {names}")
    ctrl = variants[names.index(ctrl_name)]
    summaries = [_summary(v, confidence) for v in variants]
    notes: list[str] = []
    testable = [v for v in variants if v.name != ctrl_name and v.trials > 0]
    notes += [f"{v.name}: no trials, not compared" for v in variants if v.trials <= 0]
    comparisons: list[Comparison] = []
    if ctrl.trials > 0:
        comparisons = [compare(ctrl, v, confidence, comparisons=len(testable)) for v in testable]
    return ABReport(control=ctrl_name, confidence=confidence, variants=summaries, comparisons=comparisons,
                    notes=notes)


def _summary(v: Variant, confidence: float) -> VariantSummary:
    if v.trials <= 0:
        return VariantSummary(v.name, v.successes, v.trials, None, None, None)
    lo, hi = wilson_interval(v.successes, v.trials, confidence)
    return VariantSummary(v.name, v.successes, v.trials, v.rate, lo, hi)


def _rates(control: Variant, treatment: Variant) -> tuple[float, float]:
    if control.rate is None or treatment.rate is None:
        raise ValueError("both variants need trials to be compared")
    return control.rate, treatment.rate


def _small(control: Variant, treatment: Variant) -> bool:
    """Whether a cell of the 2x2 table expects fewer than 5 counts."""
    total = control.trials + treatment.trials
    successes = control.successes + treatment.successes
    failures = total - successes
    return any(n * k / total < FISHER_EXPECTED_MIN
               for n in (control.trials, treatment.trials) for k in (successes, failures))


def _lift(control: Variant, treatment: Variant,
          z_crit: float) -> tuple[float | None, float | None, float | None]:
    """Relative lift and its Katz log interval: exp(ln RR ± z sqrt(1/x2 - 1/n2 + 1/x1 - 1/n1)) - 1."""
    p1, p2 = _rates(control, treatment)
    if p1 == 0:
        return None, None, None
    lift = p2 / p1 - 1
    if p2 == 0:
        return lift, None, None
    se = math.sqrt(1 / treatment.successes - 1 / treatment.trials
                   + 1 / control.successes - 1 / control.trials)
    log_rr = math.log(p2 / p1)
    return lift, math.exp(log_rr - z_crit * se) - 1, math.exp(log_rr + z_crit * se) - 1


def _check_level(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
