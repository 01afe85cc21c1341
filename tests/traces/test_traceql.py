"""TraceQL cases with the traces they must find (the shop data of ``tests/traces/shop.py``), through
``/api/search``; semantics as Tempo's ``pkg/traceql`` documents them."""

from __future__ import annotations

import time

import httpx
import pytest

from pitwall.traces.traceql import TraceQLError, parse
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
