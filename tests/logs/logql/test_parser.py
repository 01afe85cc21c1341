"""The LogQL grammar and its validation messages (Loki's wording)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitwall.core.labels import MatchType
from pitwall.logs.logql import LogQLParseError, ast, parse_expr, parse_stream_selector


def test_stream_selector_matchers() -> None:
    ms = parse_stream_selector('{app="api", env=~"prod|dev", pod!="x", ns!~"kube-.*"}')
    assert [(m.name, m.type, m.value) for m in ms] == [
        ("app", MatchType.EQUAL, "api"),
        ("env", MatchType.REGEX, "prod|dev"),
        ("pod", MatchType.NOT_EQUAL, "x"),
        ("ns", MatchType.NOT_REGEX, "kube-.*"),
    ]
    assert ms[1].matches("prod") and not ms[1].matches("production")  # fully anchored


@pytest.mark.parametrize(
    "expr",
    [
        '{app="a"} |= "x" |~ `\\d+` != "y" !~ "z"',
        '{app="a"} | json | logfmt | regexp "(?P<a>.)" | pattern "<a> <_>" | unpack',
        '{app="a"} | json a="b.c", d | logfmt --strict --keep-empty e, f="g"',
        '{app="a"} | line_format "{{.a}}" | label_format a=b, c="{{.d}}" | drop a, b="c" | keep d | decolorize',
        '{app="a"} | a > 1.5 and b <= 10s or c != 20MB , d=~"x" | (e="1" or f="2")',
        'sum by (a) (rate({app="a"}[5m]))',
        'sum(rate({app="a"}[5m])) without (a)',
        'count_over_time({app="a"}[1h30m] offset 5m)',
        'count_over_time({app="a"}[5m] | json)',
        'count_over_time(({app="a"} | json)[5m])',
        'avg_over_time({app="a"} | json | unwrap duration(latency) | __error__="" [1m]) by (pod)',
        'quantile_over_time(0.99, {app="a"} | unwrap bytes(size) [1m])',
        'topk(3, sum by (a) (count_over_time({app="a"}[1m])))',
        'sum(rate({a="b"}[1m])) / on(x) group_left(y) sum(rate({a="b"}[1m])) > bool 0.5',
        'rate({a="b"}[1m]) and ignoring(x) rate({a="b"}[1m]) unless rate({a="b"}[1m]) or vector(0)',
        'label_replace(rate({a="b"}[1m]), "d", "$1", "s", "(.*)")',
        "-1 + 2 ^ 3 ^ 2",
        'sort_desc(sum(rate({a="b"}[1m])))',
        '{a="b"} # a comment\n |= "x"',
    ],
)
def test_valid_expressions_parse(expr: str) -> None:
    parse_expr(expr)


def test_precedence_and_folding() -> None:
    assert parse_expr("1 + 2 * 3") == ast.Literal(7.0)
    assert parse_expr("2 ^ 3 ^ 2") == ast.Literal(512.0)
    assert parse_expr("(1 + 2) * 3") == ast.Literal(9.0)
    e = parse_expr('rate({a="b"}[1m]) + rate({a="b"}[1m]) * 2')
    assert isinstance(e, ast.BinOp) and e.op == "+" and isinstance(e.rhs, ast.BinOp) and e.rhs.op == "*"


def test_label_filter_precedence_and_binds_tighter_than_or() -> None:
    e = parse_expr('{a="b"} | x="1" or y="2" and z="3"')
    assert isinstance(e, ast.LogSelector)
    f = e.stages[0]
    assert isinstance(f, ast.BinaryLabelFilter) and not f.and_
    assert isinstance(f.right, ast.BinaryLabelFilter) and f.right.and_


def test_label_filter_value_kinds() -> None:
    e = parse_expr('{a="b"} | d > 250ms | s >= 1KiB | n == 3 | t = "x"')
    assert isinstance(e, ast.LogSelector)
    assert e.stages == (
        ast.DurationLabelFilter("d", ">", 250_000_000),
        ast.BytesLabelFilter("s", ">=", 1024),
        ast.NumericLabelFilter("n", "==", 3.0),
        ast.StringLabelFilter(e.stages[3].matcher),  # type: ignore[union-attr]
    )


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ('{app="a"', "parse error at line 1, col 9: syntax error: unexpected $end, expecting , or }"),
        ("{}", "parse error at line 1, col 2: syntax error: unexpected }, expecting IDENTIFIER"),
        (
            '{app=~".*"}',
            "parse error : queries require at least one regexp or equality matcher that does not have an "
            'empty-compatible value. For instance, app=~".*" does not meet this requirement, but app=~".+" will',
        ),
        ('{app="a"} |= ', "parse error at line 1, col 14: syntax error: unexpected $end, expecting STRING"),
        ('sum_over_time({app="a"}[5m])', "parse error : invalid aggregation sum_over_time without unwrap"),
        (
            'count_over_time({app="a"} | unwrap x [5m])',
            "parse error : invalid aggregation count_over_time with unwrap",
        ),
        (
            'count_over_time({app="a"}[5m]) by (x)',
            "parse error : grouping not allowed for count_over_time aggregation",
        ),
        ('rate({app="a"})', "parse error at line 1, col 15: syntax error: unexpected ), expecting ["),
        ("1 > 2", "parse error : comparisons between scalars must use BOOL modifier"),
        (
            '{app="a"} | label_format a=b, a="x"',
            "multiple label name 'a' not allowed in a single format operation",
        ),
        ('{app="a"} | regexp "(.*)"', "at least one named capture must be supplied"),
        ('{app="a"} | pattern "<_> x"', "at least one capture is required"),
        ('{app="a"} | line_format "{{ .a "', "invalid template"),
        ('{app="a" |= "x"', "syntax error: unexpected |=, expecting , or }"),
    ],
)
def test_parse_errors(expr: str, message: str) -> None:
    with pytest.raises(LogQLParseError) as e:
        parse_expr(expr)
    assert message in str(e.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]()|=!~"` abc,.5m0123456789jsonlogfmtsumrate_by-+*/<>#\n', max_size=60))
def test_parser_only_raises_parse_errors(src: str) -> None:
    with contextlib.suppress(LogQLParseError):
        parse_expr(src)
