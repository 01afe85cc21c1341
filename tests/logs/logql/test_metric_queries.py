"""Metric queries: range windows (left-open, right-closed), step alignment, every range and vector
aggregation, unwrap conversions, binary operations, label_replace, vector(), limits. Expected values
computed by hand from the fixture below."""

from __future__ import annotations

import math

import pytest

from pitwall.core.errors import BadData
from pitwall.logs.logql import LogQLEngine, LogQLLimitError, LogQLParseError, LogQLPipelineError
from pitwall.logs.memory import InMemoryLogQuerier
from tests.logs.logql.helpers import S, lbl, matrix, querier, vector

A = {"app": "a", "env": "prod"}
B = {"app": "b", "env": "prod"}
C = {"app": "c", "env": "dev"}


@pytest.fixture
def q() -> InMemoryLogQuerier:
    return querier(
        (
            A,
            [
                (10, "n=1 lat=100ms size=1KB"),
                (20, "n=2 lat=200ms size=2KB"),
                (30, "n=4 lat=1s size=1MB"),
                (40, "n=8 lat=2s size=3B"),
            ],
        ),
        (B, [(15, "n=10 lat=x"), (35, "n=20 lat=1m")]),
        (C, [(25, "n=5 lat=5ms")]),
    )


def test_count_over_time_windows_are_left_open_right_closed(q: InMemoryLogQuerier) -> None:
    got = matrix(q, 'count_over_time({env="prod"}[10s])', 10, 40, 10)
    assert got == {
        lbl(**A): [(10, "1"), (20, "1"), (30, "1"), (40, "1")],
        lbl(**B): [(20, "1"), (40, "1")],
    }
    got = matrix(q, 'count_over_time({app="a"}[20s])', 30, 30, 10)
    assert got == {lbl(**A): [(30, "2")]}  # (10, 30]: the entry at 10s is out


def test_steps_start_at_start_and_are_not_aligned(q: InMemoryLogQuerier) -> None:
    got = matrix(q, 'count_over_time({app="a"}[10s])', 5, 25, 10)
    assert got == {lbl(**A): [(15, "1"), (25, "1")]}  # steps 5, 15, 25; (-5, 5] is empty


def test_rate_bytes_rate_bytes_over_time(q: InMemoryLogQuerier) -> None:
    assert vector(q, 'rate({app="a"}[20s])', 40) == [(A, "0.1")]
    assert vector(q, 'bytes_over_time({app="a"}[10s])', 10) == [(A, "22")]
    assert vector(q, 'bytes_rate({app="a"}[10s])', 10) == [(A, "2.2")]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum_over_time({app="a"} | logfmt n | unwrap n [20s])', "12"),
        ('avg_over_time({app="a"} | logfmt n | unwrap n [20s])', "6"),
        ('max_over_time({app="a"} | logfmt n | unwrap n [20s])', "8"),
        ('min_over_time({app="a"} | logfmt n | unwrap n [20s])', "4"),
        ('first_over_time({app="a"} | logfmt n | unwrap n [20s])', "4"),
        ('last_over_time({app="a"} | logfmt n | unwrap n [20s])', "8"),
        ('stddev_over_time({app="a"} | logfmt n | unwrap n [20s])', "2"),
        ('stdvar_over_time({app="a"} | logfmt n | unwrap n [20s])', "4"),
        ('quantile_over_time(0.5, {app="a"} | logfmt n | unwrap n [20s])', "6"),
        ('quantile_over_time(0.99, {app="a"} | logfmt n | unwrap n [40s])', "7.88"),
        ('rate({app="a"} | logfmt n | unwrap n [20s])', "0.6"),
        ('rate_counter({app="a"} | logfmt n | unwrap n [40s])', "0.2"),
        ('sum_over_time({app="a"} | logfmt lat | unwrap duration(lat) [40s])', "3.3"),
        ('sum_over_time({app="a"} | logfmt lat | unwrap duration_seconds(lat) [20s])', "3"),
        ('max_over_time({app="a"} | logfmt size | unwrap bytes(size) [40s])', "1000000"),
    ],
)
def test_unwrapped_range_aggregations(q: InMemoryLogQuerier, expr: str, expected: str) -> None:
    got = vector(q, expr, 40)
    assert len(got) == 1
    labels, value = got[0]
    # the unwrapped label is not part of the series; other parsed labels are
    assert "n" not in labels or "unwrap n" not in expr
    assert float(value) == pytest.approx(float(expected))


def test_unwrap_series_drops_unwrapped_label_but_keeps_other_parsed_labels(q: InMemoryLogQuerier) -> None:
    got = vector(q, 'sum_over_time({app="a"} | logfmt | unwrap n [10s])', 40)
    assert got == [({"app": "a", "env": "prod", "lat": "2s", "size": "3B"}, "8")]


