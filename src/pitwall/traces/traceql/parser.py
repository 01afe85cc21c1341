"""TraceQL's common subset: lexer and recursive-descent parser.

Grammar (precedence low to high)::

    query     := spansets ( '|' 'count' '(' ')' cmp number )*
    spansets  := sor ;  sor := sand ('||' sand)* ;  sand := struct ('&&' struct)*
    struct    := prim (('>' | '>>' | '<' | '<<' | '~') prim)*
    prim      := '{' [ expr ] '}' | '(' spansets ')'
    expr      := or ;  or := and ('||' and)* ;  and := unary ('&&' unary)*
    unary     := '!' unary | cmp_expr ;  cmp_expr := operand [ cmp_op operand ]
    operand   := '(' expr ')' | attribute | intrinsic | literal

Anything outside it (arithmetic, ``select``, ``by``, aggregates other than
``count()``, ``parent.``/``event.``/``link.``/``instrumentation.`` scopes,
metrics queries) raises ``TraceQLError`` naming what is not supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pitwall.core import regex
from pitwall.traces.errors import BadQuery
from pitwall.traces.jaeger import parse_go_duration_ns
from pitwall.traces.traceql.ast import (
    Attribute,
    Binary,
    Count,
    FieldExpr,
    Intrinsic,
    Not,
    Query,
    SpansetExpr,
    SpansetFilter,
    SpansetOp,
    Static,
)

__all__ = ["TraceQLError", "parse"]

MAX_QUERY_LENGTH = 16 << 10
MAX_DEPTH = 64
MAX_OPERATORS = 256  # binary operators in all: evaluation recurses once per operator


class TraceQLError(BadQuery):
    """A query outside the supported subset or malformed (HTTP 400)."""


INTRINSICS = {
    "name": "name", "span:name": "name", "status": "status", "span:status": "status",
    "statusMessage": "statusMessage", "span:statusMessage": "statusMessage",
    "duration": "duration", "span:duration": "duration", "kind": "kind", "span:kind": "kind",
    "traceDuration": "traceDuration", "trace:duration": "traceDuration",
    "rootName": "rootName", "trace:rootName": "rootName",
    "rootServiceName": "rootServiceName", "trace:rootService": "rootServiceName",
    "span:id": "span:id", "span:parentID": "span:parentID", "trace:id": "trace:id",
    "span:childCount": "span:childCount",
}
STATUSES = ("error", "ok", "unset")
KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_UNSUPPORTED_SCOPES = ("parent", "event", "link", "instrumentation")

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<dur>(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h)(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))*)
  | (?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)
  | (?P<op>&&|\|\||>>|<<|>=|<=|!=|=~|!~|[{}()|=<>!~,+\-*/%^])
  | (?P<ident>(?:span|resource|parent|event|link|instrumentation|trace)?[.:][^\s{}()=!<>~&|,"`]*
              |[A-Za-z_][A-Za-z0-9_]*)
""", re.X)
_QUOTED_ATTR = re.compile(r'(span|resource|)\.("(?:[^"\\]|\\.)*")')


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


