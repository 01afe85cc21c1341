"""The Mann-Whitney maths against R's wilcox.test, and the exact tables against brute force.

Expected values: R 4.2.2 (Debian's r-base-core), run outside the project as
``wilcox.test(x, y, conf.int = TRUE, conf.level = 0.98)`` and printed with
``sprintf("%.17g", ...)``; the samples that R drew are written out here
(``set.seed(18); round(rlnorm(55, log(120), 0.3), 1)`` and so on). The
Kayenta sample and its three numbers are those recorded in Kayenta's
MannWhitneySuite ("tie out with R version"); R 4.2.2 prints the same digits.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pitwall.releases._stats import (
    AllTied,
    _ShiftedRanks,
    average_ranks,
    fisher_exact_2x2,
    percentile_r7,
    pwilcox,
    qwilcox,
    wilcox_test,
    zeroin,
)

pytestmark = pytest.mark.timeout(60)

LAT_CANARY = [158.4, 207.3, 74, 110.2, 108.3, 133.9, 80.6, 247.5, 122.3, 190.8, 68.2, 157.7, 81.1, 121.5,
              94.8, 172.6, 90.9, 97.9, 179, 137.9, 81.2, 167.3, 95.2, 97.9, 137.9, 66.8, 87.4, 115.8, 111,
              71, 91.4, 127.7, 131.8, 170, 72.2, 163.7, 146.5, 81.9, 144.1, 153.5, 147.8, 256.4, 137.4,
              161.4, 115.5, 140, 153.8, 80.7, 108.9, 101.5, 91.5, 85.5, 139.3, 101.8, 116.8]
LAT_BASE = [52.8, 76.3, 144.6, 102.4, 113.7, 77.6, 107.3, 64.5, 100.8, 81.7, 117.7, 69.5, 121.2, 86.8, 106,
            85.5, 94.2, 85.5, 68.3, 89, 108.8, 112.2, 78.7, 101.9, 116.4, 87.2, 71.9, 79, 169.1, 115.5, 87,
            92.4, 57.4, 107.3, 124.7, 103.4, 77.2, 70.9, 87.1, 106.8, 82.4, 131.5, 75.3, 93, 135.6, 116.7,
            109.7, 122, 194.6, 54.2, 148.5, 93.4, 124.3, 102.8, 102.8, 121.8, 86, 82.2, 93.5, 148.2]
# set.seed(18) continued: rpois(60, 4), rpois(70, 3): heavy ties.
ERR_CANARY = [5, 3, 8, 2, 3, 3, 3, 2, 4, 4, 2, 6, 4, 4, 4, 5, 4, 4, 5, 7, 3, 8, 5, 1, 5, 3, 2, 2, 5, 2, 3, 3,
              1, 4, 2, 4, 5, 5, 1, 5, 5, 2, 6, 12, 3, 3, 7, 4, 1, 7, 5, 6, 4, 5, 5, 3, 8, 1, 1, 1]
ERR_BASE = [3, 0, 0, 3, 4, 3, 0, 2, 5, 1, 5, 1, 1, 4, 4, 3, 5, 1, 2, 2, 1, 5, 4, 4, 2, 3, 6, 3, 0, 6, 1, 2, 3,
            3, 5, 0, 2, 4, 3, 2, 5, 1, 4, 4, 3, 8, 6, 0, 3, 1, 1, 4, 3, 4, 5, 2, 1, 4, 3, 6, 3, 4, 2, 4, 3, 3,
            0, 3, 5, 1]
KAYENTA_CONTROL = [
    1.5, 6.0, 5.0, 2.5, 2.5, 2.0, 2.0, 3.5, 3.0, 3.0, 3.0, 2.0, 3.0, 8.0, 4.0, 2.5, 3.0, 2.5, 2.5, 2.0,
    2.5, 2.0, 2.0, 2.5, 3.5, 3.0, 1.5, 5.0, 2.5, 5.5, 2.0, 2.5, 3.5, 2.0, 2.5, 4.0, 2.0, 2.0, 2.0, 2.0,
    5.5, 4.5, 4.0, 3.0, 3.0, 3.5, 2.5, 3.0, 2.5, 4.0, 6.0, 2.0, 5.0, 6.0, 3.5, 3.0, 54.5, 3.0, 5.0, 6.0,
    3.5, 4.5, 2.5, 2.0, 6.0, 5.0, 2.5, 3.5, 2.0, 3.0, 2.5, 3.5, 3.5, 2.5, 3.0, 4.5, 3.0, 15.5, 5.0, 2.5,
    3.0, 4.0, 3.5, 4.0, 4.0, 2.0, 4.5, 2.5, 4.0, 3.0]
KAYENTA_EXPERIMENT = [
    2.5, 2.5, 2.0, 2.5, 3.5, 2.0, 3.5, 1.5, 3.0, 3.0, 2.5, 3.5, 2.0, 2.5, 2.0, 2.0, 5.0, 3.0, 2.0, 1.5,
    2.0, 4.0, 3.0, 2.5, 3.0, 2.0, 2.0, 2.0, 2.5, 3.5, 1.5, 1.5, 3.5, 2.0, 2.5, 2.5, 3.0, 3.5, 2.5, 6.5,
    2.5, 4.0, 2.5, 3.0, 2.5, 6.5, 2.5, 3.0, 1.5, 2.0, 2.5, 3.0, 7.5, 1.5, 2.0, 4.0, 2.5, 2.0, 2.5, 3.5,
    4.0, 2.5, 3.0, 2.5, 2.0, 3.5, 3.0, 16.5, 3.0, 3.0, 7.0, 4.5, 5.0, 2.0, 3.5, 6.0, 1.5, 3.0, 2.5, 4.0,
    3.0, 1.5, 5.0, 3.0, 2.5, 5.5, 3.0, 1.5, 2.5, 6.0]

# (x, y, conf.level) -> R's (W, p.value, conf.int[1], conf.int[2], estimate, attr conf.level, exact?)
R_CASES = {
    "exact, shifted": (
        [10.1, 11.3, 9.7, 12.4, 10.9, 11.8, 10.2, 12.9], [8.2, 9.1, 7.7, 8.8, 9.9, 8.4, 7.9], 0.98,
        (55, 0.0006216006216006216, 1.0999999999999996, 4.1000000000000005, 2.5, 0.98, True)),
    "exact, noisy": (
        [101.2, 98.7, 103.5, 99.9, 100.4, 97.8, 102.6, 100.9, 99.1, 101.7],
        [100.8, 99.3, 102.1, 98.4, 101.5, 100.2, 97.5, 103.1, 99.6, 100.6], 0.98,
        (55, 0.73936435081945928, -1.7999999999999972, 2.4000000000000057, 0.30000000000000426, 0.98, True)),
    # n = 3 and 3 cannot reach 98%: R warns and reports the level achieved.
    "exact, level not achievable": (
        [1.1, 2.3, 3.7], [0.4, 0.9, 1.6], 0.98,
        (8, 0.2, -0.5, 3.3000000000000003, 1.3999999999999999, 0.9, True)),
    "normal, small with ties": (
        [1, 2, 2, 3, 4, 5, 5, 6], [2, 3, 3, 4, 7, 8, 8, 9, 10], 0.98,
        (18.5, 0.099565385969301298, -6.0000585495579859, 1.0000025813952527, -2.5, 0.98, False)),
    "normal, latency 55 vs 60": (
        LAT_CANARY, LAT_BASE, 0.98,
        (2227.5, 0.001235146321847861, 5.8000311979378365, 37.100042703248256, 21.59217973360083, 0.98,
         False)),
    "normal, counts with heavy ties": (
        ERR_CANARY, ERR_BASE, 0.98,
        (2693, 0.0050582839322372408, 4.120662721590676e-05, 1.9999630348902355, 0.99998118664389846,
         0.98, False)),
    "normal, Kayenta's tie-out sample at 95%": (
        KAYENTA_EXPERIMENT, KAYENTA_CONTROL, 0.95,
        (None, 0.040972234992844123, -0.500002521696696, -3.486287505871302e-05, -0.4999393907180323, 0.95,
         False)),
}


@pytest.mark.parametrize("case", sorted(R_CASES))
def test_wilcox_test_agrees_with_r(case: str) -> None:
    x, y, level, (w, p, lower, upper, est, achieved, exact) = R_CASES[case]
    got = wilcox_test(x, y, conf_level=level)
    if w is not None:
        assert got.statistic == w
    assert got.exact is exact
    assert got.p_value == pytest.approx(p, rel=1e-9)
    # Same steps as R's uniroot: agreement far inside the 1e-4 root tolerance.
    assert got.lower == pytest.approx(lower, abs=1e-9)
    assert got.upper == pytest.approx(upper, abs=1e-9)
    assert got.estimate == pytest.approx(est, abs=1e-9)
    assert got.conf_level == pytest.approx(achieved)


def test_exact_estimate_is_the_median_of_pairwise_differences() -> None:
    x, y = [3.1, 4.7, 2.2, 5.9, 4.4], [1.0, 2.6, 3.3, 0.8]
    diffs = sorted(a - b for a in x for b in y)
    assert wilcox_test(x, y).estimate == pytest.approx(float(np.median(diffs)))


def test_exact_distribution_matches_enumeration() -> None:
    for m, n in [(1, 1), (2, 3), (4, 4), (3, 6), (5, 2)]:
        counts: dict[int, int] = {}
        for chosen in itertools.combinations(range(1, m + n + 1), m):
            w = sum(chosen) - m * (m + 1) // 2
            counts[w] = counts.get(w, 0) + 1
        total = math.comb(m + n, m)
        for q in range(-1, m * n + 1):
            below = sum(c for w, c in counts.items() if w <= q)
            assert pwilcox(q, m, n) == pytest.approx(below / total)
            assert pwilcox(q, m, n, lower_tail=False) == pytest.approx(1 - below / total)


def test_qwilcox_is_the_smallest_quantile_reaching_p() -> None:
    # R 4.2.2: qwilcox(c(0.01, 0.025, 0.5, 0.975), 8, 7) = 8 11 28 45
    assert [qwilcox(p, 8, 7) for p in (0.01, 0.025, 0.5, 0.975)] == [8, 11, 28, 45]
    for m, n in [(4, 5), (9, 9)]:
        for p in (0.005, 0.05, 0.3, 0.7, 0.99):
            q = qwilcox(p, m, n)
            assert pwilcox(q, m, n) >= p - 1e-12
            assert q == 0 or pwilcox(q - 1, m, n) < p


def test_all_tied_samples_have_no_interval() -> None:
    with pytest.raises(AllTied):
        wilcox_test([2.0] * 60, [2.0] * 60)
    with pytest.raises(ValueError, match="at least one"):
        wilcox_test([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        wilcox_test([math.nan, 1.0], [1.0])


def test_average_ranks_share_ties() -> None:
    ranks, ties = average_ranks(np.array([10.0, 20.0, 10.0, 30.0, 20.0, 20.0]))
    assert ranks.tolist() == [1.5, 4.0, 1.5, 6.0, 4.0, 4.0]
    assert sorted(ties.tolist()) == [1, 2, 3]


def test_shifted_ranks_agree_with_ranking_afresh() -> None:
    # The root finder's fast path against ranking c(x - d, y) from scratch, at shifts
    # that make x - d meet y values exactly (cross ties) and at shifts between them.
    rng = np.random.default_rng(7)
    x = rng.integers(0, 12, 40).astype(np.float64) / 2
    y = rng.integers(0, 12, 35).astype(np.float64) / 2
    fast = _ShiftedRanks(x, y)
    for d in [-3.0, -0.5, 0.0, 0.25, 1.0, 2.5, 0.1, 5.75]:
        ranks, ties = average_ranks(np.concatenate([x - d, y]))
        rank_sum, tie_term = fast.at(d)
        assert rank_sum == pytest.approx(float(ranks[: x.size].sum()))
        assert tie_term == pytest.approx(float((ties.astype(np.float64) ** 3 - ties).sum()))


def test_zeroin_finds_a_smooth_root() -> None:
    root = zeroin(lambda v: v * v - 2, 0.0, 2.0, -2.0, 2.0, tol=1e-12)
    assert root == pytest.approx(math.sqrt(2), abs=1e-11)


def test_percentile_r7_by_hand() -> None:
    data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 1000.0]
    # h = (n - 1) p / 100 over the sorted data, interpolated: p25 at h = 2.5, p99 at h = 9.9.
    assert percentile_r7(data, 25) == 3.5
    assert percentile_r7(data, 75) == 8.5
    assert percentile_r7(data, 1) == pytest.approx(1.1)
    assert percentile_r7(data, 99) == pytest.approx(10 + 0.9 * 990)
    assert percentile_r7([4.0], 50) == 4.0
    assert math.isnan(percentile_r7([], 50))


def test_fisher_exact_textbook() -> None:
    # Fisher's lady tasting tea, [[3, 1], [1, 3]]: two-sided p = 34/70 (R: 0.4857).
    assert fisher_exact_2x2(3, 1, 1, 3) == pytest.approx(34 / 70)
    # [[1, 9], [11, 3]] (R's fisher.test: p-value = 0.002759).
    assert fisher_exact_2x2(1, 9, 11, 3) == pytest.approx(0.0027594561852200836, rel=1e-9)
    assert fisher_exact_2x2(0, 0, 0, 0) == 1.0
    with pytest.raises(ValueError):
        fisher_exact_2x2(-1, 2, 3, 4)
