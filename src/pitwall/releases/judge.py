"""Kayenta's NetflixACAJudge: is the canary's behaviour worse than the baseline's?

The algorithm of Spinnaker Kayenta's ``NetflixACAJudge`` (kayenta-judge,
Apache-2.0), rewritten here. For each metric:

1. preprocessing: NaNs removed or replaced by zero (``nan_strategy``), then,
   with ``outlier_strategy="remove"``, values outside the fences
   min(p1, Q1 - k*IQR) and max(p99, Q3 + k*IQR) dropped (k = ``outlier_factor``, 3);
2. no data on either side: ``Nodata`` (inconclusive; ``NodataFailMetric`` when
   ``must_have_data``), or ``Pass`` with ``nan_strategy="replace"``; identical
   samples, or one value throughout both: ``Pass``;
3. a two-sided Mann-Whitney test at ``confidence`` (98%) gives a confidence
   interval and the Hodges-Lehmann estimate of canary - baseline; the metric is
   ``High`` when the whole interval lies above ``tolerance`` (25%) of |estimate|
   and the effect size (mean ratio canary/baseline, or CLES) reaches
   ``allowed_increase``, ``Low`` symmetrically, as ``direction`` permits; a
   critical metric beyond ``critical_increase``/``critical_decrease`` fails the
   whole run.

Scoring: per group, the share of Pass among Pass/High/Low/NodataFailMetric
(``Nodata`` and ``Error`` do not count); the summary is the groups' scores
weighted by ``group_weights`` (groups without a weight share what is left of
100), rounded to 2 places, and classified against ``pass_threshold`` and
``marginal_threshold``. A critical failure, or half the metrics or more without
data, scores 0.

Where pitwall departs from Kayenta (each noted where it happens): the test is R's
``wilcox.test`` (exact for small tie-free samples, as R does; Kayenta always uses
the normal approximation); the noise Kayenta adds to two constant samples is
seeded, so a verdict is reproducible; and a run in which no metric could be
judged (all without data or errored) never passes: Kayenta would score it 100.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

import numpy as np

from pitwall.releases._stats import AllTied, average_ranks, percentile_r7, wilcox_test

__all__ = [
    "JudgeConfig",
    "JudgeResult",
    "MetricInput",
    "MetricStats",
    "MetricVerdict",
    "judge",
]

Classification = Literal["Pass", "High", "Low", "Nodata", "NodataFailMetric", "Error"]
ScoreClassification = Literal["Pass", "Marginal", "Fail"]

DIRECTIONS = ("increase", "decrease", "either")
NAN_STRATEGIES = ("remove", "replace")
OUTLIER_STRATEGIES = ("remove", "keep")
EFFECT_MEASURES = ("meanRatio", "cles")
MAX_METRICS = 1_000
MAX_SAMPLES = 100_000  # per side of one metric
NODATA_THRESHOLD = 50.0  # percent of metrics without data that fails the run (Kayenta's)
_NOISE_SCALE = 1e-5
_NOISE_SEED = 18


@dataclass(frozen=True, slots=True)
class MetricInput:
    """One metric's samples over the same interval for the canary and the baseline (primary).

    The fields after ``outlier_strategy`` are Kayenta's ``analysisConfigurations.canary``
    keys; an effect-size bound left at None takes Kayenta's default (1.0 for
    ``meanRatio``, 0.5 for ``cles``), which makes it no constraint.
    """

    name: str
    canary: Sequence[float]
    baseline: Sequence[float]
    group: str = "default"
    direction: str = "either"
    critical: bool = False
    nan_strategy: str = "remove"
    outlier_strategy: str = "keep"
    outlier_factor: float = 3.0
    must_have_data: bool = False
    muted: bool = False
    effect_size_measure: str = "meanRatio"
    allowed_increase: float | None = None
    allowed_decrease: float | None = None
    critical_increase: float | None = None
    critical_decrease: float | None = None

    def __post_init__(self) -> None:
        _choice("direction", self.direction, DIRECTIONS, self.name)
        _choice("nan_strategy", self.nan_strategy, NAN_STRATEGIES, self.name)
        _choice("outlier_strategy", self.outlier_strategy, OUTLIER_STRATEGIES, self.name)
        _choice("effect_size_measure", self.effect_size_measure, EFFECT_MEASURES, self.name)
        if not self.name:
            raise ValueError("a metric needs a name")
        if not self.outlier_factor > 0:
            raise ValueError(f"metric {self.name!r}: outlier_factor must be greater than zero")
        for side in ("canary", "baseline"):
            if len(getattr(self, side)) > MAX_SAMPLES:
                raise ValueError(f"metric {self.name!r}: more than {MAX_SAMPLES} {side} samples")

    def effect_bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((allowed decrease, allowed increase), (critical decrease, critical increase))."""
        default = 0.5 if self.effect_size_measure == "cles" else 1.0

        def pick(v: float | None) -> float:
            return default if v is None else v

        return ((pick(self.allowed_decrease), pick(self.allowed_increase)),
                (pick(self.critical_decrease), pick(self.critical_increase)))


