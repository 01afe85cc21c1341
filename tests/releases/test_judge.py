"""Kayenta's NetflixACAJudge, on cases worked by hand from its algorithm.

The intervals quoted are R's (see test_judge_stats.py): for SLOW against FAST
the 98% interval of canary - baseline is [1.1, 4.1] with estimate 2.5, so the
tolerance band is ±0.25 * 2.5 = ±0.625 and the lower end 1.1 lies above it.
"""

from __future__ import annotations

import json
import math

import pytest

from pitwall.releases.judge import MAX_SAMPLES, JudgeConfig, MetricInput, judge

pytestmark = pytest.mark.timeout(60)

FAST = [8.2, 9.1, 7.7, 8.8, 9.9, 8.4, 7.9]
SLOW = [10.1, 11.3, 9.7, 12.4, 10.9, 11.8, 10.2, 12.9]
NOISY_A = [101.2, 98.7, 103.5, 99.9, 100.4, 97.8, 102.6, 100.9, 99.1, 101.7]
NOISY_B = [100.8, 99.3, 102.1, 98.4, 101.5, 100.2, 97.5, 103.1, 99.6, 100.6]
CFG = JudgeConfig()


def one(metric: MetricInput) -> tuple[str, str]:
    verdict = judge([metric], CFG).metrics[0]
    return verdict.classification, verdict.reason


def test_identical_series_pass() -> None:
    result = judge([MetricInput("latency", canary=[3.0, 1.0, 2.0], baseline=[1.0, 2.0, 3.0])], CFG)
    assert (result.score, result.classification) == (100.0, "Pass")
    assert result.metrics[0].reason == "The canary and baseline data are identical"
    assert result.metrics[0].ratio == 1.0


def test_shifted_up_is_high_and_fails() -> None:
    result = judge([MetricInput("latency", canary=SLOW, baseline=FAST)], CFG)
    v = result.metrics[0]
    assert v.classification == "High"
    assert (v.lower, v.upper, v.estimate) == pytest.approx((1.1, 4.1, 2.5))
    assert v.exact is True
    assert v.ratio == pytest.approx((sum(SLOW) / 8) / (sum(FAST) / 7))
    assert (v.canary.count, v.canary.min, v.canary.max) == (8, 9.7, 12.9)
    assert (result.score, result.classification) == (0.0, "Fail")
    assert "latency" in result.reason


def test_shifted_down_is_low() -> None:
    label, reason = one(MetricInput("latency", canary=FAST, baseline=SLOW))
    assert label == "Low"
    assert "[-4.1, -1.1]" in reason


def test_direction_limits_what_counts() -> None:
    assert one(MetricInput("latency", canary=SLOW, baseline=FAST, direction="decrease"))[0] == "Pass"
    assert one(MetricInput("latency", canary=SLOW, baseline=FAST, direction="increase"))[0] == "High"
    assert one(MetricInput("throughput", canary=FAST, baseline=SLOW, direction="increase"))[0] == "Pass"
    assert one(MetricInput("throughput", canary=FAST, baseline=SLOW, direction="decrease"))[0] == "Low"


def test_noisy_series_from_one_distribution_pass() -> None:
    v = judge([MetricInput("cpu", canary=NOISY_A, baseline=NOISY_B)], CFG).metrics[0]
    assert v.classification == "Pass"
    assert v.lower is not None and v.upper is not None
    assert v.lower < 0 < v.upper  # R: [-1.8, 2.4]


def test_tolerance_band_forgives_a_small_shift() -> None:
    # Canary 0..19 + 5.25 against baseline 0..19. R 4.2.2's exact wilcox.test at 98%:
    # interval [0.25, 10.25], estimate 5.25, p = 0.0095. The interval excludes 0, but
    # the band is ±0.25 * 5.25 = ±1.3125 and 0.25 lies inside it: Pass. A tolerance
    # of 0.04 narrows the band to ±0.21, under 0.25: High.
    canary = [i + 5.25 for i in range(20)]
    baseline = [float(i) for i in range(20)]
    m = MetricInput("latency", canary=canary, baseline=baseline)
    v = judge([m], JudgeConfig()).metrics[0]
    assert (v.lower, v.upper, v.estimate) == pytest.approx((0.25, 10.25, 5.25))
    assert v.classification == "Pass"
    assert judge([m], JudgeConfig(tolerance=0.04)).metrics[0].classification == "High"


def test_allowed_increase_is_an_effect_size_floor() -> None:
    ratio = (sum(SLOW) / 8) / (sum(FAST) / 7)  # 1.30
    assert one(MetricInput("latency", canary=SLOW, baseline=FAST, allowed_increase=1.25))[0] == "High"
    assert one(MetricInput("latency", canary=SLOW, baseline=FAST, allowed_increase=1.35))[0] == "Pass"
    assert 1.25 < ratio < 1.35


