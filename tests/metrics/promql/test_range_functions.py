"""Range-vector functions against hand-computed and Prometheus testdata values.

Expected values come from Prometheus' promql/promqltest/testdata/functions.test
(the comments say which block) or are computed by hand in the test.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from pitwall.core.labels import Labels, labels_from_dict
from pitwall.metrics.promql.range_functions import (
    RANGE_FUNCTIONS,
    FunctionArgError,
    go_format_g,
)
from pitwall.metrics.promql.values import RangeSamples

MIN = 60_000


def make_rs(
    series: Sequence[tuple[dict[str, str], Sequence[tuple[int, float]]]],
    step_times: Sequence[int],
    range_ms: int,
) -> RangeSamples:
    """RangeSamples with Prometheus 3 left-open windows (t - range, t]."""
    labels: list[Labels] = [labels_from_dict(lbls) for lbls, _ in series]
    ts = np.array([t for _, pts in series for t, _ in pts], dtype=np.int64)
    values = np.array([v for _, pts in series for _, v in pts], dtype=np.float64)
    offsets = np.zeros(len(series) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(pts) for _, pts in series])
    steps = np.asarray(step_times, dtype=np.int64)
    lo = np.zeros((len(series), len(steps)), dtype=np.int64)
    hi = np.zeros_like(lo)
    for s in range(len(series)):
        own = ts[offsets[s] : offsets[s + 1]]
        lo[s] = offsets[s] + np.searchsorted(own, steps - range_ms, side="right")
        hi[s] = offsets[s] + np.searchsorted(own, steps, side="right")
    return RangeSamples(labels, ts, values, offsets, lo, hi, steps, range_ms)


def load(interval_ms: int, values: Sequence[float], start: int = 0) -> list[tuple[int, float]]:
    return [(start + i * interval_ms, float(v)) for i, v in enumerate(values)]


def series_expr(start: float, step: float, times: int) -> list[float]:
    """Prometheus' ``a+bxn`` load notation: n+1 values."""
    return [start + step * i for i in range(times + 1)]


class Notes:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.infos: list[str] = []


def call(name: str, rs: RangeSamples, *args: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, Notes]:
    notes = Notes()
    steps = rs.step_times.shape[0]
    arrays = [np.broadcast_to(np.asarray(a, dtype=np.float64), (steps,)).copy() for a in args]
    values, present = RANGE_FUNCTIONS[name](rs, arrays, notes.warnings.append, notes.infos.append)
    assert values.shape == present.shape == rs.lo.shape
    return values, present, notes


def single(name: str, rs: RangeSamples, *args: float) -> list[float | None]:
    """Values of every series at the only step; None where absent."""
    values, present, _ = call(name, rs, *args)
    return [float(values[s, 0]) if present[s, 0] else None for s in range(values.shape[0])]


def approx(expected: Sequence[float | None]) -> list[object]:
    return [
        None
        if e is None
        else pytest.approx(e, rel=1e-9, abs=0, nan_ok=True)
        if not math.isnan(e)
        else pytest.approx(math.nan, nan_ok=True)
        for e in expected
    ]


# --------------------------------------------------------------------------
# resets, changes (functions.test "Testdata for resets() and changes()").

HTTP_REQUESTS = [
    ({"path": "/foo"}, load(5 * MIN, [1, 2, 3, 0, 1, 0, 0, 1, 2, 0])),
    ({"path": "/bar"}, load(5 * MIN, [1, 2, 3, 4, 5, 1, 2, 3, 4, 5])),
    ({"path": "/biz"}, load(5 * MIN, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])),
]


@pytest.mark.parametrize(
    ("range_min", "expected"),
    [(5, [None, None, None]), (10, [0, 0, 0]), (20, [1, 0, 0]), (32, [2, 1, 0]), (50, [3, 1, 0])],
)
def test_resets(range_min: int, expected: list[float | None]) -> None:
    rs = make_rs(HTTP_REQUESTS, [50 * MIN], range_min * MIN)
    assert single("resets", rs) == expected


