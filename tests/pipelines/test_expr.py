"""GitLab's CI/CD expression syntax (``rules:if``)."""

from __future__ import annotations

import pytest

from pitwall.pipelines.durations import parse_human_duration
from pitwall.pipelines.expr import ExprError, parse_expression

pytestmark = pytest.mark.timeout(30)

ENV = {"BRANCH": "main", "EMPTY": "", "TAG": "v1.2.3", "PAT": "/^v\\d/", "PLAIN": "ma"}


@pytest.mark.parametrize(("expr", "want"), [
    ("$BRANCH", True), ("$EMPTY", False), ("$UNSET", False),
    ('$BRANCH == "main"', True), ("$BRANCH == 'main'", True), ('$BRANCH != "main"', False),
    ("$UNSET == null", True), ("$EMPTY == null", False), ('$UNSET == ""', False), ('$EMPTY == ""', True),
    ("$BRANCH == $BRANCH", True), ('"main" == $BRANCH', True),
    ("$TAG =~ /^v\\d+\\.\\d+/", True), ("$TAG !~ /^v/", False), ("$BRANCH =~ /MAIN/i", True),
    ("$BRANCH =~ /MAIN/", False), ("$UNSET =~ /.*/", False), ("$TAG =~ $PAT", True), ("$BRANCH =~ $PLAIN", True),
    ('$BRANCH == "main" && $EMPTY', False), ('$BRANCH == "main" || $EMPTY', True),
    ('$EMPTY || $BRANCH == "main" && $TAG', True),  # && binds tighter than ||
    ('($EMPTY || $BRANCH == "main") && $UNSET', False),
    ("${BRANCH} == \"main\"", True),
    ("$BRANCH =~ /a\\/b/", False),
])
def test_evaluate(expr: str, want: bool) -> None:
    assert parse_expression(expr).evaluate(ENV) is want


@pytest.mark.parametrize("expr", ["", "$A ==", "($A", "$A = 'b'", '"open', "/open", "$A =~ /(?<!x)y/", "$A && && $B",
                                  "word"])
def test_syntax_errors(expr: str) -> None:
    with pytest.raises(ExprError):
        parse_expression(expr)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 30), (45, 45), ("1h 30m", 5400), ("3 hours", 10800), ("10 minutes", 600), ("1 week", 604800),
    ("2 days 4 hours", 187200), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400),
])
def test_human_durations(text: str | int, seconds: int) -> None:
    assert parse_human_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1 fortnight", "h", "x" * 200])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_human_duration(text)
