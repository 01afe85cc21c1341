"""Template functions as Loki's template_functions docs show them, through line_format."""

from __future__ import annotations

import pytest

from pitwall.logs.logql.templates import TemplateError, compile_template
from tests.logs.logql.helpers import line_of, one_line

LABELS = {
    "path": "/a b/cdef",
    "request_method": "GET",
    "remote_addr": "10.0.0.1",
    "request_uri": "/x",
    "bar": "",
    "foo": "1 KB",
    "dur": "1h12m",
    "n": "7",
    "f": "2.5",
    "ts": "2021-11-02",
    "ansi": "x",
}


@pytest.mark.parametrize(
    ("tmpl", "expected"),
    [
        ('{{.path | replace " " "_" | trunc 5 | upper}}', "/A_B/"),
        ("{{.request_method | ToLower}}", "get"),
        ('{{ToUpper "This is a string" | ToLower}}', "this is a string"),
        ('{{ replace "hello" "world" "hello world" }}', "world world"),
        ('{{ Replace "aaa" "a" "b" 2 }}', "bba"),
        ('{{ trim "   hello    " }}', "hello"),
        ('{{ trimAll "$" "$5.00" }}', "5.00"),
        ('{{ trimSuffix "-" "hello-" }}', "hello"),
        ('{{ trimPrefix "-" "-hello" }}', "hello"),
        ('{{ TrimSpace "  x " }}|{{ TrimPrefix "abc" "a" }}|{{ TrimSuffix "abc" "c" }}', "x|bc|ab"),
        ('{{ regexReplaceAll "(a*)bc" "aaabcd" "${1}X" }}', "aaaXd"),
        ('{{ regexReplaceAllLiteral "(ts=)" "ts=1" "timestamp=" }}', "timestamp=1"),
        ('{{ lower "HELLO" }} {{ upper "hello" }} {{ title "hello world" }}', "hello HELLO Hello World"),
        ('{{ "hello world" | trunc 5 }}|{{ "hello world" | trunc -5 }}', "hello|world"),
        ('{{ "hello world" | substr 0 5 }}', "hello"),
        ('{{ if contains "he" "hello" }}yes{{ end }}', "yes"),
        ('{{ hasPrefix "cat" "catch" }} {{ hasSuffix "cat" "catch" }}', "true false"),
        ('{{ indent 4 "hello" }}', "    hello"),
        ('{{ nindent 4 "hello" }}', "\n    hello"),
        ('{{ repeat 3 "hello" }}', "hellohellohello"),
        ('{{ printf "The IP address was %s" .remote_addr }}', "The IP address was 10.0.0.1"),
        ('{{ printf "%-5s|" .request_uri }}', "/x   |"),
        ('{{ printf "%d %.2f %v %q" 3 1.5 true "x" }}', '3 1.50 true "x"'),
        ('{{ default "-" .bar }}{{ default "-" .path }}', "-/a b/cdef"),
        ("{{ add 3 2 }} {{ sub 3 2 }} {{ mul 3 2 }} {{ div 10 3 }} {{ mod 10 3 }}", "5 1 6 3 1"),
        ("{{ addf 1.5 2 }} {{ subf 1.5 2 }} {{ mulf 1.5 2 }} {{ divf 1 4 }}", "3.5 -0.5 3 0.25"),
        ("{{ max 1 2 3 }} {{ min 1 2 3 }} {{ maxf 1 2.5 }} {{ minf 1 2.5 }}", "3 1 2.5 1"),
        ("{{ ceil 123.001 }} {{ floor 123.9999 }} {{ round 123.555555 3 }}", "124 123 123.556"),
        ("{{ .n | int | add 1 }} {{ .f | float64 | mulf 2 }}", "8 5"),
        ('{{ toDate "2006-01-02" "2021-11-02" | unixEpoch }}', "1635811200"),
        ('{{ toDate "2006-01-02" .ts | date "02.01.2006" }}', "02.11.2021"),
        ('{{ toDateInZone "2006-01-02" "UTC" "2021-11-02" | unixEpochMillis }}', "1635811200000"),
        ('{{ unixToTime "1679577215" | date "2006-01-02T15:04:05Z07:00" }}', "2023-03-23T13:13:35Z"),
        ('{{ unixToTime "1679577215123" | unixEpochMillis }} {{ unixToTime "19440" | unixEpoch }}',
         "1679577215123 1679616000"),
        ('{{ unixToTime "1679577215123456" | unixEpochNanos }}', "1679577215123456000"),
        ('{{ unixToTime "1679577215123456789" | unixEpochNanos }}', "1679577215123456789"),
        ('{{ "hello" | b64enc }} {{ "aGVsbG8=" | b64dec }}', "aGVsbG8= hello"),
        ('{{ urlencode "a b&c" }} {{ urldecode "a+b%26c" }}', "a+b%26c a b&c"),
        ('{{ .foo | bytes }} {{ .dur | duration }} {{ duration_seconds "1m30s" }}', "1000 4320 90"),
        (
            '{{ alignLeft 5 "hello world" }}|{{ alignRight 5 "hello world" }}|{{ alignLeft 7 "ab" }}|',
            "hello|world|ab     |",
        ),
        ('{{ count "a" "banana" }}', "3"),
        (
            '{{ if eq .request_method "GET" }}read{{ else if eq .request_method "POST" }}write{{ else }}other{{ end }}',
            "read",
        ),
        ("{{ if and .path (not .bar) }}ok{{ end }}", "ok"),
        ("{{ $x := .n }}{{ $x }}-{{ len .path }}", "7-9"),
        ('{{ range $i, $v := fromJson "[1,2]" }}{{ $v }},{{ end }}', "1,2,"),
        ('{{ index (fromJson "{\\"a\\":{\\"b\\":\\"c\\"}}") "a" "b" }}', "c"),
        ('{{/* a comment */}}x {{- "  y" -}}  z', "x  yz"),
        ("{{ .missing }}|{{ .path }}", "|/a b/cdef"),
        # Go's printing: a missing key of a fromJson map is <no value>, nil through fmt is <nil>.
        ('{{ (fromJson "{}").x }}|{{ printf "%v" (fromJson "{}").x }}|{{ print nil }}', "<no value>|<nil>|<nil>"),
        ('{{ html "<a>" }} {{ js "it\'s" }} {{ urlquery "a b" }}', "&lt;a&gt; it\\'s a+b"),
    ],
)
def test_template_functions(tmpl: str, expected: str) -> None:
    assert compile_template(tmpl).render(LABELS, "the line", 1_000_000_000) == expected


