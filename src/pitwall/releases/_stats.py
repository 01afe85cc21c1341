"""The statistics the judge and the A/B reports share, written to agree with R.

``wilcox_test`` is R's ``wilcox.test(x, y, conf.int = TRUE)`` for two
independent samples (R 4.x defaults: ``correct = TRUE``, ``tol.root = 1e-4``,
``digits.rank = Inf``): the exact distribution of W when both samples have
fewer than 50 values and no ties, the normal approximation with tie and
continuity correction otherwise, where the confidence interval and the
Hodges-Lehmann estimate are the roots of the standardised statistic found with
Brent's method exactly as R's ``uniroot`` (``R_zeroin2``) steps, so the numbers
agree with R's beyond the root tolerance. Also here: R-7 percentiles (Kayenta's
IQR detector), Fisher's exact test (R's ``fisher.test`` two-sided rule) and
normal quantiles (the standard library's ``NormalDist``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

_EPS = sys.float_info.epsilon
_STD = NormalDist()
# Exact tables grow as m*n; R's own switch to the normal approximation is at 50.
EXACT_LIMIT = 50


class AllTied(ValueError):
    """Every observation is tied: the rank statistic has no spread."""


def qnorm(p: float) -> float:
    """The standard normal quantile (R's ``qnorm``)."""
    return _STD.inv_cdf(p)


def pnorm(z: float) -> float:
    """The standard normal distribution function (R's ``pnorm``)."""
    return _STD.cdf(z)


def percentile_r7(values: Sequence[float], p: float, presorted: bool = False) -> float:
    """The ``p``-th percentile (0-100) by R's type 7 rule (Apache Commons' ``R_7``); NaN when empty."""
    if not values:
        return math.nan
    data = values if presorted else sorted(values)
    h = (len(data) - 1) * p / 100.0
    lo = math.floor(h)
    if lo + 1 >= len(data):
        return data[-1]
    return data[lo] + (h - lo) * (data[lo + 1] - data[lo])


def average_ranks(values: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Ranks 1..n with ties given their mean rank (R's ``rank``), and the size of each tie group."""
    order = np.argsort(values)  # any order within a tie: its members share one rank
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    counts = np.diff(np.r_[starts, len(values)])
    mean_rank = starts + (counts + 1) / 2.0  # 1-based mean of each tie group
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, counts)
    return ranks, counts.astype(np.int64)


# -- Brent's root finder, step for step as R's zeroin.c (R_zeroin2) -----------------------------------


def zeroin(f: Callable[[float], float], ax: float, bx: float, fa: float, fb: float,
           tol: float = 1e-4, maxit: int = 1000) -> float:
    """A root of ``f`` in [ax, bx] given f(ax) and f(bx) of opposite signs, as R's ``uniroot`` finds it."""
    a, b, c = ax, bx, ax
    fc = fa
    if fa == 0.0:
        return a
    if fb == 0.0:
        return b
    for _ in range(maxit + 1):
        prev_step = b - a
        if abs(fc) < abs(fb):  # keep b the best approximation
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol_act = 2 * _EPS * abs(b) + tol / 2
        new_step = (c - b) / 2
        if abs(new_step) <= tol_act or fb == 0.0:
            return b
        if abs(prev_step) >= tol_act and abs(fa) > abs(fb):
            cb = c - b
            if a == c:  # two points: linear interpolation
                t1 = fb / fa
                p = cb * t1
                q = 1.0 - t1
            else:  # inverse quadratic interpolation
                q = fa / fc
                t1 = fb / fc
                t2 = fb / fa
                p = t2 * (cb * q * (q - t1) - (b - a) * (t1 - 1.0))
                q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
            if p > 0:
                q = -q
            else:
                p = -p
            if p < (0.75 * cb * q - abs(tol_act * q) / 2) and p < abs(prev_step * q / 2):
                new_step = p / q
        if abs(new_step) < tol_act:
            new_step = tol_act if new_step > 0 else -tol_act
        a, fa = b, fb
        b += new_step
        fb = f(b)
        if (fb > 0 and fc > 0) or (fb < 0 and fc < 0):
            c, fc = a, fa
    return b


# -- The exact distribution of the Wilcoxon rank-sum statistic -----------------------------------------


@lru_cache(maxsize=64)
def _wilcox_counts(m: int, n: int) -> tuple[int, ...]:
    """How many of the C(m+n, m) rank arrangements give W = 0..m*n (R's ``cwilcox``).

    The counts are the coefficients of the Gaussian binomial [m+n choose m]_q,
    built one factor (1 - q^(n+i)) / (1 - q^i) at a time; every partial product
    is itself a Gaussian binomial, so each division is exact in integers.
    """
    poly = [1]
    for i in range(1, m + 1):
        grown = [*poly, *([0] * (n + i))]
        for k in range(len(grown) - 1, n + i - 1, -1):  # multiply by (1 - q^(n+i))
            grown[k] -= grown[k - n - i]
        for k in range(i, len(grown)):  # divide by (1 - q^i)
            grown[k] += grown[k - i]
        while len(grown) > 1 and grown[-1] == 0:
            grown.pop()
        poly = grown
    return tuple(poly)


def pwilcox(q: float, m: int, n: int, lower_tail: bool = True) -> float:
    """P(W <= q) (or P(W > q)) for sample sizes m and n (R's ``pwilcox``)."""
    counts = _wilcox_counts(m, n)
    total = math.comb(m + n, n)
    k = math.floor(q + 1e-7)
    if k < 0:
        below = 0
    elif k >= m * n:
        below = total
    else:
        below = sum(counts[: k + 1])
    return below / total if lower_tail else (total - below) / total


def qwilcox(p: float, m: int, n: int) -> int:
    """The smallest q with P(W <= q) >= p (R's ``qwilcox``, with its 10-epsilon fuzz)."""
    counts = _wilcox_counts(m, n)
    total = float(math.comb(m + n, n))
    acc = 0.0
    if p <= 0.5:
        target = p - 10 * _EPS
        for q, c in enumerate(counts):
            acc += c / total
            if acc >= target:
                return q
        return m * n
    target = 1 - p + 10 * _EPS
    for q, c in enumerate(counts):
        acc += c / total
        if acc > target:
            return m * n - q
    return 0


# -- wilcox.test ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WilcoxResult:
    """What R's ``wilcox.test(x, y, conf.int = TRUE)`` prints, for the shift x - y."""

    statistic: float  # W: the rank sum of x less n_x(n_x+1)/2
    p_value: float
    lower: float
    upper: float
    estimate: float  # the Hodges-Lehmann "difference in location"
    conf_level: float  # the level achieved (below the one asked for when exact tables cannot reach it)
    exact: bool


def wilcox_test(x: Sequence[float], y: Sequence[float], conf_level: float = 0.95,
                mu: float = 0.0, exact: bool | None = None, correct: bool = True,
                tol_root: float = 1e-4) -> WilcoxResult:
    """R's two-sided, two-sample ``wilcox.test`` with ``conf.int = TRUE``.

    Raises ``ValueError`` for an empty or non-finite sample, and ``AllTied``
    when the normal approximation has no spread (every value the same).
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.size == 0 or ys.size == 0:
        raise ValueError("both samples need at least one value")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("samples must be finite numbers")
    if not 0.0 < conf_level < 1.0:
        raise ValueError(f"conf_level must be between 0 and 1, got {conf_level}")
    nx, ny = xs.size, ys.size
    ranks, ties = average_ranks(np.concatenate([xs - mu, ys]))
    statistic = float(ranks[:nx].sum() - nx * (nx + 1) / 2)
    use_exact = (nx < EXACT_LIMIT and ny < EXACT_LIMIT) if exact is None else exact
    if use_exact and bool((ties == 1).all()):
        return _exact(xs, ys, statistic, conf_level)
    return _normal(xs, ys, statistic, ties, conf_level, mu, correct, tol_root)


def _exact(xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64], statistic: float,
           conf_level: float) -> WilcoxResult:
    nx, ny = xs.size, ys.size
    if statistic > nx * ny / 2:
        p = pwilcox(statistic - 1, nx, ny, lower_tail=False)
    else:
        p = pwilcox(statistic, nx, ny)
    alpha = 1 - conf_level
    diffs = np.sort(np.subtract.outer(xs, ys).ravel())
    qu = qwilcox(alpha / 2, nx, ny) or 1
    ql = nx * ny - qu
    achieved = 2 * pwilcox(qu - 1, nx, ny)
    level = 1 - achieved if achieved - alpha > alpha / 2 else conf_level
    return WilcoxResult(statistic=statistic, p_value=min(2 * p, 1.0), lower=float(diffs[qu - 1]),
                        upper=float(diffs[ql]), estimate=float(np.median(diffs)),
                        conf_level=level, exact=True)


def _sigma(nx: int, ny: int, ties: npt.NDArray[np.int64]) -> float:
    n = nx + ny
    tie_term = float((ties.astype(np.float64) ** 3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    return math.sqrt((nx * ny / 12) * ((n + 1) - tie_term))


def _normal(xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64], statistic: float,
            ties: npt.NDArray[np.int64], conf_level: float, mu: float, correct: bool,
            tol_root: float) -> WilcoxResult:
    nx, ny = xs.size, ys.size
    z = statistic - nx * ny / 2
    sigma = _sigma(nx, ny, ties)
    if sigma == 0:
        raise AllTied("cannot compute confidence interval when all observations are tied")
    z = (z - (math.copysign(0.5, z) if correct and z != 0 else 0.0)) / sigma
    p_value = min(1.0, 2 * pnorm(-abs(z)))

    shifted = _ShiftedRanks(xs, ys)

    def w(d: float, with_correction: bool) -> float:
        rank_sum, tie_term = shifted.at(d)
        dz = rank_sum - nx * (nx + 1) / 2 - nx * ny / 2
        corr = math.copysign(0.5, dz) if with_correction and dz != 0 else 0.0
        n = nx + ny
        s = math.sqrt((nx * ny / 12) * ((n + 1) - tie_term / (n * (n - 1))))
        if s == 0:
            raise AllTied("cannot compute confidence interval when all observations are tied")
        return (dz - corr) / s

    mumin = float(xs.min() - ys.max())
    mumax = float(xs.max() - ys.min())
    w_min, w_max = w(mumin, correct), w(mumax, correct)

    def root(zq: float) -> float:
        f_lower = w_min - zq
        if f_lower <= 0:
            return mumin
        f_upper = w_max - zq
        if f_upper >= 0:
            return mumax
        return zeroin(lambda d: w(d, correct) - zq, mumin, mumax, f_lower, f_upper, tol_root)

    alpha = 1 - conf_level
    lower = root(qnorm(1 - alpha / 2))
    upper = root(qnorm(alpha / 2))
    # R sets correct <- FALSE before solving W(d) = 0 for the estimate.
    e_lower, e_upper = w(mumin, False), w(mumax, False)
    if e_lower * e_upper > 0:
        raise AllTied("the location estimate has no sign change between the sample extremes")
    estimate = zeroin(lambda d: w(d, False), mumin, mumax, e_lower, e_upper, tol_root)
    return WilcoxResult(statistic=statistic, p_value=p_value, lower=lower, upper=upper,
                        estimate=estimate, conf_level=conf_level, exact=False)


class _ShiftedRanks:
    """Rank sum of x - d and the tie term sum(t^3 - t) of c(x - d, y), without re-sorting per d.

    x and y are sorted once; x - d stays sorted (rounding is monotone), so each
    group of equal x - d values finds its equals and its lower neighbours in y
    by binary search. Equality is of the computed doubles, as R's ``rank`` sees them.
    """

    def __init__(self, xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64]) -> None:
        self.xs = np.sort(xs)
        self.ys = np.sort(ys)
        y_counts = np.diff(np.r_[np.flatnonzero(np.r_[True, self.ys[1:] != self.ys[:-1]]), self.ys.size])
        self.y_ties = float((y_counts.astype(np.float64) ** 3 - y_counts).sum())

    def at(self, d: float) -> tuple[float, float]:
        v = self.xs - d
        starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
        a = np.diff(np.r_[starts, v.size]).astype(np.float64)
        values = v[starts]
        below = np.searchsorted(self.ys, values, side="left")
        b = (np.searchsorted(self.ys, values, side="right") - below).astype(np.float64)
        mean_rank = starts + below + (a + b + 1) / 2  # 1-based mean rank of each group of equals
        rank_sum = float((a * mean_rank).sum())
        t = a + b
        tie_term = float((t**3 - t - (b**3 - b)).sum()) + self.y_ties
        return rank_sum, tie_term


# -- Fisher's exact test -------------------------------------------------------------------------------


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact_2x2(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p of Fisher's exact test on [[a, b], [c, d]] (R's ``fisher.test`` rule).

    The p-value sums the hypergeometric probabilities of every table with the
    same margins that is no more likely than the one observed, with R's
    relative tolerance of 1e-7 for ties in probability.
    """
    if min(a, b, c, d) < 0:
        raise ValueError("a contingency table has no negative counts")
    row1, col1, n = a + b, a + c, a + b + c + d
    if n == 0:
        return 1.0
    lo, hi = max(0, col1 - (n - row1)), min(row1, col1)
    log_total = _log_choose(n, col1)

    def logp(k: int) -> float:
        return _log_choose(row1, k) + _log_choose(n - row1, col1 - k) - log_total

    observed = logp(a)
    probs = [logp(k) for k in range(lo, hi + 1)]
    p = sum(math.exp(v) for v in probs if v <= observed + math.log1p(1e-7))
    return min(1.0, p)