@pytest.mark.parametrize(
    ("range_min", "expected"),
    [(5, [None, None, None]), (6, [0, 0, 0]), (20, [2, 2, 0]), (30, [3, 4, 0]), (50, [7, 8, 1])],
)
def test_changes(range_min: int, expected: list[float | None]) -> None:
    rs = make_rs(HTTP_REQUESTS, [50 * MIN], range_min * MIN)
    assert single("changes", rs) == expected


def test_changes_treats_nan_to_nan_as_no_change() -> None:
    nan = math.nan
    rs = make_rs(
        [({"a": "b"}, load(5 * MIN, [nan, nan, nan])), ({"a": "c"}, load(5 * MIN, [0, nan, 0]))],
        [15 * MIN],
        20 * MIN,
    )
    assert single("changes", rs) == [0, 2]


# --------------------------------------------------------------------------
# increase, rate, delta: extrapolation (functions.test "Tests for increase()").

COUNTERS = [
    ({"__name__": "http_requests_total", "path": "/foo"}, load(5 * MIN, series_expr(0, 10, 10))),
    (
        {"__name__": "http_requests_total", "path": "/bar"},
        load(5 * MIN, series_expr(0, 18, 5) + series_expr(0, 18, 5)),
    ),
    ({"__name__": "http_requests_total", "path": "/dings"}, load(5 * MIN, series_expr(10, 10, 10))),
    ({"__name__": "http_requests_total", "path": "/bumms"}, load(5 * MIN, series_expr(1, 10, 10))),
]


def test_increase_extrapolates_to_window_edges_and_corrects_resets() -> None:
    rs = make_rs(COUNTERS, [50 * MIN], 50 * MIN)
    assert single("increase", rs) == approx([100, 160, 100, 100])


def test_increase_stops_extrapolation_at_the_counter_zero_point() -> None:
    # The window starts 50m before the first sample: extrapolation goes half an
    # interval, or less when the counter would reach zero earlier.
    rs = make_rs(COUNTERS, [50 * MIN], 100 * MIN)
    assert single("increase", rs) == approx([100, 162, 105, 101])


def test_rate_is_increase_per_second_of_range() -> None:
    rs = make_rs(COUNTERS, [50 * MIN], 50 * MIN)
    assert single("rate", rs) == approx([100 / 3000, 160 / 3000, 100 / 3000, 100 / 3000])


def test_rate_needs_two_samples() -> None:
    rs = make_rs([({"__name__": "x_total"}, load(MIN, [1, 2, 3]))], [0, MIN, 2 * MIN], 90_000)
    values, present, _ = call("rate", rs)
    assert present.tolist() == [[False, True, True]]
    assert values[0, 1] == pytest.approx(1 / 60 * (60 + 30) / 60 * 60 / 90)


def test_delta_does_not_treat_decreases_as_resets() -> None:
    # Samples at 0..4m, window (−1m, 4m]: all 5 samples, 4m interval, extrapolate
    # 1m at the start (< 1.1 * 1m average) and nothing at the end.
    rs = make_rs([({}, load(MIN, [10, 8, 6, 4, 2]))], [4 * MIN], 5 * MIN)
    assert single("delta", rs) == approx([-8 * 5 / 4])
    assert single("increase", rs) != approx([-8 * 5 / 4])


def test_rate_with_infinite_pre_reset_value() -> None:
    rs = make_rs([({}, load(MIN, [1, math.inf, 0, 1]))], [3 * MIN], 3 * MIN + 1)
    assert single("increase", rs)[0] == math.inf


def test_possible_non_counter_info() -> None:
    rs = make_rs(
        [
            ({"__name__": "http_requests"}, load(MIN, [1, 2, 3])),
            ({"__name__": "ok_total"}, load(MIN, [1, 2, 3])),
            ({"__name__": "only_one_sample"}, load(MIN, [1])),
        ],
        [2 * MIN],
        3 * MIN,
    )
    _, _, notes = call("rate", rs)
    assert notes.infos == [
        'metric might not be a counter, name does not end in _total/_sum/_count/_bucket: "http_requests"'
    ]
    _, _, notes = call("delta", rs)
    assert notes.infos == []


# --------------------------------------------------------------------------
# irate, idelta.


def test_irate_uses_last_two_samples_and_handles_reset() -> None:
    rs = make_rs([({}, load(10_000, [0, 10, 30])), ({}, load(10_000, [5, 10, 4]))], [20_000], MIN)
    assert single("irate", rs) == approx([2.0, 0.4])
    assert single("idelta", rs) == approx([20.0, -6.0])


