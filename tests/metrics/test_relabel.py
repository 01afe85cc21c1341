"""Relabeling, table-driven with cases from Prometheus' own relabel tests and docs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pitwall.metrics.relabel import RelabelConfig, compile_regex, relabel


def cfgs(*raw: dict[str, Any]) -> list[RelabelConfig]:
    return [RelabelConfig.model_validate(r) for r in raw]


CASES: list[tuple[str, dict[str, str], list[dict[str, Any]], dict[str, str] | None]] = [
    (
        "replace ${1} twice",
        {"a": "foo", "b": "bar", "c": "baz"},
        [{"source_labels": ["a"], "regex": "f(.*)", "target_label": "d", "replacement": "ch${1}-ch${1}"}],
        {"a": "foo", "b": "bar", "c": "baz", "d": "choo-choo"},
    ),
    (
        "replace chained with separator",
        {"a": "foo", "b": "bar", "c": "baz"},
        [
            {"source_labels": ["a", "b"], "regex": "f(.*);(.*)r", "target_label": "a", "replacement": "b${1}${2}m"},
            {"source_labels": ["c", "a"], "regex": "(b).*b(.*)ba(.*)", "target_label": "d", "replacement": "$1$2$2$3"},
        ],
        {"a": "boobam", "b": "bar", "c": "baz", "d": "boooom"},
    ),
    ("drop on match", {"a": "foo"}, [{"source_labels": ["a"], "regex": ".*o.*", "action": "drop"}], None),
    ("drop anchored no match", {"a": "foo"}, [{"source_labels": ["a"], "regex": "f|o", "action": "drop"}], {"a": "foo"}),
    ("keep no match", {"a": "foo"}, [{"source_labels": ["a"], "regex": "no-match", "action": "keep"}], None),
    ("keep match", {"a": "foo"}, [{"source_labels": ["a"], "regex": "f.*", "action": "keep"}], {"a": "foo"}),
    (
        "replace without match does nothing",
        {"a": "boo"},
        [{"source_labels": ["a"], "regex": "f", "target_label": "b", "replacement": "bar"}],
        {"a": "boo"},
    ),
    (
        "hashmod",
        {"a": "foo", "b": "bar", "c": "baz"},
        [{"source_labels": ["c"], "target_label": "d", "action": "hashmod", "modulus": 1000}],
        {"a": "foo", "b": "bar", "c": "baz", "d": "976"},
    ),
    (
        "hashmod newline",
        {"a": "foo\nbar"},
        [{"source_labels": ["a"], "target_label": "b", "action": "hashmod", "modulus": 1000}],
        {"a": "foo\nbar", "b": "734"},
    ),
    (
        "labelmap",
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "replacement": "bar_${1}", "action": "labelmap"}],
        {"a": "foo", "b1": "bar", "b2": "baz", "bar_b1": "bar", "bar_b2": "baz"},
    ),
    (
        "labelmap meta",
        {"a": "foo", "__meta_my_bar": "aaa", "__meta_my_baz": "bbb", "__meta_other": "ccc"},
        [{"regex": "__meta_(my.*)", "replacement": "${1}", "action": "labelmap"}],
        {"a": "foo", "__meta_my_bar": "aaa", "__meta_my_baz": "bbb", "__meta_other": "ccc", "my_bar": "aaa", "my_baz": "bbb"},
    ),
    (
        "target label from group",
        {"a": "some-name-value"},
        [{"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "replacement": "${2}", "target_label": "${1}"}],
        {"a": "some-name-value", "name": "value"},
    ),
    (
        "empty replacement deletes nothing new",
        {"a": "some-name-value"},
        [{"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "replacement": "${3}", "target_label": "${1}"}],
        {"a": "some-name-value"},
    ),
    (
        "invalid expanded target is skipped",
        {"a": "some-name-0"},
        [{"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "replacement": "${1}", "target_label": "${3}"}],
        {"a": "some-name-0"},
    ),
    (
        "real-life tags",
        {"__meta_sd_tags": "path:/secret,job:some-job,label:foo=bar"},
        [
            {"source_labels": ["__meta_sd_tags"], "regex": "(?:.+,|^)path:(/[^,]+).*", "replacement": "${1}", "target_label": "__metrics_path__"},
            {"source_labels": ["__meta_sd_tags"], "regex": "(?:.+,|^)job:([^,]+).*", "replacement": "${1}", "target_label": "job"},
            {"source_labels": ["__meta_sd_tags"], "regex": "(?:.+,|^)label:([^=]+)=([^,]+).*", "replacement": "${2}", "target_label": "${1}"},
        ],
        {"__meta_sd_tags": "path:/secret,job:some-job,label:foo=bar", "__metrics_path__": "/secret", "job": "some-job", "foo": "bar"},
    ),
    ("labelkeep", {"a": "foo", "b1": "bar", "b2": "baz"}, [{"regex": "(b.*)", "action": "labelkeep"}], {"b1": "bar", "b2": "baz"}),
    ("labeldrop", {"a": "foo", "b1": "bar", "b2": "baz"}, [{"regex": "(b.*)", "action": "labeldrop"}], {"a": "foo"}),
    (
        "upper and lower",
        {"foo": "bAr123Foo"},
        [
            {"source_labels": ["foo"], "action": "uppercase", "target_label": "foo_uppercase"},
            {"source_labels": ["foo"], "action": "lowercase", "target_label": "foo_lowercase"},
        ],
        {"foo": "bAr123Foo", "foo_lowercase": "bar123foo", "foo_uppercase": "BAR123FOO"},
    ),
    ("keepequal equal", {"__tmp_port": "1234", "__port1": "1234"}, [{"source_labels": ["__tmp_port"], "action": "keepequal", "target_label": "__port1"}], {"__tmp_port": "1234", "__port1": "1234"}),
    ("keepequal differ", {"__tmp_port": "1234", "__port2": "5678"}, [{"source_labels": ["__tmp_port"], "action": "keepequal", "target_label": "__port2"}], None),
    ("dropequal equal", {"__tmp_port": "1234", "__port1": "1234"}, [{"source_labels": ["__tmp_port"], "action": "dropequal", "target_label": "__port1"}], None),
    ("dropequal differ", {"__tmp_port": "1234", "__port2": "5678"}, [{"source_labels": ["__tmp_port"], "action": "dropequal", "target_label": "__port2"}], {"__tmp_port": "1234", "__port2": "5678"}),
    ("fast path sets constant", {"a": "x"}, [{"target_label": "env", "replacement": "prod"}], {"a": "x", "env": "prod"}),
    ("replace with empty deletes", {"a": "x", "b": "y"}, [{"source_labels": ["a"], "regex": "x", "target_label": "b", "replacement": ""}], {"a": "x"}),
    ("regex is fully anchored", {"a": "foobar"}, [{"source_labels": ["a"], "regex": "foo", "action": "keep"}], None),
    ("trailing newline does not match $", {"a": "foo\n"}, [{"source_labels": ["a"], "regex": "foo", "action": "keep"}], None),
    ("missing source label is empty", {"a": "x"}, [{"source_labels": ["nope"], "regex": "", "action": "keep"}], {"a": "x"}),
]


@pytest.mark.parametrize(("name", "labels", "rules", "want"), CASES, ids=[c[0] for c in CASES])
def test_relabel_cases(name: str, labels: dict[str, str], rules: list[dict[str, Any]], want: dict[str, str] | None) -> None:
    assert relabel(labels, cfgs(*rules)) == want


def test_input_not_mutated() -> None:
    labels = {"a": "1"}
    relabel(labels, cfgs({"target_label": "b", "replacement": "2"}))
    assert labels == {"a": "1"}


def test_defaults() -> None:
    c = RelabelConfig(target_label="x")
    assert (c.action.value, c.separator, c.regex, c.replacement) == ("replace", ";", "(.*)", "$1")


@pytest.mark.parametrize(
    ("template", "want"),
    [
        ("$1", "a"),
        ("${1}x", "ax"),
        ("$1x", ""),  # Go reads the longest name: group "1x" does not exist
        ("$name-$2", "b-b"),
        ("${name}", "b"),
        ("$$1", "$1"),
        ("$", "$"),
        ("${1", "${1"),
        ("$!", "$!"),
        ("$9", ""),
        ("$01", ""),  # leading zero makes it a name, not an index
    ],
)
def test_expand_like_go(template: str, want: str) -> None:
    m = compile_regex(r"(a)-(?P<name>b)").search("a-b")
    assert m is not None
    assert m.expand(template) == want


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"action": ""}, "relabel action cannot be empty"),
        ({"action": "explode"}, 'unknown relabel action "explode"'),
        ({"action": "replace"}, "requires 'target_label' value"),
        ({"action": "lowercase"}, "requires 'target_label' value"),
        ({"action": "hashmod", "target_label": "x"}, "requires non-zero modulus"),
        ({"action": "labeldrop", "source_labels": ["a"]}, "labeldrop action requires only 'regex', and no other fields"),
        ({"action": "keepequal", "target_label": "x", "regex": "a"}, "keepequal action requires only 'source_labels' and `target_label`"),
        ({"action": "uppercase", "target_label": "x", "replacement": "y"}, "'replacement' can not be set for uppercase action"),
        ({"regex": "(", "target_label": "x"}, "error parsing regexp"),
        ({"target_label": "x", "bogus": 1}, "Extra inputs are not permitted"),
    ],
)
def test_validation_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as ei:
        RelabelConfig.model_validate(raw)
    assert message in str(ei.value)


@pytest.mark.parametrize("target", ["0${3}", "-${3}", "-label"])
def test_legacy_target_label_validation(target: str) -> None:
    c = RelabelConfig(source_labels=["a"], regex="some-([^-]+)-([^,]+)", target_label=target, replacement="${1}")
    with pytest.raises(ValueError, match="is invalid 'target_label' for replace action"):
        c.validate_names("legacy")


def test_legacy_lowercase_target_validation() -> None:
    c = RelabelConfig(action="lowercase", target_label="${3}")  # valid under UTF-8 names
    with pytest.raises(ValueError, match="\"\\$\\{3\\}\" is invalid 'target_label' for lowercase action"):
        c.validate_names("legacy")


def test_action_is_case_insensitive() -> None:
    assert RelabelConfig.model_validate({"action": "LabelDrop", "regex": "x"}).action.value == "labeldrop"


def test_utf8_target_allowed_by_default_legacy_skips() -> None:
    rules = cfgs({"source_labels": ["a"], "target_label": "my.label"})
    assert relabel({"a": "v"}, rules) == {"a": "v", "my.label": "v"}
    rules = cfgs({"source_labels": ["a"], "regex": "(.*)", "target_label": "${1}"})
    assert relabel({"a": "not valid"}, rules, scheme="legacy") == {"a": "not valid"}


@pytest.mark.timeout(60)
def test_regexes_and_legacy_targets_take_linear_time() -> None:
    # Both the user's regex and Prometheus' own target-label pattern have nested repetition.
    rules = cfgs({"source_labels": ["a"], "regex": "(a+)+b", "action": "keep"})
    assert relabel({"a": "a" * 40 + "!"}, rules) is None
    cfg = RelabelConfig(source_labels=["a"], target_label="$" + "a" * 40 + "!")
    with pytest.raises(ValueError, match="is invalid 'target_label'"):
        cfg.validate_names("legacy")


@pytest.mark.parametrize("bad", ["(a)\\1", "(?=a)"])
def test_backreferences_and_lookarounds_are_rejected(bad: str) -> None:
    with pytest.raises(ValidationError, match="error parsing regexp"):
        RelabelConfig.model_validate({"source_labels": ["a"], "regex": bad, "action": "keep"})