def test_unwrap_conversion_error_fails_query_unless_filtered(q: InMemoryLogQuerier) -> None:
    with pytest.raises(LogQLPipelineError, match="SampleExtractionErr"):
        vector(q, 'sum_over_time({app="b"} | logfmt | unwrap duration(lat) [40s])', 40)
    got = vector(q, 'sum_over_time({app="b"} | logfmt | unwrap duration(lat) | __error__="" [40s])', 40)
    assert got == [({"app": "b", "env": "prod", "n": "20"}, "60")]


def test_parser_error_in_metric_query_is_a_pipeline_error(q: InMemoryLogQuerier) -> None:
    with pytest.raises(LogQLPipelineError) as e:
        vector(q, 'count_over_time({app="a"} | json [40s])', 40)
    assert "JSONParserErr" in str(e.value) and isinstance(e.value, BadData)
    assert vector(q, 'count_over_time({app="a"} | json | __error__="" [40s])', 40) == []
    got = vector(
        q, 'count_over_time({app="a"} | json | __error__!="" | drop __error__, __error_details__ [40s])', 40
    )
    assert got == [(A, "4")]


def test_offset_shifts_the_window(q: InMemoryLogQuerier) -> None:
    got = matrix(q, 'count_over_time({app="a"}[10s] offset 10s)', 10, 40, 10)
    assert got == {lbl(**A): [(20, "1"), (30, "1"), (40, "1")]}


def test_absent_over_time(q: InMemoryLogQuerier) -> None:
    assert vector(q, 'absent_over_time({app="zzz", env=~"p.*"}[10s])', 40) == [({"app": "zzz"}, "1")]
    assert vector(q, 'absent_over_time({app="a"}[10s])', 40) == []
    got = matrix(q, 'absent_over_time({app="b"}[10s])', 10, 40, 10)
    assert got == {lbl(app="b"): [(10, "1"), (30, "1")]}


ALL = 'count_over_time({env=~".+"}[40s])'  # at 40s: a=4, b=2, c=1


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (f"sum({ALL})", [({}, "7")]),
        (f"sum by (env) ({ALL})", [({"env": "dev"}, "1"), ({"env": "prod"}, "6")]),
        (f"sum({ALL}) by (env)", [({"env": "dev"}, "1"), ({"env": "prod"}, "6")]),
        (f"sum without (app) ({ALL})", [({"env": "dev"}, "1"), ({"env": "prod"}, "6")]),
        (f"count({ALL})", [({}, "3")]),
        (f"avg by (env) ({ALL})", [({"env": "dev"}, "1"), ({"env": "prod"}, "3")]),
        (f"max({ALL})", [({}, "4")]),
        (f"min({ALL})", [({}, "1")]),
        (f"stdvar by (env) ({ALL})", [({"env": "dev"}, "0"), ({"env": "prod"}, "1")]),
        (f"stddev by (env) ({ALL})", [({"env": "dev"}, "0"), ({"env": "prod"}, "1")]),
        (f"topk(2, {ALL})", [(A, "4"), (B, "2")]),
        (f"bottomk(1, {ALL})", [(C, "1")]),
        (f"topk by (env) (1, {ALL})", [(A, "4"), (C, "1")]),
        (f"sort({ALL})", [(C, "1"), (B, "2"), (A, "4")]),
        (f"sort_desc({ALL})", [(A, "4"), (B, "2"), (C, "1")]),
    ],
)
def test_vector_aggregations(
    q: InMemoryLogQuerier, expr: str, expected: list[tuple[dict[str, str], str]]
) -> None:
    assert vector(q, expr, 40) == expected


