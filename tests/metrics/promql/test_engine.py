"""Engine unit tests for what the promqltest scripts reach poorly: errors, limits, output format."""

from __future__ import annotations

import math

import pytest

from pitwall.core.errors import BadData, ExecutionError, Timeout
from pitwall.core.labels import MatchType
from pitwall.metrics.memory import MemoryQuerier
from pitwall.metrics.model import STALE_NAN
from pitwall.metrics.promql import (
    Engine,
    PromQLParseError,
    QueryTimeout,
    TooManySamples,
    parse_matchers,
)
from pitwall.metrics.promql.format import format_float, labels_string


def _querier() -> MemoryQuerier:
    q = MemoryQuerier()
    for i in range(11):
        q.add((("__name__", "http_requests_total"), ("job", "api")), i * 60_000, float(i * 6))
        q.add((("__name__", "http_requests_total"), ("job", "web")), i * 60_000, float(i * 12))
    q.add((("__name__", "dup"), ("a", "1")), 0, 1.0)
    q.add((("__name__", "dup"), ("a", "2")), 0, 2.0)
    return q


def test_instant_vector_to_prometheus_data() -> None:
    res = Engine().instant(_querier(), 'http_requests_total{job="api"}', 600_000)
    assert res.to_prometheus_data() == {
        "resultType": "vector",
        "result": [{"metric": {"__name__": "http_requests_total", "job": "api"}, "value": [600, "60"]}],
    }


def test_range_matrix_sorted_and_formatted() -> None:
    res = Engine().range(_querier(), "rate(http_requests_total[2m])", 120_000, 240_000, 60_000)
    data = res.to_prometheus_data()
    assert data["resultType"] == "matrix"
    assert [r["metric"] for r in data["result"]] == [{"job": "api"}, {"job": "web"}]
    assert data["result"][0]["values"] == [[120, "0.1"], [180, "0.1"], [240, "0.1"]]


def test_scalar_and_string_results() -> None:
    eng = Engine()
    assert eng.instant(_querier(), "1 / 0", 1500).to_prometheus_data() == {
        "resultType": "scalar",
        "result": [1.5, "+Inf"],
    }
    assert eng.instant(_querier(), '"hi"', 0).to_prometheus_data() == {
        "resultType": "string",
        "result": [0, "hi"],
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (0.1, "0.1"),
        (-2.5, "-2.5"),
        (1e21, "1000000000000000000000"),
        (1e-7, "0.0000001"),
        (math.nan, "NaN"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
    ],
)
def test_format_float_matches_go(value: float, text: str) -> None:
    assert format_float(value) == text


def test_labels_string() -> None:
    assert labels_string((("__name__", "a"), ("b", 'x"y'))) == '{__name__="a", b="x\\"y"}'


def test_parse_error_is_bad_data() -> None:
    with pytest.raises(PromQLParseError) as ei:
        Engine().instant(_querier(), "sum(foo", 0)
    assert isinstance(ei.value, BadData)
    assert "parse error" in ei.value.message


def test_many_to_many_error_text() -> None:
    with pytest.raises(ExecutionError) as ei:
        Engine().instant(_querier(), "vector(1) + on() dup", 0)
    assert ei.value.message == (
        "found duplicate series for the match group {} on the right hand-side of the operation: "
        '[{__name__="dup", a="1"}, {__name__="dup", a="2"}]'
        ";many-to-many matching not allowed: matching labels must be unique on one side"
    )


def test_same_labelset_error_after_name_removal() -> None:
    with pytest.raises(ExecutionError, match="vector cannot contain metrics with the same labelset"):
        Engine().instant(_querier(), 'label_replace(dup, "a", "x", "a", ".*")', 0)


def test_max_samples_limit() -> None:
    with pytest.raises(TooManySamples) as ei:
        Engine(max_samples=5).range(_querier(), "http_requests_total", 0, 600_000, 60_000)
    assert isinstance(ei.value, ExecutionError)
    assert ei.value.message == "query processing would load too many samples into memory in query execution"


def test_timeout() -> None:
    with pytest.raises(QueryTimeout) as ei:
        Engine(timeout_s=-1.0).instant(_querier(), "sum(http_requests_total)", 0)
    assert isinstance(ei.value, Timeout)
    assert ei.value.message == "query timed out in expression evaluation"


def test_range_query_rejects_range_vector() -> None:
    with pytest.raises(ExecutionError, match='invalid expression type "range vector" for range query'):
        Engine().range(_querier(), "http_requests_total[5m]", 0, 60_000, 60_000)


def test_staleness_marker_hides_series() -> None:
    q = MemoryQuerier()
    q.add((("__name__", "m"),), 0, 1.0)
    q.add((("__name__", "m"),), 60_000, STALE_NAN)
    eng = Engine()
    assert eng.instant(q, "m", 30_000).series == [(("__name__", "m"),)]
    assert eng.instant(q, "m", 90_000).series == []
    assert eng.instant(q, "count_over_time(m[5m])", 90_000).values[0][0] == 1.0


def test_subquery_steps_are_aligned() -> None:
    q = MemoryQuerier()
    for i in range(20):
        q.add((("__name__", "m"),), i * 10_000, float(i))
    res = Engine().instant(q, "m[1m:20s]", 125_000)
    assert res.result_type == "matrix"
    assert res.timestamps[0].tolist() == [80_000, 100_000, 120_000]


def test_annotation_has_prefix_and_position() -> None:
    res = Engine().instant(_querier(), "quantile(2, http_requests_total)", 600_000)
    assert res.warnings == ["PromQL warning: quantile value should be between 0 and 1, got 2 (1:10)"]