def test_cles_effect_size_by_hand() -> None:
    # Of the 8 * 7 (canary, baseline) pairs only (9.7, 9.9) has the canary lower: CLES = 55/56.
    m = MetricInput("latency", canary=SLOW, baseline=FAST, effect_size_measure="cles")
    v = judge([m], CFG).metrics[0]
    assert v.effect_size == pytest.approx(55 / 56)
    assert v.classification == "High"
    strict = MetricInput("latency", canary=SLOW, baseline=FAST, effect_size_measure="cles",
                         allowed_increase=0.99)
    assert one(strict)[0] == "Pass"


def test_empty_series_are_nodata_not_failure() -> None:
    label, reason = one(MetricInput("errors", canary=[], baseline=[1.0, 2.0]))
    assert label == "Nodata"
    assert "canary has no values" in reason
    assert one(MetricInput("errors", canary=[math.nan, math.nan], baseline=[1.0]))[0] == "Nodata"
    # Replace: NaN counts as zero, so two all-NaN series are two identical zeros.
    assert one(MetricInput("errors", canary=[math.nan], baseline=[0.0], nan_strategy="replace"))[0] == "Pass"


def test_every_metric_without_data_never_passes() -> None:
    metrics = [MetricInput("a", canary=[], baseline=[]), MetricInput("b", canary=[1.0], baseline=[])]
    result = judge(metrics, CFG)
    assert (result.score, result.classification, result.inconclusive) == (0.0, "Fail", True)
    assert result.reason.startswith("Inconclusive")
    assert judge([], CFG).classification == "Fail"


def test_every_metric_errored_never_passes() -> None:
    # Kayenta leaves Error out of every group and would score the run 100.
    result = judge([MetricInput("ratio", canary=[math.inf, 1.0], baseline=[1.0, 2.0])], CFG)
    assert result.metrics[0].classification == "Error"
    assert (result.classification, result.inconclusive) == ("Fail", True)


def test_half_the_metrics_without_data_fails() -> None:
    metrics = [MetricInput("a", canary=NOISY_A, baseline=NOISY_B),
               MetricInput("b", canary=[], baseline=[1.0])]
    result = judge(metrics, CFG)
    assert (result.score, result.classification) == (0.0, "Fail")
    assert "50% or more metrics returned NODATA" in result.reason


def test_a_group_without_data_counts_as_full_marks() -> None:
    metrics = [MetricInput("a", canary=NOISY_A, baseline=NOISY_B, group="latency"),
               MetricInput("b", canary=NOISY_B, baseline=NOISY_A, group="latency"),
               MetricInput("c", canary=[], baseline=[1.0], group="errors")]
    result = judge(metrics, CFG)
    assert result.groups == {"latency": 100.0, "errors": 0.0}
    assert (result.score, result.classification) == (100.0, "Pass")


def test_constant_series() -> None:
    assert one(MetricInput("pods", canary=[5.0] * 10, baseline=[5.0] * 12))[0] == "Pass"
    # Two different constants: Kayenta jitters both by 1e-5 of their value; the
    # shift of 1 dwarfs the jitter and the seeded noise makes the verdict repeatable.
    m = MetricInput("pods", canary=[5.0] * 10, baseline=[4.0] * 12)
    first, second = judge([m], CFG).metrics[0], judge([m], CFG).metrics[0]
    assert first.classification == "High"
    assert first.estimate == pytest.approx(1.0, abs=1e-3)
    assert first == second
    # A zero constant gets no jitter and its mean ratio is undefined: the effect-size check is skipped.
    v = judge([MetricInput("errors", canary=[0.0] * 10, baseline=[3.0] * 12)], CFG).metrics[0]
    assert v.classification == "Low"
    assert v.ratio is not None and math.isnan(v.ratio)


def test_critical_metric_failing_fails_the_run() -> None:
    metrics = [MetricInput("latency", canary=SLOW, baseline=FAST, critical=True)]
    metrics += [MetricInput(f"ok{i}", canary=NOISY_A, baseline=NOISY_B) for i in range(9)]
    result = judge(metrics, CFG)
    assert result.metrics[0].critical
    assert (result.score, result.classification, result.inconclusive) == (0.0, "Fail", False)
    assert result.reason == f"Canary Failed: {result.metrics[0].reason}"
    assert "(Critical)" in result.reason
    # Not beyond its critical effect size: an ordinary High, 9 of 10 pass = 90.
    lenient = [MetricInput("latency", canary=SLOW, baseline=FAST, critical=True, critical_increase=2.0),
               *metrics[1:]]
    result = judge(lenient, CFG)
    assert not result.metrics[0].critical
    assert (result.score, result.classification) == (90.0, "Marginal")


def test_critical_metric_without_data_fails_as_inconclusive() -> None:
    metrics = [MetricInput("latency", canary=[], baseline=FAST, critical=True),
               *[MetricInput(f"ok{i}", canary=NOISY_A, baseline=NOISY_B) for i in range(3)]]
    result = judge(metrics, CFG)
    assert (result.classification, result.inconclusive) == ("Fail", True)


