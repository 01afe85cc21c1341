"""core.regex: RE2 semantics, Go's error texts and expansion rules, and the fast paths agreeing with RE2."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pitwall.core import deadline
from pitwall.core import regex as rx
from pitwall.core.regex import RegexError


@pytest.mark.timeout(60)
def test_catastrophic_patterns_run_in_linear_time() -> None:
    text = "a" * 40 + "!"
    assert not rx.compile("(a+)+b", anchored=True, dot_nl=True).matches(text)
    assert not rx.compile("(a+)+b").matches(text * 1000)
    assert rx.compile("(a|aa)+$").search("a" * 10_000) is not None
    assert rx.compile("(?P<x>(a+)+b)").search(text) is None


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(", "error parsing regexp: missing closing ): `(`"),
        ("(a)\\1", "error parsing regexp: invalid escape sequence: `\\1`"),
        ("(?=a)", "error parsing regexp: invalid or unsupported Perl syntax: `(?=`"),
        ("(?<!a)b", "error parsing regexp: invalid or unsupported Perl syntax: `(?<!`"),
        ("a**", "error parsing regexp: invalid nested repetition operator: `**`"),
        ("[z-a]", "error parsing regexp: invalid character class range: `z-a`"),
        ("x{1001}", "error parsing regexp: invalid repeat count: `{1001}`"),
        ("*", "error parsing regexp: missing argument to repetition operator: `*`"),
        ("\\", "error parsing regexp: trailing backslash at end of expression: ``"),
        ("a\\Z", "error parsing regexp: invalid escape sequence: `\\Z`"),
    ],
)
def test_errors_are_gos(pattern: str, message: str) -> None:
    with pytest.raises(RegexError) as ei:
        rx.compile(pattern)
    assert str(ei.value) == message
    assert isinstance(ei.value, ValueError)
    with pytest.raises(RegexError, match=r"^error parsing regexp: "):
        rx.compile(pattern, anchored=True, dot_nl=True)


def test_anchored_errors_quote_the_peers_text() -> None:
    # Prometheus compiles "^(?s:" + v + ")$", Alertmanager "^(?:" + v + ")$": Go quotes that text.
    with pytest.raises(RegexError, match=r"^error parsing regexp: missing closing \): `\^\(\?s:\(\)\$`$"):
        rx.compile("(", anchored=True, dot_nl=True)
    with pytest.raises(RegexError, match=r"^error parsing regexp: missing closing \): `\^\(\?:\(\)\$`$"):
        rx.compile("(", anchored=True)
    with pytest.raises(RegexError, match=r"invalid escape sequence: `\\1`$"):
        rx.compile("(a)\\1", anchored=True)
    assert rx.compile("a)|(b", anchored=True).matches("a")  # as in Prometheus, the wrapped text compiles


def test_go_syntax_python_lacks() -> None:
    full = {"anchored": True, "dot_nl": True}
    assert rx.compile("(?<n>a+)b").search("xaab").group("n") == "aa"  # type: ignore[union-attr]
    assert rx.compile("a\\z").matches("a") and not rx.compile("a\\z").matches("a\n")
    assert rx.compile("[[:alpha:]]+", **full).matches("abc")
    assert rx.compile("a((?i)BC)", **full).matches("abc")
    assert not rx.compile("a((?i)BC)", **full).matches("Abc")
    assert rx.compile("(?U)a+").search("aaa").group(0) == "a"  # type: ignore[union-attr]
    assert rx.compile("\\pL+", **full).matches("héllo")


def test_anchoring_and_newlines_follow_prometheus() -> None:
    m = rx.compile("fo.", anchored=True, dot_nl=True)
    assert m.matches("fo\n") and not m.matches("foo\n") and not m.matches("xfoo")
    # Prometheus wraps the text, so an unbalanced-looking alternation still anchors as a whole.
    assert rx.compile("a|b", anchored=True).matches("b") and not rx.compile("a|b", anchored=True).matches("ab")
    assert not rx.compile("fo.", anchored=True).matches("fo\n")
    assert not rx.compile("a$").matches("a\n")  # Go's $ is the end of text


def test_expand_and_replace_follow_go() -> None:
    r = rx.compile("(?P<k>\\w+)=(?P<v>\\S*)")
    m = r.search("héllo a=1 b=2")
    assert m is not None
    assert m.expand("${k}-$v $$ $3 $x ${ $1x") == "a-1 $   ${ "
    assert m.groupdict() == {"k": "a", "v": "1"}
    assert r.replace_all("a=1 b=2", "$v:$k") == "1:a 2:b"
    assert r.replace_all("a=1 b=2", "$v:$k", literal=True) == "$v:$k $v:$k"
    # Go replaces an empty match after a non-empty one only once (Python's re.sub twice).
    assert rx.compile("a*").replace_all("baaac", "X") == "XbXcX"
    assert rx.compile("").replace_all("aé", "-") == "-a-é-"
    assert rx.compile("é").replace_all("aéb", "${0}${0}") == "aééb"
    assert rx.compile("a*").count("baaac") == 3
    assert rx.compile("x").replace_all("abc", "y") == "abc"


def test_escape_is_quote_meta() -> None:
    text = "a.b*c(d)|[e]{f}^$\\ g"
    assert rx.compile(rx.escape(text), anchored=True).matches(text)


PATTERNS = ["", "abc", "a|b|", "api|web", ".*", ".+", "a.*", ".*b", ".*é.*", ".*.*", "ab.*", ".*\n", "(a|b)+c?",
            "[^x]*", "(?i)AB", "é.", "a\\z", "a.*|b"]


@given(st.sampled_from(PATTERNS), st.lists(st.text(alphabet="abcxAé\n", max_size=6), max_size=80),
       st.booleans())
def test_fast_paths_and_arrays_agree_with_re2(pattern: str, values: list[str], anchored: bool) -> None:
    r = rx.compile(pattern, anchored=anchored, dot_nl=anchored)
    want = [r._re2_test(v) for v in values]
    assert [r.matches(v) for v in values] == want
    assert [r.matches(v) for v in values] == want  # from the memo
    assert r.match_many(values).tolist() == want
    assert r.match_many(values * 10).tolist() == want * 10  # through Arrow


def test_match_many_checks_the_deadline() -> None:
    r = rx.compile("(a+)+b", anchored=True, dot_nl=True)
    values = ["a" * 30] * 100
    assert not r.match_many(values).any()
    with deadline.scope(time.monotonic() - 1, lambda: TimeoutError("late")), pytest.raises(TimeoutError):
        r.match_many(values)


def test_text_arrow_cannot_hold_falls_back() -> None:
    r = rx.compile("a.", anchored=True, dot_nl=True)
    values = ["a\ud800", "ab", "b"] * 30
    assert np.array_equal(r.match_many(values), np.array([r._re2_test(v) for v in values]))


def test_compiled_patterns_are_cached() -> None:
    assert rx.compile("x+y") is rx.compile("x+y")
    assert rx.compile("x+y") is not rx.compile("x+y", anchored=True)


def test_extractor_is_gos_find_string_submatch() -> None:
    r = rx.compile("(?P<k>é+)(x)?=(\\d*)")
    assert r.extractor(range(4))("aéé=12") == ["éé=12", "éé", "", "12"]
    assert r.extractor([3, 1])("aéé=12") == ["12", "éé"]
    assert r.extractor([1])("nothing") is None


def test_memo_is_given_up_when_texts_do_not_repeat() -> None:
    r = rx.compile("x[0-9]+y", anchored=True, dot_nl=True)
    texts = [f"x{i}y" for i in range(5000)]
    assert all(r.matches(t) for t in texts)
    assert len(r._memo) <= 1024
    assert r.matches == r._re2_test  # filled four times: remembering no longer pays
    assert r.matches("x1y") and not r.matches("x1")