def test_sum_uses_kahan_summation() -> None:
    q = MemoryQuerier()
    for i, v in enumerate([1.0, 1e100, 1.0, -1e100]):
        q.add((("__name__", "k"), ("i", str(i))), 0, v)
    res = Engine().instant(q, "sum(k)", 0)
    assert res.values[0][0] == 2.0


def test_parse_matchers() -> None:
    ms = parse_matchers('up{job=~"a.*", env!="prod"}')
    assert [(m.type, m.name, m.value) for m in ms] == [
        (MatchType.EQUAL, "__name__", "up"),
        (MatchType.REGEX, "job", "a.*"),
        (MatchType.NOT_EQUAL, "env", "prod"),
    ]
    with pytest.raises(PromQLParseError):
        parse_matchers("sum(up)")


def test_inline_regex_flags_are_scoped() -> None:
    ms = parse_matchers('up{job=~"a((?i)BC)"}')
    assert ms[1].matches("abc")
    assert not ms[1].matches("Abc")


# Bad queries and the messages we give, each checked against what Debian's
# Prometheus 2.42 answers for the same query (same wording in 3.x).
PARSE_ERRORS = [
    ("sum(", "1:5: parse error: unclosed left parenthesis"),
    ("foo{", "1:5: parse error: unexpected end of input inside braces"),
    ("foo +", "1:6: parse error: unexpected end of input"),
    ("1 +* 2", "1:4: parse error: unexpected <op:*>"),
    ("foo[5m", "1:7: parse error: unclosed left bracket"),
    ("sum by (a) b", '1:12: parse error: unexpected identifier "b" in aggregation'),
    ("sum without (a b) (x)", '1:16: parse error: unexpected identifier "b" in grouping opts, expected "," or ")"'),
    ("}", "1:1: parse error: unexpected character: '}'"),
    ("foo)", "1:5: parse error: unexpected right parenthesis ')'"),
    ("rate(foo)", '1:6: parse error: expected type range vector in call to function "rate", got instant vector'),
    ("topk(a, b)", "1:6: parse error: expected type scalar in aggregation parameter, got instant vector"),
    ("sum(abs(1, 2))", '1:5: parse error: expected 1 argument(s) in call to "abs", got 2'),
    ("foo offset", "1:11: parse error: unexpected end of input in offset, expected duration"),
    ('"a" + 1', "1:1: parse error: binary expression must contain only scalar and instant vector types"),
    ("nonexistent_fn(foo)", '1:1: parse error: unknown function with name "nonexistent_fn"'),
    ("foo @ bar", '1:7: parse error: unexpected identifier "bar" in @, expected timestamp'),
    ("rate(foo[5m:1m:2m])", "1:15: parse error: unexpected colon ':'"),
    ("{}", "1:1: parse error: vector selector must contain at least one non-empty matcher"),
    ("foo and 1", '1:1: parse error: set operator "and" not allowed in binary scalar expression'),
    ("foo bar", '1:5: parse error: unexpected identifier "bar"'),
    ("1 2", '1:3: parse error: unexpected number "2"'),
    ("sum(foo) by", '1:12: parse error: unexpected end of input in grouping opts, expected "("'),
]


@pytest.mark.parametrize(("query", "message"), PARSE_ERRORS, ids=[q for q, _ in PARSE_ERRORS])
def test_parse_error_messages_match_prometheus(query: str, message: str) -> None:
    with pytest.raises(PromQLParseError) as ei:
        Engine().instant(_querier(), query, 0)
    assert ei.value.message == message


def test_smoothing_factor_error_is_execution_error() -> None:
    # Prometheus answers 422 "execution" for a factor outside (0, 1).
    with pytest.raises(ExecutionError) as ei:
        Engine().instant(_querier(), "double_exponential_smoothing(http_requests_total[5m], 1, 0.5)", 600_000)
    assert not isinstance(ei.value, BadData)
    assert ei.value.message == "invalid smoothing factor. Expected: 0 < sf < 1, got: 1.000000"


def test_fill_modifiers_fill_missing_sides() -> None:
    q = _querier()
    q.add((("__name__", "other"), ("job", "api")), 0, 100.0)
    q.add((("__name__", "other"), ("job", "db")), 0, 7.0)
    res = Engine().instant(q, "http_requests_total + fill(0) other", 0)
    got = {dict(lb)["job"]: float(v[0]) for lb, v in zip(res.series, res.values, strict=True)}
    assert got == {"api": 100.0, "web": 0.0, "db": 7.0}
    res = Engine().instant(q, "http_requests_total + fill_right(1) other", 0)
    got = {dict(lb)["job"]: float(v[0]) for lb, v in zip(res.series, res.values, strict=True)}
    assert got == {"api": 100.0, "web": 1.0}


def test_info_adds_target_info_labels() -> None:
    q = MemoryQuerier()
    q.add((("__name__", "up"), ("instance", "a"), ("job", "j")), 0, 1.0)
    q.add((("__name__", "target_info"), ("instance", "a"), ("job", "j"), ("region", "eu")), 0, 1.0)
    res = Engine().instant(q, "info(up)", 0)
    assert res.series == [(("__name__", "up"), ("instance", "a"), ("job", "j"), ("region", "eu"))]
    res = Engine().instant(q, 'info(up, {region=~".*"})', 0)
    assert res.series == [(("__name__", "up"), ("instance", "a"), ("job", "j"), ("region", "eu"))]
    assert Engine().instant(q, 'info(up, {zone=~".+"})', 0).series == []