def test_group_weights() -> None:
    metrics = [MetricInput("p99", canary=SLOW, baseline=FAST, group="latency"),  # High
               MetricInput("p50", canary=NOISY_A, baseline=NOISY_B, group="latency"),  # Pass
               MetricInput("5xx", canary=NOISY_B, baseline=NOISY_A, group="errors"),  # Pass
               MetricInput("4xx", canary=NOISY_A, baseline=NOISY_A, group="errors")]  # Pass
    # latency 50, errors 100.
    weighted = judge(metrics, JudgeConfig(group_weights={"latency": 60, "errors": 40}))
    assert weighted.groups == {"latency": 50.0, "errors": 100.0}
    assert (weighted.score, weighted.classification) == (70.0, "Fail")  # 0.6*50 + 0.4*100
    # errors has no weight: it takes what is left, 80.
    partial = judge(metrics, JudgeConfig(group_weights={"latency": 20}))
    assert (partial.score, partial.classification) == (90.0, "Marginal")
    # No weights: equal shares, 75 = the marginal threshold.
    assert judge(metrics, CFG).score == 75.0
    assert judge(metrics, CFG).classification == "Marginal"


def test_score_rounds_to_two_places() -> None:
    metrics = [MetricInput("p99", canary=SLOW, baseline=FAST),
               MetricInput("p50", canary=NOISY_A, baseline=NOISY_B),
               MetricInput("p90", canary=NOISY_B, baseline=NOISY_A)]
    assert judge(metrics, CFG).score == 66.67


def test_must_have_data_counts_against_the_score() -> None:
    metrics = [MetricInput("a", canary=NOISY_A, baseline=NOISY_B),
               MetricInput("b", canary=[], baseline=[1.0], must_have_data=True)]
    result = judge(metrics, CFG)
    assert result.metrics[1].classification == "NodataFailMetric"
    assert result.score == 50.0


def test_muted_metrics_do_not_score() -> None:
    metrics = [MetricInput("a", canary=NOISY_A, baseline=NOISY_B),
               MetricInput("b", canary=SLOW, baseline=FAST, muted=True)]
    result = judge(metrics, CFG)
    assert result.metrics[1].classification == "High"
    assert (result.score, result.classification) == (100.0, "Pass")


def test_outlier_removal_by_hand() -> None:
    # 1..10 and 1000: Q1 3.5, Q3 8.5, IQR 5, fences min(p1 = 1.1, 3.5 - 15) and max(p99 = 901, 8.5 + 15):
    # 1000 > 901 goes, leaving the canary identical to the baseline.
    baseline = [float(i) for i in range(1, 11)]
    canary = [*baseline, 1000.0]
    kept = judge([MetricInput("lat", canary=canary, baseline=baseline)], CFG).metrics[0]
    removed = judge([MetricInput("lat", canary=canary, baseline=baseline, outlier_strategy="remove")],
                    CFG).metrics[0]
    assert kept.canary.count == 11
    assert kept.classification == "Pass" and "identical" not in kept.reason
    assert removed.canary.count == 10
    assert removed.reason == "The canary and baseline data are identical"


def test_verdicts_serialise_to_json() -> None:
    metrics = [MetricInput("errors", canary=[0.0] * 10, baseline=[3.0] * 12),
               MetricInput("gone", canary=[], baseline=[1.0])]
    doc = json.loads(json.dumps(judge(metrics, CFG).to_dict(), allow_nan=False))
    assert doc["metrics"][0]["ratio"] is None
    assert doc["metrics"][0]["classification"] == "Low"
    assert set(doc) == {"score", "classification", "reason", "inconclusive", "groups", "metrics"}
    assert set(doc["metrics"][1]["canary"]) == {"count", "min", "max", "mean", "std"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"direction": "up"}, "direction must be one of"),
    ({"nan_strategy": "drop"}, "nan_strategy"),
    ({"outlier_strategy": "trim"}, "outlier_strategy"),
    ({"effect_size_measure": "cohen"}, "effect_size_measure"),
    ({"outlier_factor": 0.0}, "outlier_factor"),
    ({"canary": [1.0] * (MAX_SAMPLES + 1)}, "more than"),
])
def test_bad_metric_input_is_refused(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"name": "m", "canary": [1.0], "baseline": [1.0], **kwargs}
    with pytest.raises(ValueError, match=message):
        MetricInput(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"confidence": 1.0}, "confidence"),
    ({"pass_threshold": 70.0, "marginal_threshold": 80.0}, "thresholds"),
    ({"group_weights": {"a": 70.0, "b": 40.0}}, "group_weights"),
    ({"group_weights": {"a": -1.0}}, "group_weights"),
])
def test_bad_config_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JudgeConfig(**kwargs)  # type: ignore[arg-type]


def test_duplicate_metric_names_are_refused() -> None:
    m = MetricInput("m", canary=[1.0], baseline=[2.0])
    with pytest.raises(ValueError, match="unique"):
        judge([m, m], CFG)