def test_irate_absent_with_one_sample() -> None:
    rs = make_rs([({}, load(10_000, [1]))], [0], MIN)
    assert single("irate", rs) == [None]


# --------------------------------------------------------------------------
# deriv, predict_linear (functions.test "Tests for deriv() and predict_linear()").

RESET_MIDDLE = [({}, load(5 * MIN, series_expr(0, 10, 4) + series_expr(0, 10, 5)))]


def test_deriv_least_squares() -> None:
    canary = [({}, load(5 * MIN, series_expr(0, 80, 10)))]
    assert single("deriv", make_rs(canary, [50 * MIN], 50 * MIN)) == approx([0.26666666666666666])
    rs = make_rs(RESET_MIDDLE, [50 * MIN], 100 * MIN)
    assert single("deriv", rs) == approx([0.010606060606060607])


def test_deriv_is_nan_with_infinities() -> None:
    values = [-math.inf, *series_expr(0, 80, 10), math.inf]
    rs = make_rs([({}, load(5 * MIN, values))], [100 * MIN], 100 * MIN)
    assert math.isnan(single("deriv", rs)[0] or 0.0)


def test_deriv_of_constant_series_is_zero() -> None:
    rs = make_rs([({}, load(MIN, [3, 3, 3])), ({}, load(MIN, [math.inf, math.inf]))], [2 * MIN], 5 * MIN)
    result = single("deriv", rs)
    assert result[0] == 0.0
    assert math.isnan(result[1] or 0.0)


def test_predict_linear_intercept_at_step_time() -> None:
    rs = make_rs(RESET_MIDDLE, [50 * MIN], 50 * MIN)
    assert single("predict_linear", rs, 3600) == approx([70])
    # Window ending at 3000s, prediction 3600s later (the @ 3000 case).
    rs = make_rs(RESET_MIDDLE, [50 * MIN], 55 * MIN)
    assert single("predict_linear", rs, 3600) == approx([76.81818181818181])


# --------------------------------------------------------------------------
# double_exponential_smoothing.


def test_double_exponential_smoothing_by_hand() -> None:
    # s1=1, b=2; i=1: s1 = .5*3 + .5*(1+2) = 3; i=2: b = .5*(3-1) + .5*2 = 2,
    # s1 = .5*4 + .5*(3+2) = 4.5.
    rs = make_rs([({}, load(MIN, [1, 3, 4])), ({}, load(MIN, [7]))], [2 * MIN], 3 * MIN)
    assert single("double_exponential_smoothing", rs, 0.5, 0.5) == approx([4.5, None])
    assert RANGE_FUNCTIONS["holt_winters"] is RANGE_FUNCTIONS["double_exponential_smoothing"]


def test_double_exponential_smoothing_linear_trend() -> None:
    # functions.test: 0+10x1000 sampled every 10s, at 8000s over 1m -> 8000.
    rs = make_rs([({}, load(10_000, series_expr(0, 10, 1000)))], [8_000_000], MIN)
    assert single("double_exponential_smoothing", rs, 0.01, 0.1) == approx([8000])


@pytest.mark.parametrize(
    ("sf", "tf", "message"),
    [
        (1.0, 0.5, "invalid smoothing factor. Expected: 0 < sf < 1, got: 1.000000"),
        (0.5, 0.0, "invalid trend factor. Expected: 0 < tf < 1, got: 0.000000"),
        (math.nan, 0.5, "invalid smoothing factor. Expected: 0 < sf < 1, got: NaN"),
    ],
)
def test_double_exponential_smoothing_rejects_factors(sf: float, tf: float, message: str) -> None:
    rs = make_rs([({}, load(MIN, [1]))], [0], MIN)
    with pytest.raises(FunctionArgError) as err:
        call("double_exponential_smoothing", rs, sf, tf)
    assert err.value.message == message


def test_double_exponential_smoothing_factors_unchecked_without_samples() -> None:
    rs = make_rs([({}, load(MIN, [1]))], [10 * MIN], MIN)
    _, present, _ = call("double_exponential_smoothing", rs, 2.0, 2.0)
    assert not present.any()


