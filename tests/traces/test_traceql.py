"""TraceQL cases with the traces they must find (the shop data of ``tests/traces/shop.py``), through
``/api/search``; semantics as Tempo's ``pkg/traceql`` documents them."""

from __future__ import annotations

import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitwall.traces.model import SpanRow
from pitwall.traces.traceql import TraceQLError, evaluate, parse
from pitwall.traces.traceql.ast import Attribute, Binary, Intrinsic, SpansetFilter, SpansetOp, Static
from tests.traces.shop import A, B, C, load_shop

pytestmark = pytest.mark.timeout(120)

CASES: list[tuple[str, set[str]]] = [
    # the examples
    ('{ resource.service.name = "frontend" && span.http.status_code >= 500 && duration > 100ms }', {A}),
    ('{ resource.service.name = "frontend" && span.http.status_code >= 500 && duration > 400ms }', set()),
    ("{ status = error }", {A}),
    ("{ status = ok }", {B}),
    ('{ name =~ "GET .*" }', {A, B}),
    ('{ name =~ "GET" }', set()),  # fully anchored
    ('{ name !~ "GET .*|POST .*" && kind = server }', set()),
    ('{ name !~ "GET .*" && kind = server }', {A}),
    ('{ .http.status_code = 200 } || { resource.deployment.environment = "prod" }', {B, C}),
    ('{ resource.service.name = "frontend" } > { resource.service.name = "backend" }', {A, B}),
    ("{ kind = client } > { kind = server }", {A}),
    ('{ kind = server } >> { span.db.system = "postgresql" }', {A}),
    ('{ kind = server } > { span.db.system = "postgresql" }', {A}),  # POST /reserve is its parent
    ('{ kind = client } > { span.db.system = "postgresql" }', set()),
    ('{ name = "SELECT stock" } < { }', {A}),
    ('{ name = "SELECT stock" } << { kind = client }', {A}),
    ("{ kind = server } ~ { kind = client }", set()),
    ("{ status = error } && { status = ok }", set()),
    ("{ status = error } && { kind = internal }", {A}),
    ("{ span.http.status_code != 500 }", {A, B}),  # 503 and 200; spans without it never match !=
    ('{ span.http.status_code = "500" }', set()),  # a string never equals an int
    ("{ .http.status_code > 499.5 && .http.status_code < 503 }", {A}),
    ("{ .job.id != nil }", {C}),
    ("{ .job.id = nil && kind = consumer }", set()),
    ("{ traceDuration > 1s }", {C}),
    ("{ duration >= 2s }", {C}),
    ('{ rootServiceName = "frontend" }', {A, B}),
    ('{ trace:rootService = "worker" }', {C}),
    ('{ span:name = "GET /cart" }', {B}),
    ("{ !(status = error) && kind = server }", {B}),
    ("{ .http.status_code >= 500 } | count() > 1", {A}),
    ("{ .http.status_code >= 500 } | count() > 2", set()),
    ("{ span:childCount > 1 }", set()),
    ("{ span:childCount = 1 && kind = consumer }", set()),
    ('{ resource.service.name = "worker" && span."job.id" = "42" }', {C}),
    ('{ span."a\\b" = "x" }', set()),  # a key no JSON path names: checked exactly, not pushed down
    ("{ true }", {A, B, C}),
    ("{ false }", set()),
    ('({ status = error } || { status = ok }) && { kind = server }', {A, B}),
]


@pytest.mark.parametrize(("query", "expected"), CASES)
async def test_traceql_finds_the_expected_traces(client: httpx.AsyncClient, query: str, expected: set[str]) -> None:
    await load_shop(client)
    now = int(time.time())
    r = await client.get("/api/search", params={"q": query, "start": str(now - 3600), "end": str(now + 60)})
    assert r.status_code == 200, r.text
    assert {t["traceID"] for t in r.json()["traces"]} == expected


def test_parse_tree() -> None:
    q = parse('{ resource.service.name = "x" && span.http.status_code >= 500 } > { duration > 100ms }')
    assert q.spansets == SpansetOp(">", SpansetFilter(Binary(
        "&&", Binary("=", Attribute("resource", "service.name"), Static("string", "x")),
        Binary(">=", Attribute("span", "http.status_code"), Static("int", 500)))),
        SpansetFilter(Binary(">", Intrinsic("duration"), Static("duration", 100_000_000))))
    assert parse("{ }").spansets == SpansetFilter(None)
    assert parse('{ .a = `raw\\n` }').spansets == SpansetFilter(Binary("=", Attribute("", "a"),
                                                                       Static("string", "raw\\n")))
    assert parse('{ span."with space" = -1.5 }').spansets == SpansetFilter(
        Binary("=", Attribute("span", "with space"), Static("float", -1.5)))