def _lex(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        q = _QUOTED_ATTR.match(text, pos)
        if q and (pos == 0 or not text[pos - 1].isalnum()):
            out.append(Token("ident", f"{q.group(1)}.{_unquote(q.group(2))}", pos))
            pos = q.end()
            continue
        m = _TOKEN.match(text, pos)
        if m is None:
            raise TraceQLError(f"parse error at position {pos + 1}: unexpected {text[pos:pos + 10]!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(Token(kind, m.group(), pos))
        pos = m.end()
    out.append(Token("eof", "", len(text)))
    return out


def _unquote(s: str) -> str:
    if s.startswith("`"):
        return s[1:-1]
    body = s[1:-1]
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), body)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _lex(text)
        self.i = 0
        self.depth = 0
        self.operators = 0

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def take(self, text: str | None = None, kind: str | None = None) -> Token:
        t = self.tok
        if (text is not None and t.text != text) or (kind is not None and t.kind != kind):
            want = repr(text) if text is not None else kind
            got = repr(t.text) if t.kind != "eof" else "end of query"
            raise TraceQLError(f"parse error at position {t.pos + 1}: expected {want}, got {got}")
        self.i += 1
        return t

    def at(self, *texts: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in texts

    def operator(self) -> None:
        self.operators += 1
        if self.operators > MAX_OPERATORS:
            raise TraceQLError(f"query has more than {MAX_OPERATORS} operators")

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise TraceQLError(f"query nests deeper than {MAX_DEPTH} levels")

    # -- query -----------------------------------------------------------
    def query(self) -> Query:
        if self.tok.kind == "eof":
            raise TraceQLError("empty query: expected a spanset filter such as { }")
        spansets = self.spansets()
        pipeline: list[Count] = []
        while self.at("|"):
            self.take("|")
            pipeline.append(self.stage())
        if self.tok.kind != "eof":
            raise TraceQLError(f"parse error at position {self.tok.pos + 1}: unexpected {self.tok.text!r}")
        return Query(spansets, tuple(pipeline))

    def stage(self) -> Count:
        t = self.take(kind="ident")
        if t.text != "count":
            raise TraceQLError(f"unsupported TraceQL: pipeline stage {t.text!r} (only count() comparisons are "
                               "supported)")
        self.take("(")
        self.take(")")
        op = self.take(kind="op").text
        if op not in ("=", "!=", ">", ">=", "<", "<="):
            raise TraceQLError(f"parse error: count() must be compared with =, !=, >, >=, < or <=, got {op!r}")
        n = self.take(kind="num")
        return Count(op, float(n.text))

    # -- spansets --------------------------------------------------------
    def spansets(self) -> SpansetExpr:
        lhs = self.spanset_and()
        while self.at("||"):
            self.take()
            self.operator()
            lhs = SpansetOp("||", lhs, self.spanset_and())
        return lhs

    def spanset_and(self) -> SpansetExpr:
        lhs = self.structural()
        while self.at("&&"):
            self.take()
            self.operator()
            lhs = SpansetOp("&&", lhs, self.structural())
        return lhs

    def structural(self) -> SpansetExpr:
        lhs = self.spanset_primary()
        while self.at(">", ">>", "<", "<<", "~"):
            op = self.take().text
            self.operator()
            lhs = SpansetOp(op, lhs, self.spanset_primary())
        if self.at("!>", "!<", "!~", "&>", "&<", "&~"):
            raise TraceQLError(f"unsupported TraceQL: structural operator {self.tok.text!r}")
        return lhs

    def spanset_primary(self) -> SpansetExpr:
        self.nest()
        try:
            if self.at("("):
                self.take("(")
                inner = self.spansets()
                self.take(")")
                return inner
            self.take("{")
            if self.at("}"):
                self.take("}")
                return SpansetFilter(None)
            expr = self.expr()
            self.take("}")
            return SpansetFilter(expr)
        finally:
            self.depth -= 1

    # -- field expressions ---------------------------------------------------
    def expr(self) -> FieldExpr:
        lhs = self.and_expr()
        while self.at("||"):
            self.take()
            self.operator()
            lhs = Binary("||", lhs, self.and_expr())
        return lhs

    def and_expr(self) -> FieldExpr:
        lhs = self.unary()
        while self.at("&&"):
            self.take()
            self.operator()
            lhs = Binary("&&", lhs, self.unary())
        return lhs

    def unary(self) -> FieldExpr:
        if self.at("!"):
            self.take()
            self.nest()
            self.operator()
            try:
                return Not(self.unary())
            finally:
                self.depth -= 1
        return self.comparison()

    def comparison(self) -> FieldExpr:
        lhs = self.operand()
        if self.at("=", "!=", ">", ">=", "<", "<=", "=~", "!~"):
            op = self.take().text
            rhs = self.operand()
            if op in ("=~", "!~"):
                self.check_regex(rhs)
            return Binary(op, lhs, rhs)
        if self.at("+", "-", "*", "/", "%", "^"):
            raise TraceQLError(f"unsupported TraceQL: arithmetic ({self.tok.text!r})")
        return lhs

    def check_regex(self, rhs: FieldExpr) -> None:
        if not (isinstance(rhs, Static) and rhs.kind == "string"):
            raise TraceQLError("parse error: =~ and !~ need a string regular expression on the right")
        try:
            regex.compile(rhs.value, anchored=True)
        except regex.RegexError as e:
            raise TraceQLError(f"invalid regular expression {rhs.value!r}: {e}") from None

    def operand(self) -> FieldExpr:
        t = self.tok
        if self.at("("):
            self.take("(")
            self.nest()
            try:
                inner = self.expr()
            finally:
                self.depth -= 1
            self.take(")")
            return inner
        if self.at("-") and self.toks[self.i + 1].kind in ("num", "dur"):
            self.take()
            v = self.operand()
            assert isinstance(v, Static)
            return Static(v.kind, -v.value)
        self.i += 1
        if t.kind == "str":
            return Static("string", _unquote(t.text))
        if t.kind == "dur":
            return Static("duration", parse_go_duration_ns(t.text))
        if t.kind == "num":
            return Static("float", float(t.text)) if re.search(r"[.eE]", t.text) else Static("int", int(t.text))
        if t.kind == "ident":
            return self.identifier(t)
        got = repr(t.text) if t.kind != "eof" else "end of query"
        raise TraceQLError(f"parse error at position {t.pos + 1}: expected a field or a value, got {got}")

    def identifier(self, t: Token) -> FieldExpr:
        text = t.text
        if text in ("true", "false"):
            return Static("bool", text == "true")
        if text == "nil":
            return Static("nil", None)
        if text in STATUSES:
            return Static("status", text)
        if text in KINDS:
            return Static("spankind", text)
        if text in INTRINSICS:
            return Intrinsic(INTRINSICS[text])
        scope, dot, name = text.partition(".")
        if dot and scope in ("span", "resource", "") and name:
            return Attribute(scope, name)
        head = re.split(r"[.:]", text, maxsplit=1)[0]
        if head in _UNSUPPORTED_SCOPES or text.split(":")[0] in _UNSUPPORTED_SCOPES:
            raise TraceQLError(f"unsupported TraceQL: {text!r} (scopes span., resource. and unscoped . are "
                               "supported)")
        if self.at("("):
            raise TraceQLError(f"unsupported TraceQL: function {text}()")
        raise TraceQLError(f"parse error at position {t.pos + 1}: unknown identifier {text!r} (attributes need a "
                           "scope: span.x, resource.x or .x)")


def parse(text: str) -> Query:
    """The syntax tree of a TraceQL query; ``TraceQLError`` when malformed or outside the subset."""
    if len(text) > MAX_QUERY_LENGTH:
        raise TraceQLError(f"query longer than {MAX_QUERY_LENGTH} characters")
    try:
        return _Parser(text).query()
    except ValueError as e:  # a duration literal Go would reject
        raise TraceQLError(f"parse error: {e}") from None