# --------------------------------------------------------------------------
# Sums and means (functions.test "Tests for avg_over_time" and extremes).


def over_time(name: str, values: Sequence[float], interval: int = 10_000, at: int = 55_000) -> float | None:
    rs = make_rs([({}, load(interval, values))], [at], MIN)
    return single(name, rs)[0]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2, 3, 4, 5], 3),
        ([1, 2, 3, 4, math.inf], math.inf),
        ([1, 2, 3, math.inf, -math.inf], math.nan),
        ([math.inf, 0, math.inf], math.inf),
        ([math.inf, math.inf, math.inf, -math.inf], math.nan),
        ([-math.inf, 0, -math.inf], -math.inf),
        ([9.988465674311579e307, 9.988465674311579e307], 9.988465674311579e307),
        ([-9.988465674311579e307] * 3, -9.988465674311579e307),
        ([-9.988465674311579e307, 9.988465674311579e307], 0),
        ([1, 2, 3, math.nan, math.nan], math.nan),
    ],
)
def test_avg_over_time_extremes(values: list[float], expected: float) -> None:
    assert [over_time("avg_over_time", values)] == approx([expected])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1e10, 1e-6, 1e-6, 1e-6, 1e-6, 1e-6], 1.6666666666666675e09),
        (
            [
                5.30921651659898,
                0.961118537914768,
                1.62091361305318,
                0.865089463758091,
                0.323055185914577,
                0.951811357687154,
            ],
            1.67186744582113,
        ),
        ([1.78264e50, 0.76342771, 1.9592258, 7.69805412, 458.90154], 3.56528e49),
        ([-1.78264e215, 0.76342771, 1.9592258, 2.258e220, 7.69805412, -458.90154], 3.76330362266667e219),
    ],
)
def test_avg_over_time_kahan(values: list[float], expected: float) -> None:
    assert over_time("avg_over_time", values, interval=5_000) == pytest.approx(expected, rel=1e-12)


def test_sum_and_avg_keep_small_values_next_to_huge_ones() -> None:
    rs = make_rs([({}, load(10_000, [1, 1e100, 1, -1e100]))], [MIN], 2 * MIN)
    assert single("sum_over_time", rs) == [2.0]
    assert single("avg_over_time", rs) == [0.5]


def test_sum_and_count_over_time_windows() -> None:
    rs = make_rs([({}, load(10_000, [1, 2, 3, 4, 5]))], [0, 20_000, 55_000, 200_000], 20_000)
    sums, present, _ = call("sum_over_time", rs)
    counts, _, _ = call("count_over_time", rs)
    assert present.tolist() == [[True, True, True, False]]
    assert sums[0, :3].tolist() == [1, 5, 5]
    assert counts[0, :3].tolist() == [1, 2, 1]


def test_integer_and_float_paths_agree() -> None:
    rng = np.random.default_rng(1)
    ints = rng.integers(-1000, 1000, 50).astype(float)
    rs_int = make_rs([({}, load(1000, ints))], list(range(0, 50_000, 3000)), 10_000)
    rs_float = make_rs([({}, load(1000, ints + 0.25))], list(range(0, 50_000, 3000)), 10_000)
    s_int, p, _ = call("sum_over_time", rs_int)
    s_float, _, _ = call("sum_over_time", rs_float)
    counts, _, _ = call("count_over_time", rs_int)
    np.testing.assert_allclose(s_float[p], s_int[p] + 0.25 * counts[p], rtol=1e-12)


# --------------------------------------------------------------------------
# Variance.


def test_stddev_and_stdvar_over_time() -> None:
    values = [2, 4, 4, 4, 5, 5, 7, 9]
    rs = make_rs([({}, load(1000, values))], [7000], 10_000)
    assert single("stdvar_over_time", rs) == approx([4.0])
    assert single("stddev_over_time", rs) == approx([2.0])
    assert over_time("stddev_over_time", [1, math.nan, 3]) is not None
    assert math.isnan(over_time("stddev_over_time", [1, math.nan, 3]) or 0.0)


# --------------------------------------------------------------------------
# min/max and timestamps.