@pytest.mark.parametrize(("query", "msg"), [
    ("", "empty query"),
    ("{ .a = 1", "expected '}'"),
    ("{ foo = 1 }", "unknown identifier 'foo'"),
    ("{ .a = 1 } | select(.b)", "pipeline stage 'select'"),
    ("{ .a = 1 } | by(.b)", "pipeline stage 'by'"),
    ("{ instrumentation:name = \"x\" }", "unsupported TraceQL"),
    ("{ link:traceID = \"x\" }", "unsupported TraceQL"),
    ("{ .a =~ 1 }", "need a string regular expression"),
    ("{ .a } !> { .b }", "unexpected"),
    ("{" * 100 + "}" * 100, "parse error"),
    ("(" * 100 + "{}" + ")" * 100, "nests deeper"),
])
def test_bad_queries(query: str, msg: str) -> None:
    with pytest.raises(TraceQLError, match=msg.replace("(", r"\(")):
        parse(query)


_ALPHABET = st.sampled_from([
    *'{}()"`.:=!~<>&|-+ 0123456789abcnrestuxy_', "span.", "resource.", "status", "error", "duration", "name", "kind", "server", "100ms", "nil", "count()",
    "&&", "||", ">>", "=~", "!=", "true", "| ", "span:", "trace:", "event.", "parent."])


_FIELDS = st.sampled_from(["span.a", "span.b", ".c", "resource.service.name", ".d", ".e", ".missing", "name",
                           "status", "duration", "kind", "traceDuration", "rootName", "span:childCount"])
_VALUES = st.sampled_from(['"x"', '"op1"', "1", "2.5", "-3", "100ms", "1s", "true", "nil", "error", "ok",
                           "server", "client", '"svc"'])
_CMP = st.sampled_from(["=", "!=", ">", ">=", "<", "<=", "=~", "!~"])


def _field_exprs() -> st.SearchStrategy[str]:
    leaf = st.builds(lambda f, op, v: f"{f} {op} {v}" if op not in ("=~", "!~") else f'{f} {op} "o.*"',
                     _FIELDS, _CMP, _VALUES)
    return st.recursive(leaf, lambda inner: st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["&&", "||"]), inner),
        st.builds(lambda a: f"!({a})", inner), st.builds(lambda a: f"({a})", inner)), max_leaves=6)


def _queries() -> st.SearchStrategy[str]:
    spanset = st.one_of(st.just("{ }"), _field_exprs().map(lambda e: "{ " + e + " }"))
    combined = st.recursive(spanset, lambda inner: st.builds(
        lambda a, op, b: f"({a}) {op} ({b})", inner, st.sampled_from(["&&", "||", ">", ">>", "<", "<<", "~"]),
        inner), max_leaves=4)
    return st.builds(lambda q, c: q + c, combined, st.sampled_from(["", " | count() > 1", " | count() = 4"]))


_SPANS = [SpanRow(trace_id="ab" * 16, span_id=f"{i:016x}", parent_id=f"{i - 1:016x}" if i else "",
                  service="svc", name=f"op{i}", kind=i % 6, start_ns=i * 1000, duration_ns=10 ** (i + 5),
                  status_code=i % 3, status_message="", remote_service="", flags=0,
                  attributes={"a": i, "b": "x", "c": 1.5, "d": True, "e": [1]}, resource={"service.name": "svc"},
                  scope={}, events=[], links=[]) for i in range(4)]


@settings(max_examples=300, deadline=None)
@given(_queries())
def test_generated_queries_parse_and_evaluate(text: str) -> None:
    q = parse(text)
    got = evaluate(q, _SPANS)
    assert {s.span_id for s in got} <= {s.span_id for s in _SPANS}


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=30).map("".join))
def test_any_text_parses_or_is_a_clear_error(text: str) -> None:
    try:
        q = parse(text)
    except TraceQLError as e:
        assert str(e)
        return
    evaluate(q, _SPANS)


def test_structural_operators_stay_linear_on_a_deep_and_a_wide_trace() -> None:
    """A 20k-span chain and a 20k-child fan-out: a quadratic walk would not finish within the timeout."""
    def row(i: int, parent: str) -> SpanRow:
        return SpanRow(trace_id="cd" * 16, span_id=f"{i + 1:016x}", parent_id=parent, service="s", name="op",
                       kind=1, start_ns=i, duration_ns=1, status_code=0, status_message="", remote_service="",
                       flags=0, attributes={}, resource={}, scope={}, events=[], links=[])

    n = 20_000
    chain = [row(i, f"{i:016x}" if i else "") for i in range(n)]
    fan = [row(0, ""), *(row(i, f"{1:016x}") for i in range(1, n))]
    assert len(evaluate(parse("{ } >> { }"), chain)) == n - 1
    assert len(evaluate(parse("{ } << { }"), chain)) == n - 1
    assert len(evaluate(parse("{ } ~ { }"), fan)) == n - 1
    assert len(evaluate(parse("{ } > { }"), fan)) == n - 1
    assert len(evaluate(parse("{ } < { }"), fan)) == 1


@pytest.mark.parametrize("query", [
    "{ " + " && ".join([".a = 1"] * 300) + " }",
    " && ".join(["{ }"] * 300),
    "{ " + "!" * 300 + ".a = 1 }",
])
def test_long_operator_chains_are_refused_before_evaluation_recurses(query: str) -> None:
    with pytest.raises(TraceQLError, match=r"more than 256 operators|nests deeper"):
        parse(query)
    assert parse(" && ".join(["{ }"] * 200)).spansets is not None  # within the limit
