"""A/B reports against textbook values.

Expected values from R 4.2.2 (run outside the project): ``prop.test(...,
correct = FALSE)`` for the z-test (z squared = X-squared), the Wald interval of
the difference and Wilson intervals, ``fisher.test`` for small counts,
``power.prop.test`` for sample sizes; the relative-risk (Katz log) intervals
from SciPy 1.17's ``scipy.stats.contingency.relative_risk``, in a scratch
environment, not a project dependency.
"""

from __future__ import annotations

import json
import math

import pytest

from pitwall.releases.abtest import (
    Variant,
    ab_report,
    compare,
    sample_size_per_variant,
    two_proportion_ztest,
    variants_from_ratio,
    wilson_interval,
)

pytestmark = pytest.mark.timeout(30)

CONTROL = Variant("control", 45, 500)
TREATMENT = Variant("new-checkout", 63, 510)


def test_two_proportion_ztest_matches_prop_test() -> None:
    # R: prop.test(c(63, 45), c(510, 500), correct = FALSE): X-squared 2.97223490283031, p 0.0847047592606335
    z, p = two_proportion_ztest(CONTROL, TREATMENT)
    assert z * z == pytest.approx(2.9722349028303103, rel=1e-12)
    assert z > 0
    assert p == pytest.approx(0.084704759260633519, rel=1e-9)


def test_comparison_intervals() -> None:
    c = compare(CONTROL, TREATMENT)
    assert c.test == "z"
    assert not c.significant  # p 0.085 > 0.05
    assert c.difference == pytest.approx(63 / 510 - 45 / 500)
    # R's prop.test interval for p1 - p2 without continuity correction is the Wald interval.
    assert (c.difference_lower, c.difference_upper) == pytest.approx(
        (-0.0044804459533874449, 0.071539269482799234), rel=1e-9)
    # Relative risk 1.37255 with Katz interval [0.955573, 1.971477] (SciPy): lift = RR - 1.
    assert c.lift == pytest.approx(0.3725490196078431)
    assert c.lift_lower == pytest.approx(0.9555733341605769 - 1, rel=1e-9)
    assert c.lift_upper == pytest.approx(1.9714769593077381 - 1, rel=1e-9)


def test_small_counts_use_fisher() -> None:
    # 7/30 against 1/30: the cell "successes in control" expects 4 < 5.
    # R: fisher.test(matrix(c(7, 23, 1, 29), 2, byrow = TRUE))$p.value = 0.05231484385878208, where
    # prop.test would say 0.0227 (and warn that the approximation may be incorrect).
    c = compare(Variant("a", 1, 30), Variant("b", 7, 30))
    assert c.test == "fisher"
    assert c.z is None
    assert c.p_value == pytest.approx(0.05231484385878208, rel=1e-9)
    assert not c.significant
    assert c.lift_lower == pytest.approx(0.9163575397991978 - 1, rel=1e-9)


def test_wilson_interval_matches_prop_test() -> None:
    # R: prop.test(81, 263, correct = FALSE)$conf.int
    assert wilson_interval(81, 263) == pytest.approx((0.25528851987827428, 0.36620957698280016), rel=1e-9)
    assert wilson_interval(0, 10)[0] == 0.0


@pytest.mark.parametrize(("p1", "p2", "alpha", "power", "r_n"), [
    (0.50, 0.75, 0.05, 0.90, 76.706930114107664),  # the example in R's ?power.prop.test
    (0.10, 0.11, 0.05, 0.80, 14750.790469046382),
    (0.20, 0.25, 0.01, 0.90, 2073.2013210114765),
    (0.05, 0.04, 0.05, 0.80, 6744.9330748848897),
])
def test_sample_size_matches_power_prop_test(p1: float, p2: float, alpha: float, power: float,
                                             r_n: float) -> None:
    n = sample_size_per_variant(p1, p2 - p1, alpha=alpha, power=power, relative=False)
    assert n == math.ceil(r_n)


def test_sample_size_relative_mde() -> None:
    # A 10% relative lift on 10% is 10% -> 11%: the second row above.
    assert sample_size_per_variant(0.10, 0.10) == 14751
    # Halving the effect roughly quadruples the sample.
    assert 3.8 < sample_size_per_variant(0.10, 0.05) / 14751 < 4.2
    with pytest.raises(ValueError, match="inside"):
        sample_size_per_variant(0.6, 1.0)
    with pytest.raises(ValueError, match="baseline_rate"):
        sample_size_per_variant(0.0, 0.1)


def test_report_from_a_promql_ratio() -> None:
    # sum by (variant) (increase(orders_total[7d])) over sum by (variant) (increase(visits_total[7d]))
    numerator = {"a": 45.0, "b": 63.0, "c": 48.0}
    denominator = {"a": 500.0, "b": 510.0, "c": 505.0, "d": 0.0}
    report = ab_report(variants_from_ratio(numerator, denominator), control="a")
    assert [v.name for v in report.variants] == ["a", "b", "c", "d"]
    assert report.variants[3].rate is None
    assert report.notes == ["d: no trials, not compared"]
    assert [c.treatment for c in report.comparisons] == ["b", "c"]
    b = report.comparisons[0]
    assert b.p_adjusted == pytest.approx(2 * b.p_value)  # Bonferroni over two treatments
    doc = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert doc["control"] == "a"
    assert doc["comparisons"][0]["differenceInterval"][0] == pytest.approx(-0.0044804459533874449)


def test_a_clear_winner_is_significant() -> None:
    report = ab_report([Variant("old", 200, 10_000), Variant("new", 300, 10_000)])
    (c,) = report.comparisons
    assert c.significant
    assert c.lift == pytest.approx(0.5)
    assert c.lift_lower is not None and c.lift_lower > 0


def test_no_variation_is_not_significant() -> None:
    z, p = two_proportion_ztest(Variant("a", 0, 100), Variant("b", 0, 100))
    assert (z, p) == (0.0, 1.0)
    c = compare(Variant("a", 0, 1000), Variant("b", 0, 1000))
    assert c.lift is None and not c.significant


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Variant("a", 11, 10), "successes out of only"),
    (lambda: Variant("a", -1, 10), "negative"),
    (lambda: Variant("a", math.nan, 10), "finite"),
    (lambda: variants_from_ratio({"x": 1.0}, {"y": 2.0}), "no denominator"),
    (lambda: ab_report([Variant("a", 1, 10)]), "at least two"),
    (lambda: ab_report([Variant("a", 1, 10), Variant("a", 2, 10)]), "unique"),
    (lambda: ab_report([Variant("a", 1, 10), Variant("b", 2, 10)], control="z"), "not among"),
    (lambda: ab_report([Variant("a", 1, 10), Variant("b", 2, 10)], confidence=1.5), "confidence"),
])
def test_bad_input_is_refused(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]