def test_min_max_over_time_ignore_nan_unless_all_nan() -> None:
    nan = math.nan
    assert over_time("max_over_time", [nan, 1, nan, 0]) == 1
    assert over_time("min_over_time", [nan, 1, nan, 0]) == 0
    assert math.isnan(over_time("max_over_time", [nan, nan]) or 0.0)
    assert over_time("max_over_time", [3, math.inf, -1]) == math.inf


def test_overlapping_windows_reduce_correctly() -> None:
    values = [5, 1, 4, 2, 3, 0, 6]
    rs = make_rs([({}, load(1000, values)), ({}, load(1000, [9, 8]))], list(range(0, 7000, 1000)), 3000)
    maxes, present, _ = call("max_over_time", rs)
    expected = [max(values[max(0, i - 2) : i + 1]) for i in range(7)]
    assert maxes[0].tolist() == expected
    assert present[1].tolist() == [True, True, True, True, False, False, False]
    assert maxes[1, :4].tolist() == [9, 9, 9, 8]


def test_ts_of_functions() -> None:
    # Samples at 0,10,...,40s; the maximum 5 occurs twice: the later one wins.
    values = [1, 5, 2, 5, 0]
    assert over_time("ts_of_max_over_time", values, at=40_000) == 30.0
    assert over_time("ts_of_min_over_time", values, at=40_000) == 40.0
    assert over_time("ts_of_first_over_time", values, at=40_000) == 0.0
    assert over_time("ts_of_last_over_time", values, at=40_000) == 40.0
    assert over_time("ts_of_max_over_time", [math.nan, math.nan], at=40_000) == 10.0
    assert over_time("first_over_time", values, at=40_000) == 1
    assert over_time("last_over_time", values, at=40_000) == 0
    assert over_time("present_over_time", values, at=40_000) == 1


# --------------------------------------------------------------------------
# Quantiles.


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0, 0),
        (0.5, 5),
        (0.75, 7.5),
        (0.95, 9.5),
        (1, 10),
        (-1, -math.inf),
        (2, math.inf),
        (math.nan, math.nan),
    ],
)
def test_quantile_over_time(q: float, expected: float) -> None:
    values = list(range(11))[::-1]  # order must not matter
    result = over_time_q(values, q)
    assert [result] == approx([expected])


def over_time_q(values: Sequence[float], q: float) -> float | None:
    rs = make_rs([({}, load(1000, values))], [len(values) * 1000], 60_000)
    return single("quantile_over_time", rs, q)[0]


def test_quantile_over_time_puts_nan_first() -> None:
    # Sorted as Prometheus does: [NaN, 1, 2]; rank 0.5*2 = 1 -> 1.
    assert over_time_q([2, math.nan, 1], 0.5) == 1
    assert math.isnan(over_time_q([2, math.nan, 1], 0) or 0.0)


def test_quantile_over_time_warns_for_invalid_quantile() -> None:
    rs = make_rs([({}, load(1000, [1, 2]))], [2000, 100_000], 5000)
    _, present, notes = call("quantile_over_time", rs, np.array([1.5, -0.5]))
    # Only steps with samples warn.
    assert present.tolist() == [[True, False]]
    assert notes.warnings == ["quantile value should be between 0 and 1, got 1.5"]


def test_mad_over_time() -> None:
    # Median 3, deviations [2, 1, 0, 1, 6] -> median 1.
    assert over_time("mad_over_time", [1, 2, 3, 4, 9]) == 1


def test_go_format_g() -> None:
    assert [go_format_g(x) for x in (1.5, -0.1, 1e6, 123456.0, 1e-5, math.nan, math.inf)] == [
        "1.5",
        "-0.1",
        "1e+06",
        "123456",
        "1e-05",
        "NaN",
        "+Inf",
    ]
    assert [go_format_g(x, 2) for x in (10.0, 100.0, 7.5, 0.01, 1.0)] == ["10", "1e+02", "7.5", "0.01", "1"]


def test_empty_input() -> None:
    rs = make_rs([], [0, 1000], MIN)
    for name in RANGE_FUNCTIONS:
        args = (
            (0.5,)
            if name in ("quantile_over_time", "predict_linear")
            else (0.5, 0.5)
            if "smoothing" in name or name == "holt_winters"
            else ()
        )
        values, present, _ = call(name, rs, *args)
        assert values.shape == (0, 2) and not present.any()


