"""Classic-histogram functions against Prometheus' histograms.test values and hand checks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from pitwall.core.labels import Labels, labels_from_dict
from pitwall.metrics.promql.histograms import histogram_fraction, histogram_quantile, parse_go_float
from pitwall.metrics.promql.values import StepVector

MONOTONICITY = (
    "input to histogram_quantile needed to be fixed for monotonicity "
    "(see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile)"
)


def vec(rows: Sequence[tuple[dict[str, str], Sequence[float | None]]]) -> StepVector:
    """A StepVector; None marks a step where the series has no sample."""
    labels = [labels_from_dict(lbls) for lbls, _ in rows]
    steps = len(rows[0][1]) if rows else 1
    values = np.full((len(rows), steps), np.nan)
    present = np.zeros((len(rows), steps), dtype=bool)
    for s, (_, vals) in enumerate(rows):
        for t, v in enumerate(vals):
            if v is not None:
                values[s, t] = v
                present[s, t] = True
    return StepVector(labels, values, present)


class Notes:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.infos: list[str] = []


def quantile(
    q: float | Sequence[float], v: StepVector, step_times: np.ndarray | None = None
) -> tuple[dict[Labels, list[float | None]], Notes]:
    notes = Notes()
    steps = v.values.shape[1]
    phi = np.broadcast_to(np.asarray(q, dtype=np.float64), (steps,)).copy()
    out = histogram_quantile(phi, v, notes.warnings.append, notes.infos.append, step_times=step_times)
    return as_dict(out), notes


def fraction(lower: float, upper: float, v: StepVector) -> tuple[dict[Labels, list[float | None]], Notes]:
    notes = Notes()
    steps = v.values.shape[1]
    out = histogram_fraction(
        np.full(steps, lower), np.full(steps, upper), v, notes.warnings.append, notes.infos.append
    )
    return as_dict(out), notes


def as_dict(out: StepVector) -> dict[Labels, list[float | None]]:
    return {
        lbls: [float(out.values[s, t]) if out.present[s, t] else None for t in range(out.values.shape[1])]
        for s, lbls in enumerate(out.labels)
    }


def key(**kw: str) -> Labels:
    return labels_from_dict(kw)


# histograms.test "testhistogram_bucket" at 50m (10 x the per-5m increment).
TESTHISTOGRAM = vec(
    [
        ({"__name__": "testhistogram_bucket", "le": "0.1", "start": "positive"}, [50]),
        ({"__name__": "testhistogram_bucket", "le": ".2", "start": "positive"}, [70]),
        ({"__name__": "testhistogram_bucket", "le": "1e0", "start": "positive"}, [110]),
        ({"__name__": "testhistogram_bucket", "le": "+Inf", "start": "positive"}, [120]),
        ({"__name__": "testhistogram_bucket", "le": "-.2", "start": "negative"}, [10]),
        ({"__name__": "testhistogram_bucket", "le": "-0.1", "start": "negative"}, [20]),
        ({"__name__": "testhistogram_bucket", "le": "0.3", "start": "negative"}, [20]),
        ({"__name__": "testhistogram_bucket", "le": "+Inf", "start": "negative"}, [30]),
    ]
)


@pytest.mark.parametrize(
    ("q", "positive", "negative"),
    [(0, 0, -0.2), (0.2, 0.048, -0.2), (0.5, 0.15, -0.15), (0.8, 0.72, 0.3), (1, 1, 0.3)],
)
def test_histogram_quantile_testdata(q: float, positive: float, negative: float) -> None:
    result, notes = quantile(q, TESTHISTOGRAM)
    # The metric name and le are dropped; groups keep their other labels.
    assert result[key(start="positive")] == [pytest.approx(positive)]
    assert result[key(start="negative")] == [pytest.approx(negative)]
    assert notes.warnings == [] and notes.infos == []


@pytest.mark.parametrize(("q", "expected"), [(-0.1, -math.inf), (1.1, math.inf)])
def test_histogram_quantile_out_of_range(q: float, expected: float) -> None:
    result, notes = quantile(q, TESTHISTOGRAM)
    assert result[key(start="positive")] == [expected]
    assert notes.warnings == [f"quantile value should be between 0 and 1, got {q}"]


def test_histogram_quantile_nan_phi() -> None:
    result, notes = quantile(math.nan, TESTHISTOGRAM)
    assert math.isnan(result[key(start="positive")][0] or 0.0)
    assert notes.warnings == ["quantile value should be between 0 and 1, got NaN"]


def test_histogram_quantile_needs_inf_bucket() -> None:
    v = vec([({"le": "1"}, [5]), ({"le": "2"}, [10])])
    result, _ = quantile(0.5, v)
    assert math.isnan(result[()][0] or 0.0)


def test_histogram_quantile_highest_bucket_returns_second_highest_bound() -> None:
    v = vec([({"le": "1"}, [1]), ({"le": "2"}, [2]), ({"le": "+Inf"}, [10])])
    result, _ = quantile(0.9, v)
    assert result[()] == [2.0]


def test_histogram_quantile_zero_observations_is_nan() -> None:
    v = vec([({"le": "1"}, [0]), ({"le": "+Inf"}, [0])])
    result, _ = quantile(0.5, v)
    assert math.isnan(result[()][0] or 0.0)


def test_histogram_quantile_non_monotonic_buckets() -> None:
    # histograms.test "nonmonotonic_bucket" at 50m, evaluated at three steps.
    counts = {"0.1": 20, "1": 10, "10": 50, "100": 40, "1000": 90, "+Inf": 80}
    v = vec([({"__name__": "nonmonotonic_bucket", "le": le}, [c, c, c]) for le, c in counts.items()])
    result, notes = quantile([0.01, 0.5, 0.99], v)
    assert result[()] == [pytest.approx(0.0045), pytest.approx(8.5), pytest.approx(979.75)]
    assert notes.infos == [f'{MONOTONICITY} for metric name "nonmonotonic_bucket"']
    # With step times the info carries Prometheus' merged statistics.
    times = np.array([3_000_000, 3_060_000, 3_120_000], dtype=np.int64)
    _, notes = quantile([0.01, 0.5, 0.99], v, step_times=times)
    assert notes.infos == [
        f'{MONOTONICITY} for metric name "nonmonotonic_bucket", from buckets 1 to +Inf, '
        "with a max diff of 10, over 3 samples from 1970-01-01T00:50:00Z to 1970-01-01T00:52:00Z"
    ]


def test_histogram_quantile_ignores_tiny_non_monotonicity_silently() -> None:
    v = vec([({"le": "1"}, [10.0]), ({"le": "2"}, [10.0 - 1e-15]), ({"le": "+Inf"}, [20.0])])
    _, notes = quantile(0.5, v)
    assert notes.infos == []


def test_histogram_quantile_coalesces_duplicate_bounds() -> None:
    # histograms.test "mixed_bucket": 0.2, 2e-1 and 2.0e-1 are one bucket.
    v = vec(
        [
            ({"__name__": "mixed_bucket", "instance": "ins1", "le": "0.1"}, [1]),
            ({"__name__": "mixed_bucket", "instance": "ins1", "le": "0.2"}, [1]),
            ({"__name__": "mixed_bucket", "instance": "ins1", "le": "2e-1"}, [1]),
            ({"__name__": "mixed_bucket", "instance": "ins1", "le": "2.0e-1"}, [1]),
            ({"__name__": "mixed_bucket", "instance": "ins1", "le": "+Inf"}, [4]),
            ({"__name__": "mixed_bucket", "instance": "ins2", "le": "+inf"}, [0]),
            ({"__name__": "mixed_bucket", "instance": "ins2", "le": "+Inf"}, [0]),
        ]
    )
    for q, expected in [(0.5, 0.15), (0.75, 0.2), (1, 0.2)]:
        result, _ = quantile(q, v)
        assert result[key(instance="ins1")] == [pytest.approx(expected)]
        assert math.isnan(result[key(instance="ins2")][0] or 0.0)


def test_histogram_quantile_per_step_bucket_sets() -> None:
    # Step 0 has no +Inf bucket (NaN); step 1 has all; step 2 has nothing.
    v = vec([({"le": "1"}, [1, 2, None]), ({"le": "+Inf"}, [None, 4, None])])
    result, _ = quantile(0.25, v)
    value = result[()]
    assert math.isnan(value[0] or 0.0)
    assert value[1:] == [0.5, None]


def test_histogram_quantile_warns_on_bad_le() -> None:
    v = vec(
        [
            ({"__name__": "series", "ale": "0.1"}, [2]),
            ({"__name__": "series", "le": "Hello World"}, [2]),
            ({"__name__": "other", "le": "1e400"}, [None]),
        ]
    )
    result, notes = quantile(0.8, v)
    assert result == {}
    assert notes.warnings == [
        'bucket label "le" is missing or has a malformed value of "" for metric name "series"',
        'bucket label "le" is missing or has a malformed value of "Hello World" for metric name "series"',
    ]


def test_parse_go_float() -> None:
    assert parse_go_float("+Inf") == math.inf
    assert parse_go_float("-inf") == -math.inf
    assert parse_go_float(".2") == 0.2
    assert parse_go_float("0x1p-2") == 0.25
    for bad in ("", " 1", "1_0", "1e400", "abc"):
        assert parse_go_float(bad) is None


# histograms.test "Test histogram_fraction" cases (classic buckets).


@pytest.mark.parametrize(
    ("lower", "upper", "buckets", "expected"),
    [
        (0, 4, {"0": 0, "2": 10, "4": 20, "6": 30, "+Inf": 30}, 0.6666666666666666),
        (0, 6, {"0": 0, "2": 10, "4": 20, "6": 30, "+Inf": 30}, 1.0),
        (0, 3.5, {"0": 0, "2": 10, "4": 20, "6": 30, "+Inf": 30}, 0.5833333333333334),
        (0, 1.5, {"1": 1, "2": 3, "3": 6, "+Inf": 100}, 0.02),
        (-4, -2, {"-3": 10, "-2": 12, "-1": 15, "+Inf": 100}, 0.02),
        (-math.inf, -1.5, {"-3": 10, "-2": 12, "-1": 15, "+Inf": 100}, 0.135),
        (-math.inf, math.inf, {"1": 1, "2": 3, "3": 6, "+Inf": 100}, 1.0),
        (-math.inf, math.inf, {"-3": 10, "-2": 12, "-1": 15, "+Inf": 100}, 1.0),
        (2, 1, {"1": 1, "+Inf": 2}, 0.0),
    ],
)
def test_histogram_fraction(lower: float, upper: float, buckets: dict[str, float], expected: float) -> None:
    v = vec([({"__name__": "h_bucket", "le": le}, [c]) for le, c in buckets.items()])
    result, notes = fraction(lower, upper, v)
    assert result[()] == [pytest.approx(expected)]
    assert notes.warnings == []


def test_histogram_fraction_testhistogram3() -> None:
    v = vec(
        [
            ({"le": "0", "start": "positive"}, [0]),
            ({"le": "0.1", "start": "positive"}, [50]),
            ({"le": ".2", "start": "positive"}, [70]),
            ({"le": "1e0", "start": "positive"}, [110]),
            ({"le": "+Inf", "start": "positive"}, [110]),
            ({"le": "-.25", "start": "negative"}, [0]),
            ({"le": "-.2", "start": "negative"}, [10]),
            ({"le": "-0.1", "start": "negative"}, [20]),
            ({"le": "0.3", "start": "negative"}, [20]),
            ({"le": "+Inf", "start": "negative"}, [20]),
        ]
    )
    result, _ = fraction(0, 0.2, v)
    assert result[key(start="positive")] == [pytest.approx(0.6363636363636364)]
    assert result[key(start="negative")] == [0.0]


def test_histogram_fraction_special_cases() -> None:
    no_inf = vec([({"le": "1"}, [1])])
    assert math.isnan(fraction(0, 1, no_inf)[0][()][0] or 0.0)
    empty = vec([({"le": "1"}, [0]), ({"le": "+Inf"}, [0])])
    assert math.isnan(fraction(0, 1, empty)[0][()][0] or 0.0)
    ok = vec([({"le": "1"}, [1]), ({"le": "+Inf"}, [2])])
    assert math.isnan(fraction(math.nan, 1, ok)[0][()][0] or 0.0)


def test_empty_vector() -> None:
    v = StepVector([], np.zeros((0, 3)), np.zeros((0, 3), dtype=bool))
    result, notes = quantile(0.5, v)
    assert result == {} and notes.warnings == []
    assert fraction(0, 1, v)[0] == {}


def test_many_groups_and_steps_match_single_group_results() -> None:
    rng = np.random.default_rng(3)
    bounds = ["0.1", "0.5", "1", "5", "+Inf"]
    rows = []
    for g in range(40):
        increments = rng.integers(0, 5, size=(len(bounds), 6)).astype(float)
        cumulative = np.cumsum(increments, axis=0)
        rows.extend(({"g": str(g), "le": le}, list(cumulative[i])) for i, le in enumerate(bounds))
    together, _ = quantile(0.7, vec(rows))
    for g in range(40):
        alone, _ = quantile(0.7, vec(rows[g * len(bounds) : (g + 1) * len(bounds)]))
        got = together[key(g=str(g))]
        want = alone[key(g=str(g))]
        assert [math.isnan(x) if x is not None else None for x in got] == [
            math.isnan(x) if x is not None else None for x in want
        ]
        assert np.allclose(np.array(got, dtype=float), np.array(want, dtype=float), equal_nan=True)
