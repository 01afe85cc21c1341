"""Line filters, label filters, line_format/label_format, drop/keep, decolorize (Loki's docs examples)."""

from __future__ import annotations

import pytest

from tests.logs.logql.helpers import labels_of, line_of, one_line, querier, streams

LINES = [
    (1, "level=info duration=5ms size=10KB method=GET msg=ok"),
    (2, "level=error duration=1.5s size=30MB method=POST msg=boom"),
    (3, "level=warn duration=25ms size=15KB method=GET msg=slow"),
    (4, "level=error duration=abc size=1KB method=DELETE msg=weird"),
]


def _lines(expr: str) -> list[str]:
    q = querier(({"job": "x"}, LINES))
    return [v[1].split("msg=")[1] for s in streams(q, expr) for v in s["values"]]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('{job="x"} |= "error"', {"boom", "weird"}),
        ('{job="x"} != "error"', {"ok", "slow"}),
        ('{job="x"} |~ "level=(warn|error)"', {"boom", "slow", "weird"}),
        ('{job="x"} !~ "GET|POST"', {"weird"}),
        ('{job="x"} |= "error" != "weird"', {"boom"}),
        ('{job="x"} |= "ok" or "slow"', {"ok", "slow"}),
        ('{job="x"} != "ok" or "slow"', {"boom", "weird"}),
        ('{job="x"} |~ "(?i)LEVEL=INFO"', {"ok"}),
        ('{job="x"} |= ""', {"ok", "boom", "slow", "weird"}),
        ('{job="x"} |> "level=<_> duration=<_>ms <_>"', {"ok", "slow"}),
        ('{job="x"} !> "level=error <_>"', {"ok", "slow"}),
    ],
)
def test_line_filters(expr: str, expected: set[str]) -> None:
    assert set(_lines(expr)) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('{job="x"} | logfmt | level="error"', {"boom", "weird"}),
        ('{job="x"} | logfmt | level!="error"', {"ok", "slow"}),
        ('{job="x"} | logfmt | level=~"warn|info"', {"ok", "slow"}),
        ('{job="x"} | logfmt | level!~"e.*"', {"ok", "slow"}),
        ('{job="x"} | logfmt | duration > 10ms', {"boom", "slow", "weird"}),
        ('{job="x"} | logfmt | duration <= 25ms', {"ok", "slow", "weird"}),
        ('{job="x"} | logfmt | size > 20MB', {"boom"}),
        ('{job="x"} | logfmt | size >= 10KB and size < 20KB', {"ok", "slow"}),
        # docs: `and` binds tighter than `or`
        (
            '{job="x"} | logfmt | duration >= 20ms or method="GET" and size <= 20KB',
            {"ok", "boom", "slow", "weird"},
        ),
        ('{job="x"} | logfmt | (duration >= 20ms or method="GET") and size <= 20KB', {"ok", "slow", "weird"}),
        ('{job="x"} | logfmt | level="error", method="POST"', {"boom"}),
        ('{job="x"} | logfmt | level="error" method="POST"', {"boom"}),
        ('{job="x"} | logfmt | level="error" | method="POST"', {"boom"}),
        ('{job="x"} | logfmt | missing > 1', set()),
        ('{job="x"} | logfmt | missing = ""', {"ok", "boom", "slow", "weird"}),
    ],
)
def test_label_filters(expr: str, expected: set[str]) -> None:
    assert set(_lines(expr)) == expected


def test_numeric_filter_conversion_failure_keeps_entry_with_label_filter_error() -> None:
    q = querier(({"job": "x"}, LINES))
    res = streams(q, '{job="x"} | logfmt | duration > 10ms')
    errs = [s["stream"] for s in res if "__error__" in s["stream"]]
    assert len(errs) == 1
    assert errs[0]["__error__"] == "LabelFilterErr"
    assert errs[0]["msg"] == "weird"
    assert 'time: invalid duration "abc"' in errs[0]["__error_details__"]
    clean = streams(q, '{job="x"} | logfmt | duration > 10ms | __error__=""')
    assert {s["stream"]["msg"] for s in clean} == {"boom", "slow"}