# --------------------------------------------------------------------------
# Speed (printed, not asserted).


def _benchmark_rs(num_series: int, steps: int, per_window: int) -> RangeSamples:
    scrape = 15_000
    range_ms = 5 * MIN
    step_ms = 60_000
    n_samples = (steps - 1) * step_ms // scrape + per_window + 1
    base = np.arange(n_samples, dtype=np.int64) * scrape
    rng = np.random.default_rng(0)
    incs = rng.integers(0, 5, size=(num_series, n_samples)).astype(np.float64)
    values = np.cumsum(incs, axis=1).ravel()
    ts = np.tile(base, num_series)
    offsets = np.arange(num_series + 1, dtype=np.int64) * n_samples
    step_times = range_ms + np.arange(steps, dtype=np.int64) * step_ms
    lo_one = np.searchsorted(base, step_times - range_ms, side="right")
    hi_one = np.searchsorted(base, step_times, side="right")
    lo = offsets[:-1, None] + lo_one[None, :]
    hi = offsets[:-1, None] + hi_one[None, :]
    labels = [(("__name__", "x_total"), ("i", str(i))) for i in range(num_series)]
    return RangeSamples(labels, ts, values, offsets, lo, hi, step_times, range_ms)


@pytest.mark.slow
def test_rate_speed_10k_series() -> None:
    rs = _benchmark_rs(10_000, 121, 20)
    start = time.perf_counter()
    values, present, _ = call("rate", rs)
    elapsed = time.perf_counter() - start
    print(f"\nrate over 10k series x 121 steps x 20 samples/window: {elapsed * 1000:.1f} ms")
    assert present.all() and np.isfinite(values).all()


def _assert_c_is_numpy(fn: str, rs: RangeSamples, monkeypatch: pytest.MonkeyPatch, *args: float) -> None:
    """``fn`` through the C helper and through the numpy path: the same cells, the same bits."""
    from pitwall.metrics.promql import range_functions

    got = call(fn, rs, *args)
    with monkeypatch.context() as m:
        m.setattr(range_functions, "_metricsc", None)
        want = call(fn, rs, *args)
    assert np.array_equal(got[1], want[1])
    assert np.array_equal(got[0].view(np.uint64)[got[1]], want[0].view(np.uint64)[want[1]])


@pytest.fixture
def native() -> None:
    """Skips a test of the C helper where it was not built."""
    from pitwall.metrics.promql import range_functions

    if range_functions._metricsc is None:
        pytest.skip("C helper not built")


def _random_rs(
    rng: np.random.Generator, points: Callable[[int], list[tuple[int, float]]], span: int = 32000,
    max_range: int = 9000,
) -> RangeSamples:
    """1-5 series of ``points(i)`` under random steps over [0, span) and a random range."""
    series = [({"i": str(i)}, points(i)) for i in range(int(rng.integers(1, 6)))]
    return make_rs(series, list(range(0, span, int(rng.integers(500, 4000)))), int(rng.integers(1000, max_range)))