def test_range_with_index_variable() -> None:
    assert (
        compile_template('{{ range $i, $v := fromJson "[\\"a\\",\\"b\\"]" }}{{ $i }}={{ $v }} {{ end }}').render(
            {}, "", 0
        )
        == "0=a 1=b "
    )
    assert (
        compile_template('{{ range fromJson "[\\"a\\",\\"b\\"]" }}<{{ . }}>{{ end }}').render({}, "", 0)
        == "<a><b>"
    )


@pytest.mark.parametrize("bad", ["{{ .a ", "{{ if .a }}x", "{{ end }}", "{{ nosuchfunc .a }}x"])
def test_bad_templates_fail(bad: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(bad).render({"a": "1"}, "", 0)


def test_template_errors_read_like_go() -> None:
    with pytest.raises(TemplateError, match=r"error calling div: runtime error: integer divide by zero"):
        compile_template("{{ div 1 0 }}").render({}, "", 0)
    with pytest.raises(TemplateError, match=r'function "nosuch" not defined'):
        compile_template("{{ nosuch }}")


def test_comparing_string_and_number_is_a_template_error() -> None:
    with pytest.raises(TemplateError):
        compile_template("{{ if gt .n 3 }}x{{ end }}").render({"n": "7"}, "", 0)


def test_line_format_through_engine_uses_labels_and_line() -> None:
    q = one_line("status=500 path=/api")
    got = line_of(
        q,
        '{job="test"} | logfmt | line_format "{{.path}} {{if ge (int .status) 500}}ERR{{end}} {{__line__}}"',
    )
    assert got == "/api ERR status=500 path=/api"


@pytest.mark.parametrize(("epoch", "needle"), [("12345678", "%!w(<nil>)"), ("abc", "invalid syntax")])
def test_unix_to_time_errors_read_like_loki(epoch: str, needle: str) -> None:
    with pytest.raises(TemplateError, match=f"error calling unixToTime: unable to parse time '{epoch}'") as e:
        compile_template(f'{{{{ unixToTime "{epoch}" }}}}').render({}, "", 0)
    assert needle in str(e.value)