@dataclass(frozen=True, slots=True)
class JudgeConfig:
    """Score thresholds and weights (Kayenta's classifier config) and the test's level."""

    pass_threshold: float = 95.0
    marginal_threshold: float = 75.0
    group_weights: Mapping[str, float] = field(default_factory=dict)
    confidence: float = 0.98
    tolerance: float = 0.25  # the band around the estimate, a fraction of |estimate|

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be between 0 and 1, got {self.confidence}")
        if not 0.0 <= self.marginal_threshold <= self.pass_threshold <= 100.0:
            raise ValueError("thresholds need 0 <= marginal_threshold <= pass_threshold <= 100")
        if self.tolerance < 0:
            raise ValueError("tolerance must not be negative")
        weights = list(self.group_weights.values())
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) > 100.0 + 1e-9:
            raise ValueError("group_weights must be non-negative and add up to at most 100")


@dataclass(frozen=True, slots=True)
class MetricStats:
    """Descriptive statistics of one side after preprocessing (Kayenta's ``stats`` metadata)."""

    count: int
    min: float
    max: float
    mean: float
    std: float

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "min": self.min, "max": self.max, "mean": self.mean, "std": self.std}


@dataclass(frozen=True, slots=True)
class MetricVerdict:
    """One metric's classification and the numbers behind it."""

    name: str
    group: str
    classification: Classification
    reason: str
    critical: bool  # this verdict fails the whole run (Kayenta's ``critical`` result flag)
    muted: bool
    direction: str
    lower: float | None  # confidence interval of canary - baseline
    upper: float | None
    estimate: float | None  # Hodges-Lehmann estimate of canary - baseline
    ratio: float | None  # mean(canary) / mean(baseline); None when a mean is zero
    effect_size: float | None
    exact: bool | None  # exact Wilcoxon distribution (True) or normal approximation (False)
    canary: MetricStats
    baseline: MetricStats

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN and infinities become None."""
        return {
            "name": self.name, "group": self.group, "classification": self.classification,
            "reason": self.reason, "critical": self.critical, "muted": self.muted,
            "direction": self.direction, "lower": _num(self.lower), "upper": _num(self.upper),
            "estimate": _num(self.estimate), "ratio": _num(self.ratio),
            "effectSize": _num(self.effect_size), "exact": self.exact,
            "canary": self.canary.to_dict(), "baseline": self.baseline.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class JudgeResult:
    """The run's score (0-100), its classification, and why."""

    score: float
    classification: ScoreClassification
    metrics: list[MetricVerdict]
    groups: dict[str, float]
    reason: str
    inconclusive: bool = False  # no metric could be judged: a caller may wait rather than fail

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score, "classification": self.classification, "reason": self.reason,
            "inconclusive": self.inconclusive, "groups": dict(self.groups),
            "metrics": [m.to_dict() for m in self.metrics],
        }


def judge(metrics: Sequence[MetricInput], config: JudgeConfig) -> JudgeResult:
    """Classify every metric and score the canary run."""
    if len(metrics) > MAX_METRICS:
        raise ValueError(f"more than {MAX_METRICS} metrics in one judgement")
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise ValueError("metric names must be unique within a judgement")
    verdicts = [classify_metric(m, config) for m in metrics]
    return _score(verdicts, config)


# -- per metric ---------------------------------------------------------------------------------------