@pytest.mark.usefixtures("native")
@pytest.mark.parametrize("fn", ["max_over_time", "min_over_time"])
def test_min_max_over_time_in_c_is_the_reduceat_answer(fn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bit for bit (signed zeros and NaN included) over random overlapping windows."""
    rng = np.random.default_rng(5)
    pool = [math.nan, 0.0, -0.0, math.inf, -math.inf, 1.0, -1.0, 2.5]
    for _ in range(50):
        rs = _random_rs(rng, lambda i: load(1000, [pool[int(k)] for k in rng.integers(0, len(pool),
                                                                                      size=int(rng.integers(0, 30)))]))
        _assert_c_is_numpy(fn, rs, monkeypatch)


@pytest.mark.usefixtures("native")
@pytest.mark.parametrize("fn", ["sum_over_time", "avg_over_time"])
def test_sum_avg_over_time_in_c_is_the_column_answer(fn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bit for bit with the column-wise Kahan loops, overflow to the incremental mean included."""
    rng = np.random.default_rng(9)
    for k in range(60):

        def points(i: int, k: int = k) -> list[tuple[int, float]]:
            n = int(rng.integers(0, 30))
            vals = rng.normal(size=n) * 10.0 ** float(rng.integers(-5, 10))
            if k % 3 == 0:  # sums that overflow, and values that cancel
                vals[rng.random(n) < 0.3] = 1.5e308 * rng.choice([-1.0, 1.0])
            if k % 5 == 0:
                vals[rng.random(n) < 0.1] = rng.choice([math.nan, math.inf, -math.inf])
            return load(1000, vals.tolist())

        _assert_c_is_numpy(fn, _random_rs(rng, points), monkeypatch)


@pytest.mark.usefixtures("native")
@pytest.mark.parametrize("fn", ["deriv", "predict_linear", "stddev_over_time", "stdvar_over_time"])
def test_regression_and_variance_in_c_are_the_column_answer(fn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bit for bit with the column-wise Kahan loops: irregular times, constant and infinite windows, NaN, -0."""
    rng = np.random.default_rng(24)
    pool = [math.nan, 0.0, -0.0, math.inf, -math.inf, 1.0, -1.0, 2.5]
    for k in range(60):

        def points(i: int, k: int = k) -> list[tuple[int, float]]:
            n = int(rng.integers(0, 30))
            times = np.cumsum(rng.integers(1, 2500, size=n)).tolist()
            vals = rng.normal(size=n) * 10.0 ** float(rng.integers(-5, 10))
            if k % 3 == 0:  # constant windows (slope 0, or NaN when infinite)
                vals[:] = pool[k % len(pool)]
            if k % 4 == 1:  # special values among ordinary ones, and overflowing sums
                special = [*pool, 1.5e308, -1.5e308]
                vals[rng.random(n) < 0.2] = special[int(rng.integers(0, len(special)))]
            return list(zip(times, vals.tolist(), strict=True))

        args = (float(rng.integers(-600, 600)),) if fn == "predict_linear" else ()
        _assert_c_is_numpy(fn, _random_rs(rng, points), monkeypatch, *args)


@pytest.mark.usefixtures("native")
def test_quantile_over_time_in_c_is_the_padded_sort_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bit for bit with the padded-row sort: NaN samples, infinities, ties, q outside [0, 1] and NaN.

    A series holds one sign of zero: with both in a window the sorts (numpy's, Go's) leave their order open.
    """
    rng = np.random.default_rng(77)

    def points(i: int) -> list[tuple[int, float]]:
        zero = -0.0 if rng.random() < 0.5 else 0.0
        pool = [math.nan, zero, math.inf, -math.inf, 1.0, -1.0, 2.5, 1e-300]
        n = int(rng.integers(0, 70))  # past 48 samples the C path sorts with qsort
        vals = rng.normal(size=n).round(int(rng.integers(0, 3)))  # ties
        vals[rng.random(n) < 0.25] = pool[int(rng.integers(0, len(pool)))]
        return load(1000, [zero if v == 0 else v for v in vals.tolist()])

    for k in range(80):
        rs = _random_rs(rng, points, span=72000, max_range=60000)
        q = [math.nan, -0.5, 1.5, 0.0, 1.0, float(rng.random())][k % 6]
        _assert_c_is_numpy("quantile_over_time", rs, monkeypatch, q)


def test_window_loops_in_c_refuse_windows_outside_the_values() -> None:
    """A bad window or output size is a ValueError, never a read past the arrays."""
    from pitwall.metrics.promql import range_functions

    c = range_functions._metricsc
    if c is None:
        pytest.skip("C helper not built")
    vals, ts, one = np.zeros(3), np.arange(3, dtype=np.int64), np.zeros(1)
    first, cnt = np.array([2], dtype=np.int64), np.array([2], dtype=np.int64)
    with pytest.raises(ValueError, match="outside the values"):
        c.window_quantile(vals, first, cnt, one, np.zeros(1))
    with pytest.raises(ValueError, match="outside the values"):
        c.window_variance(vals, first, np.array([0], dtype=np.int64), one)
    with pytest.raises(ValueError, match="outside the values"):
        c.window_regression(vals, ts, first, cnt, first, one, np.zeros(1))
    with pytest.raises(ValueError, match="shapes do not match"):
        c.window_regression(vals, ts, first, cnt, first, np.zeros(2), np.zeros(1))