def test_numeric_filters_compare_as_numbers() -> None:
    q = querier(
        ({"job": "x"}, [(1, "status=500"), (2, "status=404"), (3, "status=5e2"), (4, "status=0x1.f4p8")])
    )
    got = streams(q, '{job="x"} | logfmt | status == 500')
    assert sorted(v[1] for s in got for v in s["values"]) == ["status=0x1.f4p8", "status=500", "status=5e2"]
    assert [v[1] for s in streams(q, '{job="x"} | logfmt | status != 500') for v in s["values"]] == [
        "status=404"
    ]


def test_line_format_doc_example() -> None:
    q = one_line('query="sum(rate(x[5m]))" duration=1.2s status=200', {"container": "frontend"})
    assert line_of(q, '{container="frontend"} | logfmt | line_format "{{.query}} {{.duration}}"') == (
        "sum(rate(x[5m])) 1.2s"
    )


def test_line_format_line_and_timestamp_functions() -> None:
    q = one_line("Hello")
    assert line_of(
        q, '{job="test"} | line_format "{{ __line__ | lower }} {{ __timestamp__ | unixEpoch }}"'
    ) == ("hello 1")
    assert line_of(
        q, '{job="test"} | line_format `{{ __timestamp__ | date "2006-01-02T15:04:05Z07:00" }}`'
    ) == ("1970-01-01T00:00:01Z")


def test_line_format_template_error_keeps_line_and_sets_error() -> None:
    q = one_line("a=x")
    got = labels_of(q, '{job="test"} | logfmt | line_format "{{ div 1 0 }}"')
    assert got["__error__"] == "TemplateFormatErr"
    assert line_of(q, '{job="test"} | logfmt | line_format "{{ div 1 0 }}"') == "a=x"


def test_label_format_rename_and_template() -> None:
    q = one_line("dst=1 src=2 n=3")
    assert labels_of(q, '{job="test"} | logfmt | label_format foo=src') == {
        "job": "test",
        "dst": "1",
        "n": "3",
        "foo": "2",
    }
    got = labels_of(q, '{job="test"} | logfmt | label_format foo="{{.dst}}-{{.n}}", n="{{ add .n 1 }}"')
    assert got == {"job": "test", "dst": "1", "src": "2", "n": "4", "foo": "1-3"}
    # templates in one stage all see the labels from before the stage
    got = labels_of(q, '{job="test"} | logfmt | label_format n="9", m="{{.n}}"')
    assert got["n"] == "9" and got["m"] == "3"


def test_label_format_overrides_stream_label() -> None:
    q = one_line("x", {"job": "test", "env": "dev"})
    assert labels_of(q, '{job="test"} | label_format env="prod"') == {"job": "test", "env": "prod"}


def test_drop_and_keep_doc_examples() -> None:
    q = one_line("level=info method=GET status=200", {"job": "test", "app": "web"})
    assert labels_of(q, '{job="test"} | logfmt | drop level, method="GET"') == {
        "job": "test",
        "app": "web",
        "status": "200",
    }
    assert labels_of(q, '{job="test"} | logfmt | drop method="POST"')["method"] == "GET"
    assert labels_of(q, '{job="test"} | logfmt | keep level, method="POST"') == {"level": "info"}
    assert labels_of(q, '{job="test"} | logfmt | keep job, status') == {"job": "test", "status": "200"}


def test_keep_retains_error_labels() -> None:
    q = one_line("not json")
    assert set(labels_of(q, '{job="test"} | json | keep job')) == {"job", "__error__", "__error_details__"}


def test_decolorize() -> None:
    q = one_line("\x1b[31mred\x1b[0m text \x1b[1;32mgreen\x1b[0m")
    assert line_of(q, '{job="test"} | decolorize') == "red text green"


def test_line_filter_after_line_format_filters_new_line() -> None:
    q = querier(({"job": "x"}, LINES))
    got = streams(q, '{job="x"} | logfmt | line_format "{{.msg}}" |= "o"')
    assert sorted(v[1] for s in got for v in s["values"]) == ["boom", "ok", "slow"]


def test_duration_filter_on_empty_value_is_a_label_filter_error() -> None:
    # an empty value used to crash core's duration parser (IndexError, a 500); Go's time.ParseDuration("")
    # fails, so Loki keeps the entry with __error__=LabelFilterErr
    got = labels_of(one_line('{"took":""}'), '{job="test"} | json | took > 1ms')
    assert got["__error__"] == "LabelFilterErr"
    assert got["__error_details__"] == 'time: invalid duration ""'