def classify_metric(metric: MetricInput, config: JudgeConfig) -> MetricVerdict:
    """Kayenta's ``classifyMetric``: preprocess both sides, then the Mann-Whitney classifier."""
    canary = _preprocess(metric.canary, metric)
    baseline = _preprocess(metric.baseline, metric)
    finite = all(math.isfinite(v) for v in (*canary, *baseline))
    if not finite:  # a rate over a zero denominator, say: no statistic means anything then
        canary = [v for v in canary if math.isfinite(v)]
        baseline = [v for v in baseline if math.isfinite(v)]
    base = MetricVerdict(
        name=metric.name, group=metric.group, classification="Pass", reason="", critical=False,
        muted=metric.muted, direction=metric.direction, lower=None, upper=None, estimate=None,
        ratio=None, effect_size=None, exact=None, canary=_summary(canary), baseline=_summary(baseline))
    if not finite:
        return replace(base, classification="Error", reason=f"{metric.name} has infinite samples")
    if not canary or not baseline:
        side = "canary" if not canary else "baseline"
        if metric.nan_strategy == "replace":
            return replace(base, classification="Pass", reason=f"no {side} data (NaNs count as zero)")
        reason = f"Missing data for {metric.name} ({side} has no values)"
        if metric.must_have_data and not metric.critical:
            return replace(base, classification="NodataFailMetric", reason=reason, critical=False)
        return replace(base, classification="Nodata", reason=reason, critical=metric.critical)
    if sorted(canary) == sorted(baseline):
        return replace(base, classification="Pass", reason="The canary and baseline data are identical",
                       ratio=1.0)
    if len(set(canary) | set(baseline)) == 1:
        return replace(base, classification="Pass", reason="every value is the same",
                       ratio=1.0)
    try:
        return _compare(metric, canary, baseline, config, base)
    except (AllTied, ValueError) as exc:
        return replace(base, classification="Error", reason=f"Metric Classification Failed: {exc}")


def _compare(metric: MetricInput, canary: list[float], baseline: list[float], config: JudgeConfig,
             base: MetricVerdict) -> MetricVerdict:
    if len(set(canary)) == 1 and len(set(baseline)) == 1:
        # Two different constants have no rank spread; Kayenta jitters both by
        # 1e-5 of their value. Seeded here so the same inputs give the same verdict.
        rng = np.random.default_rng(_NOISE_SEED)
        canary = _jitter(canary, rng)
        baseline = _jitter(baseline, rng)
    test = wilcox_test(canary, baseline, conf_level=config.confidence)
    ratio = _mean_ratio(canary, baseline)
    effect = _cles(canary, baseline) if metric.effect_size_measure == "cles" else ratio
    band = config.tolerance * abs(test.estimate)
    (allowed_dec, allowed_inc), (critical_dec, critical_inc) = metric.effect_bounds()
    high = (metric.direction in ("increase", "either") and test.lower > band
            and (math.isnan(effect) or effect >= allowed_inc))
    low = (metric.direction in ("decrease", "either") and test.upper < -band
           and (math.isnan(effect) or effect <= allowed_dec))
    numbers = replace(base, lower=test.lower, upper=test.upper, estimate=test.estimate,
                      ratio=ratio, effect_size=effect, exact=test.exact)
    interval = (f"{config.confidence:.0%} interval of canary - baseline [{test.lower:.6g}, "
                f"{test.upper:.6g}], estimate {test.estimate:.6g}, band ±{band:.6g}")
    if not (high or low):
        return replace(numbers, classification="Pass", reason=f"{metric.name} within tolerance: {interval}")
    label: Classification = "High" if high else "Low"
    limit = critical_inc if high else critical_dec
    is_critical = metric.critical and (math.isnan(effect) or (effect >= limit if high else effect <= limit))
    suffix = " (Critical)" if is_critical else ""
    return replace(numbers, classification=label,
                   reason=f"The metric {metric.name} was classified as {label}{suffix}: {interval}",
                   critical=is_critical)


def _preprocess(values: Sequence[float], metric: MetricInput) -> list[float]:
    """NaN strategy, then IQR outlier removal (Kayenta's ``transformMetric``)."""
    data = [float(v) for v in values]
    if metric.nan_strategy == "remove":
        data = [v for v in data if not math.isnan(v)]
    else:
        data = [0.0 if math.isnan(v) else v for v in data]
    if metric.outlier_strategy == "remove" and data and all(math.isfinite(v) for v in data):
        low, high = _fences(data, metric.outlier_factor)
        data = [v for v in data if low <= v <= high]
    return data


def _fences(data: list[float], factor: float) -> tuple[float, float]:
    """Kayenta's IQRDetector with reduced sensitivity: the wider of Tukey's fences and p1/p99."""
    ordered = sorted(data)
    q1, q3 = percentile_r7(ordered, 25, presorted=True), percentile_r7(ordered, 75, presorted=True)
    iqr = q3 - q1
    return (min(percentile_r7(ordered, 1, presorted=True), q1 - factor * iqr),
            max(percentile_r7(ordered, 99, presorted=True), q3 + factor * iqr))


