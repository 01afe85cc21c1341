"""Go text/template semantics: expected outputs are what Go 1.22+ produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pitwall.core.gofmt import format_float, go_sprintf
from pitwall.core.gotemplate import Template, TemplateError, ZeroMap


@dataclass
class Sample:
    Labels: dict[str, str]
    Value: float

    def Double(self, k: int) -> float:
        return self.Value * k


def run(text: str, data: Any = None, **funcs: Any) -> str:
    return Template("t", funcs).parse(text).execute(data)


DATA = {"a": 1, "s": "str", "f": 1.5, "l": [1, "two", 3.0], "m": {"k2": 2, "k1": 1}, "t": True, "z": 0,
        "e": "", "n": None, "sample": Sample({"job": "api"}, 2.5), "el": []}

OK_CASES = [
    # text, trimming, comments
    ("plain text", "plain text"),
    ("a  {{- 1 -}}  b", "a1b"),
    ("a \n{{- 1}} \n", "a1 \n"),
    ("{{/* comment */}}x", "x"),
    ("a {{- /* c */ -}} b", "ab"),
    ("{{-3}}", "-3"),
    # fields and values
    ("{{.a}} {{.s}} {{.f}} {{.t}} {{.l}} {{.m}}", "1 str 1.5 true [1 two 3] map[k1:1 k2:2]"),
    ("{{.missing}}", "<no value>"),
    ("{{.n}}", "<no value>"),
    ("{{.sample.Labels.job}} {{.sample.Value}}", "api 2.5"),
    ("{{.sample.Double 2}}", "5"),
    ("{{(index .l 1)}} {{(.m).k1}}", "two 1"),
    # constants
    ("{{1}} {{1.0}} {{1e3}} {{0x10}} {{'a'}} {{\"q\\tq\"}} {{`raw`}} {{true}}", "1 1 1000 16 97 q\tq raw true"),
    ("{{1e6}} {{0.000001}} {{123456.0}} {{1234567.0}}", "1e+06 1e-06 123456 1.234567e+06"),
    # variables
    ("{{$x := 1}}{{$x}}{{$x = 2}}{{$x}}", "12"),
    ("{{$}}", "7"),
    ("{{with $x := .a}}{{$x}}{{end}}", "1"),
    ("{{if true}}{{$y := 5}}{{$y}}{{end}}", "5"),
    # if / else if / with / else with
    ("{{if .t}}yes{{else}}no{{end}}", "yes"),
    ("{{if .z}}a{{else if .e}}b{{else if .s}}c{{else}}d{{end}}", "c"),
    ("{{if .l}}L{{end}}{{if .n}}N{{end}}{{if .m}}M{{end}}", "LM"),
    ("{{with .s}}{{.}}{{else}}none{{end}}", "str"),
    ("{{with .e}}{{.}}{{else with .a}}a={{.}}{{end}}", "a=1"),
    # range
    ("{{range .l}}[{{.}}]{{end}}", "[1][two][3]"),
    ("{{range $i, $v := .l}}{{$i}}:{{$v}} {{end}}", "0:1 1:two 2:3 "),
    ("{{range $k, $v := .m}}{{$k}}={{$v}};{{end}}", "k1=1;k2=2;"),
    ("{{range .el}}x{{else}}empty{{end}}", "empty"),
    ("{{range .n}}x{{else}}nil{{end}}", "nil"),
    ("{{range 3}}{{.}}{{end}}", "012"),
    ("{{range .l}}{{if eq (print .) \"two\"}}{{continue}}{{end}}{{.}}{{end}}", "13"),
    ("{{range .l}}{{if eq . 1}}{{end}}{{end}}", "ERR incompatible types for comparison"),
    ("{{range $i, $e := .l}}{{if eq $i 1}}{{break}}{{end}}{{$e}}{{end}}", "1"),
    ("{{range .l}}{{$}}{{end}}", "777"),
    # define / template / block
    ('{{define "T"}}<{{.}}>{{end}}{{template "T" "x"}}{{template "T"}}', "<x><<no value>>"),
    ('{{block "B" .a}}b{{.}}{{end}}', "b1"),
    # builtins
    ("{{len .l}} {{len .s}} {{len .m}} {{len \"é\"}}", "3 3 2 2"),
    ("{{index .l 1}} {{index .m \"k2\"}} {{index .m \"nope\"}}", "two 2 <no value>"),
    ("{{slice .s 1}} {{slice .s 1 2}} {{slice .l 1 2}}", "tr t [two]"),
    ("{{and 1 2}} {{and 0 2}} {{or 0 \"\"}} {{or 0 3}} {{not .t}}", "2 0  3 false"),
    ("{{eq .a 1}} {{eq .s \"x\" \"str\"}} {{ne .a 2}} {{lt 1 2}} {{le 2 2}} {{gt \"b\" \"a\"}} {{ge 1.5 2.5}}",
     "true true true true true true false"),
    ("{{print 1 2 \"x\" 3 \"y\"}}", "1 2x3y"),
    ("{{println 1 \"x\"}}", "1 x\n"),
    ("{{printf \"%s=%d %5.2f|%-5s|%05d|%x|%X|%q|%v|%t|%e|%g\" \"k\" 42 3.14159 \"ab\" 42 255 \"hi\" \"q\" .l true 1234.5678 0.00001}}",
     "k=42  3.14|ab   |00042|ff|6869|\"q\"|[1 two 3]|true|1.234568e+03|1e-05"),
    ("{{printf \"%d%%\" 5}} {{printf \"%d\"}} {{printf \"%d\" \"s\"}} {{printf \"%s\" 1}} {{printf \"x\" 1}}",
     "5% %!d(MISSING) %!d(string=s) %!s(int=1) x%!(EXTRA int=1)"),
    ("{{html \"<a href='x'>&\\\"\"}}", "&lt;a href=&#39;x&#39;&gt;&amp;&#34;"),
    ("{{js \"it's <b>\\n\"}}", "it\\'s \\u003Cb\\u003E\\u000A"),
    ("{{urlquery \"a b&c=d/é~\"}}", "a+b%26c%3Dd%2F%C3%A9~"),
    ("{{.a | printf \"%03d\"}}", "001"),
    ("{{\"x\" | printf \"%s-%s\" \"y\"}}", "y-x"),
    ("{{call .fn 2}}", "4"),
]


@pytest.mark.parametrize(("text", "want"), OK_CASES)
def test_execute(text: str, want: str) -> None:
    data: Any = dict(DATA, fn=lambda x: x * 2)
    if "{{$}}" in text or "{{$}}{{end}}" in text:
        data = 7 if text == "{{$}}" else {"l": [1, 2, 3]}
        want = want if text == "{{$}}" else "map[l:[1 2 3]]" * 3
    if want.startswith("ERR "):
        with pytest.raises(TemplateError, match=want[4:]):
            run(text, data)
        return
    assert run(text, data) == want


ERR_CASES = [
    ("{{.a.b}}", {}, 'template: t:1:2: executing "t" at <.a.b>: nil pointer evaluating interface {}.b'),
    ("{{nope}}", None, 'template: t:1: function "nope" not defined'),
    ("{{if}}{{end}}", None, "template: t:1: missing value for if"),
    ("{{}}", None, "template: t:1: missing value for command"),
    ("x\n{{.X}}", 1, 'template: t:2:2: executing "t" at <.X>: can\'t evaluate field X in type int'),
    ("{{index . 5}}", [1], 'template: t:1:2: executing "t" at <index . 5>: error calling index: index out of range: 5'),
    ("{{$x}}", None, 'template: t:1: undefined variable "$x"'),
    ("{{range .}}", None, "template: t:1: unexpected EOF"),
    ("{{end}}", None, "template: t:1: unexpected {{end}}"),
    ("{{break}}", None, "template: t:1: {{break}} outside {{range}}"),
    ("{{len 3}}", None, 'template: t:1:2: executing "t" at <len 3>: error calling len: len of type int'),
    ("{{gt 1.5 1}}", None, 'template: t:1:2: executing "t" at <gt 1.5 1>: error calling gt: incompatible types for comparison'),
    ('{{template "zz"}}', None, 'template: t:1:11: executing "t" at <{{template "zz"}}>: template "zz" not defined'),
    ("{{nil}}", None, 'template: t:1:2: executing "t" at <nil>: nil is not a command'),
    ("{{1 2}}", None, 'template: t:1:2: executing "t" at <1>: can\'t give argument to non-function 1'),
    ("{{.a 1}}", {"a": 1}, 'template: t:1:2: executing "t" at <.a>: a is not a method but has arguments'),
    ("{{ \"unterminated }}", None, "template: t:1: unterminated quoted string"),
    ("{{ 1 | 2 }}", None, "template: t:1: non executable command in pipeline stage 2"),
    ("{{ 3x }}", None, 'template: t:1: bad number syntax: "3x"'),
    ("{{/* x }}", None, "template: t:1: unclosed comment"),
    ("{{ .a", None, "template: t:1: unclosed action"),
    ("{{ (1 }}", None, "template: t:1: unclosed left paren"),
    ("{{ fail }}", None, 'template: t:1:3: executing "t" at <fail>: error calling fail: boom'),
]


@pytest.mark.parametrize(("text", "data", "want"), ERR_CASES)
def test_errors(text: str, data: Any, want: str) -> None:
    def fail() -> str:
        raise ValueError("boom")

    with pytest.raises(TemplateError) as exc:
        run(text, data, fail=fail)
    assert exc.value.message == want


def test_missingkey_options() -> None:
    t = Template("t").option("missingkey=error").parse("{{.x}}")
    with pytest.raises(TemplateError, match='map has no entry for key "x"'):
        t.execute({})
    assert Template("t").option("missingkey=zero").parse("{{.x}}").execute({}) == "<no value>"
    # A map[string]string under missingkey=zero (Prometheus' $labels) gives "".
    assert Template("t").option("missingkey=zero").parse("[{{.x}}]").execute(ZeroMap({})) == "[]"
    assert Template("t").parse('[{{index . "x"}}]').execute(ZeroMap({})) == "[]"
    with pytest.raises(ValueError):
        Template("t").option("nope=1")


def test_parse_adds_definitions_and_execute_by_name() -> None:
    t = Template("root")
    t.parse('{{define "a"}}A{{.}}{{end}}root')
    t.parse('{{define "b"}}B{{template "a" .}}{{end}}')
    assert t.execute(1) == "root"  # an all-definitions parse keeps the old root
    assert t.execute(2, name="b") == "BA2"
    assert t.defined() == ["a", "b", "root"]
    with pytest.raises(TemplateError, match='no template "c" associated with template "root"'):
        t.execute(None, name="c")


def test_empty_root() -> None:
    assert Template("e").parse('{{define "x"}}x{{end}}').execute(None) == ""
    with pytest.raises(TemplateError, match='"e" is an incomplete or empty template'):
        Template("e").execute(None)


def test_recursion_is_bounded() -> None:
    t = Template("r").parse('{{define "loop"}}{{template "loop" .}}{{end}}{{template "loop" .}}')
    with pytest.raises(TemplateError, match="exceeded maximum template depth"):
        t.execute(None)


def test_wrong_arg_count() -> None:
    with pytest.raises(TemplateError, match="wrong number of args for f: want 1 got 2"):
        run("{{f 1 2}}", f=lambda x: x)


def test_funcs_added_after_construction() -> None:
    t = Template("t").funcs({"up": str.upper}).parse('{{up "x"}}')
    assert t.execute(None) == "X"


@pytest.mark.parametrize(("value", "want"), [
    (0.0, "0"), (1.0, "1"), (-2.5, "-2.5"), (1e6, "1e+06"), (999999.0, "999999"), (0.0001, "0.0001"),
    (0.00001, "1e-05"), (1e21, "1e+21"), (123456789.0, "1.23456789e+08"), (float("inf"), "+Inf"),
    (float("-inf"), "-Inf"), (float("nan"), "NaN"), (0.1 + 0.2, "0.30000000000000004"),
])
def test_float_shortest(value: float, want: str) -> None:
    assert format_float(value) == want


@pytest.mark.parametrize(("fmt", "args", "want"), [
    ("%.4g", (1048.576,), "1049"), ("%.4g", (1048576.0,), "1.049e+06"), ("%.4g", (0.0,), "0"),
    ("%.4g", (float("inf"),), "+Inf"), ("%8.3f|", (3.14159,), "   3.142|"), ("%-8.3f|", (3.14159,), "3.142   |"),
    ("%+d %+d", (5, -5), "+5 -5"), ("%x %X %o %b", (255, 255, 8, 5), "ff FF 10 101"), ("%c", (65,), "A"),
    ("%10s|", ("hi",), "        hi|"), ("%.1s", ("hello",), "h"), ("%v %v", (None, {"a": [1]}), "<nil> map[a:[1]]"),
    ("%T %T %T", (1, "s", 1.5), "int string float64"), ("%5t", (True,), " true"), ("%q", ("a\"b\n",), '"a\\"b\\n"'),
    ("%d items", ([1, 2],), "[1 2] items"), ("%!", (), "%!!(MISSING)"), ("50%", (), "50%!(NOVERB)"),
])
def test_sprintf(fmt: str, args: tuple[Any, ...], want: str) -> None:
    assert go_sprintf(fmt, *args) == want


def test_no_value_and_nil_are_different_cases() -> None:
    # Go prints <no value> for an action whose value is missing or a nil interface
    # (a missing map key, a nil map element, index of a missing key), while fmt
    # prints <nil> for a nil handed to print/printf.
    data = {"n": None, "m": {}}
    assert run("{{.missing}}|{{.n}}|{{index .m \"k\"}}", data) == "<no value>|<no value>|<no value>"
    assert run("{{print .n}}|{{printf \"%v\" .missing}}|{{print nil}}|{{.n | print}}", data) == \
        "<nil>|<nil>|<nil>|<nil>"
    # map[string]string under missingkey=zero: the zero string.
    assert Template("t").option("missingkey=zero").parse("[{{.x}}]").execute(ZeroMap({})) == "[]"


def test_per_execution_funcs_and_constant_text() -> None:
    t = Template("t", {"who": lambda: "nobody"}).parse("hi {{who}}")
    assert t.execute(None) == "hi nobody"
    assert t.execute(None, funcs={"who": lambda: "you"}) == "hi you"
    sub = Template("t", {"who": lambda: "nobody"}).parse('{{define "d"}}<{{who}}>{{end}}{{template "d"}}')
    assert sub.execute(None, funcs={"who": lambda: "you"}) == "<you>"
    assert t.constant_text() is None
    assert Template("c").parse("just text").constant_text() == "just text"


def test_arity_of_plain_functions_and_methods() -> None:
    def two(a: int, b: int = 0) -> int:
        return a + b

    def many(a: int, *rest: int) -> int:
        return a + sum(rest)

    assert run("{{two 1}} {{two 1 2}} {{many 1 2 3}}", two=two, many=many) == "1 3 6"
    with pytest.raises(TemplateError, match="wrong number of args for two: want 2 got 3"):
        run("{{two 1 2 3}}", two=two)
    with pytest.raises(TemplateError, match="wrong number of args for many: want at least 1 got 0"):
        run("{{many}}", many=many)
    assert run("{{.sample.Double 2}}", {"sample": Sample({}, 1.5)}) == "3"