def test_stddev_across_three_series(q: InMemoryLogQuerier) -> None:
    ((_, v),) = vector(q, f"stddev({ALL})", 40)
    assert float(v) == pytest.approx(math.sqrt(((4 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (1 - 7 / 3) ** 2) / 3))


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (f"{ALL} * 2", [(A, "8"), (B, "4"), (C, "2")]),
        (f"10 - {ALL}", [(A, "6"), (B, "8"), (C, "9")]),
        (f"{ALL} > 1", [(A, "4"), (B, "2")]),
        (f"1 < {ALL}", [(A, "4"), (B, "2")]),
        (f"{ALL} > bool 1", [(A, "1"), (B, "1"), (C, "0")]),
        (f"{ALL} / 0", [(A, "NaN"), (B, "NaN"), (C, "NaN")]),
        (f"{ALL} ^ 2 % 5", [(A, "1"), (B, "4"), (C, "1")]),
        (
            'count_over_time({env="prod"}[40s]) / on(env) group_left sum by (env) (count_over_time({env="prod"}[40s]))',
            [(A, str(4 / 6)), (B, str(2 / 6))],
        ),
        (f'{ALL} and count_over_time({{app="a"}}[40s])', [(A, "4")]),
        (f'{ALL} unless count_over_time({{app="a"}}[40s])', [(B, "2"), (C, "1")]),
        (
            'count_over_time({app="a"}[40s]) or count_over_time({env=~".+"}[20s])',
            [(A, "4"), (B, "1"), (C, "1")],
        ),
        (
            f"sum by (env) ({ALL}) == on(env) sum by (env) ({ALL})",
            [({"env": "dev"}, "1"), ({"env": "prod"}, "6")],
        ),
        (f"{ALL} - ignoring(app) group_left sum by (env) ({ALL})", [(A, "-2"), (B, "-4"), (C, "0")]),
    ],
)
def test_binary_operations(
    q: InMemoryLogQuerier, expr: str, expected: list[tuple[dict[str, str], str]]
) -> None:
    got = vector(q, expr, 40)
    assert [(m, v if v == "NaN" else pytest.approx(float(v))) for m, v in got] == [
        (m, v if v == "NaN" else float(v)) for m, v in expected
    ]


def test_one_to_one_with_duplicate_matches_is_an_error(q: InMemoryLogQuerier) -> None:
    with pytest.raises(BadData, match="many-to-one matching must be explicit"):
        vector(q, f"{ALL} + on(env) sum by (env) ({ALL})", 40)


def test_scalars_and_vector(q: InMemoryLogQuerier) -> None:
    eng = LogQLEngine()
    data = eng.query_instant(q, "1 + 2 * 3", 40 * S).to_loki_data()
    assert data["resultType"] == "scalar" and data["result"] == [40, "7"]
    assert matrix(q, "1 + 1", 10, 30, 10) == {(): [(10, "2"), (20, "2"), (30, "2")]}
    assert vector(q, "vector(5)", 40) == [({}, "5")]
    assert vector(q, "vector(1) + vector(2)", 40) == [({}, "3")]


def test_label_replace(q: InMemoryLogQuerier) -> None:
    got = vector(q, 'label_replace(count_over_time({app="a"}[40s]), "x", "$1-y", "app", "(.*)")', 40)
    assert got == [({"app": "a", "env": "prod", "x": "a-y"}, "4")]
    got = vector(q, 'label_replace(count_over_time({app="a"}[40s]), "x", "$1", "app", "z(.*)")', 40)
    assert got == [(A, "4")]


def test_sum_by_pushes_grouping_into_extraction(q: InMemoryLogQuerier) -> None:
    got = vector(q, 'sum by (env) (count_over_time({env=~".+"} | logfmt [40s]))', 40)
    assert got == [({"env": "dev"}, "1"), ({"env": "prod"}, "6")]


def test_range_aggregation_grouping_merges_samples(q: InMemoryLogQuerier) -> None:
    got = vector(q, 'max_over_time({env=~".+"} | logfmt | unwrap n [40s]) by (env)', 40)
    assert got == [({"env": "dev"}, "5"), ({"env": "prod"}, "20")]
    got = vector(q, 'quantile_over_time(0.5, {env="prod"} | logfmt | unwrap n [40s]) by (env)', 40)
    assert got == [({"env": "prod"}, "6")]  # median of 1, 2, 4, 8, 10, 20


def test_matrix_series_sorted_by_labels_and_result_shape(q: InMemoryLogQuerier) -> None:
    res = LogQLEngine().query_range(q, 'count_over_time({env=~".+"}[40s])', 40 * S, 40 * S, S)
    data = res.to_loki_data()
    assert data["resultType"] == "matrix"
    assert [s["metric"]["app"] for s in data["result"]] == ["a", "b", "c"]
    assert data["result"][0]["values"] == [[40, "4"]]


def test_series_limit(q: InMemoryLogQuerier) -> None:
    with pytest.raises(LogQLLimitError, match=r"maximum of series \(2\) reached for a single query"):
        LogQLEngine(max_series=2).query_range(q, ALL, 40 * S, 40 * S, S)


def test_parse_errors_are_bad_data(q: InMemoryLogQuerier) -> None:
    with pytest.raises(LogQLParseError) as e:
        LogQLEngine().query_range(q, 'sum(count_over_time({app="a"}[5m])', 0, S, S)
    assert str(e.value) == "parse error at line 1, col 35: syntax error: unexpected $end, expecting )"
    assert isinstance(e.value, BadData)


def test_step_must_be_positive_for_metric_range_queries(q: InMemoryLogQuerier) -> None:
    with pytest.raises(BadData, match="zero or negative query resolution step"):
        LogQLEngine().query_range(q, ALL, 0, 10 * S, 0)