def _summary(data: list[float]) -> MetricStats:
    if not data:
        return MetricStats(count=0, min=0.0, max=0.0, mean=0.0, std=0.0)
    arr = np.asarray(data, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return MetricStats(count=len(data), min=float(arr.min()), max=float(arr.max()),
                       mean=float(arr.mean()), std=std)


def _jitter(values: list[float], rng: np.random.Generator) -> list[float]:
    scale = abs(values[0]) * _NOISE_SCALE
    return [float(v) for v in np.asarray(values) + rng.normal(0.0, scale, len(values))]


def _mean_ratio(canary: list[float], baseline: list[float]) -> float:
    c, b = float(np.mean(canary)), float(np.mean(baseline))
    return math.nan if c == 0.0 or b == 0.0 else c / b


def _cles(canary: list[float], baseline: list[float]) -> float:
    """Common-language effect size: the share of (canary, baseline) pairs where the canary is higher."""
    ranks, _ = average_ranks(np.asarray([*canary, *baseline], dtype=np.float64))
    m, n = len(canary), len(baseline)
    return float((2 * ranks[:m].sum() - m * (m + 1)) / (2 * n * m))


# -- scoring -------------------------------------------------------------------------------------------

_COUNTED = ("Pass", "High", "Low", "NodataFailMetric")


def _score(verdicts: list[MetricVerdict], config: JudgeConfig) -> JudgeResult:
    active = [v for v in verdicts if not v.muted]
    groups = _group_scores(active)
    critical = [v for v in active if v.critical and v.classification != "Pass"]
    nodata = sum(v.classification == "Nodata" for v in active)
    if critical:
        # A critical metric without data fails the run as in Kayenta, but as "no data", not "bad".
        no_data = all(v.classification == "Nodata" for v in critical)
        return _result(0.0, config, verdicts, groups, f"Canary Failed: {critical[0].reason}",
                       inconclusive=no_data)
    if not any(v.classification in _COUNTED for v in active):
        # Kayenta would score every group as "no data" = 100 and pass; never pass on nothing.
        why = "no metrics" if not active else "no metric could be judged (no data or errors)"
        return _result(0.0, config, verdicts, groups, f"Inconclusive: {why}", inconclusive=True)
    if active and nodata * 100.0 / len(active) >= NODATA_THRESHOLD:
        return _result(0.0, config, verdicts, groups,
                       f"Canary Failed: {NODATA_THRESHOLD:.0f}% or more metrics returned NODATA",
                       inconclusive=True)
    summary = 0.0
    unweighted = [g for g in groups if g not in config.group_weights]
    share = (100.0 - sum(config.group_weights.values())) / len(unweighted) if unweighted else 0.0
    for name, (score, has_data) in groups.items():
        weight = config.group_weights.get(name, share)
        summary += (score if has_data else 100.0) * weight / 100.0
    return _result(_round2(summary), config, verdicts, groups, "")


def _group_scores(verdicts: list[MetricVerdict]) -> dict[str, tuple[float, bool]]:
    """Per group: (score, whether any metric in it counted)."""
    out: dict[str, tuple[float, bool]] = {}
    for name in dict.fromkeys(v.group for v in verdicts):
        labels = [v.classification for v in verdicts if v.group == name]
        counted = sum(label in _COUNTED for label in labels)
        passed = labels.count("Pass")
        out[name] = (passed * 100.0 / counted, True) if counted else (0.0, False)
    return out


def _result(score: float, config: JudgeConfig, verdicts: list[MetricVerdict],
            groups: dict[str, tuple[float, bool]], reason: str, inconclusive: bool = False) -> JudgeResult:
    if score >= config.pass_threshold and not inconclusive:
        label: ScoreClassification = "Pass"
    elif score >= config.marginal_threshold and not inconclusive:
        label = "Marginal"
    else:
        label = "Fail"
    if not reason:
        failing = [v.name for v in verdicts if v.classification in ("High", "Low", "NodataFailMetric")
                   and not v.muted]
        reason = f"score {score:g}" + (f"; not passing: {', '.join(failing)}" if failing else "")
    return JudgeResult(score=score, classification=label, metrics=verdicts,
                       groups={k: _round2(s) for k, (s, _) in groups.items()}, reason=reason,
                       inconclusive=inconclusive)


def _round2(x: float) -> float:
    """Apache Commons' ``Precision.round(x, 2)``: half up, on the decimal value."""
    return float(Decimal(repr(x)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _choice(field_name: str, value: str, allowed: tuple[str, ...], metric: str) -> None:
    if value not in allowed:
        raise ValueError(f"metric {metric!r}: {field_name} must be one of {', '.join(allowed)}, "
                         f"got {value!r}")


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x
