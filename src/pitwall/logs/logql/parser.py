"""Recursive-descent LogQL parser producing the AST in ``ast.py``.

The grammar follows Loki's (pkg/logql/syntax): log selectors with pipelines,
range aggregations over log ranges (optionally unwrapped), vector
aggregations with ``by``/``without`` before or after the arguments, binary
operators with Prometheus precedence and vector matching, ``label_replace``
and ``vector``. Validation that Loki does after parsing (unwrap required or
forbidden, grouping allowed, non-empty selector) happens here too, with
Loki's messages.
"""

from __future__ import annotations

import re

from pitwall.core import regex
from pitwall.core.labels import Matcher, MatchType
from pitwall.logs.logql import ast
from pitwall.logs.logql.errors import LogQLParseError
from pitwall.logs.logql.ipfilter import compile_ip_pattern
from pitwall.logs.logql.lexer import Tok, Token, tokenize
from pitwall.logs.logql.units import parse_bytes, parse_duration_ns, parse_go_float

__all__ = ["parse_expr", "parse_log_selector", "parse_matchers"]

RANGE_OPS = frozenset(
    {
        "count_over_time",
        "rate",
        "rate_counter",
        "bytes_rate",
        "bytes_over_time",
        "absent_over_time",
        "sum_over_time",
        "avg_over_time",
        "max_over_time",
        "min_over_time",
        "stdvar_over_time",
        "stddev_over_time",
        "quantile_over_time",
        "first_over_time",
        "last_over_time",
    }
)
_UNWRAP_REQUIRED = frozenset(
    {
        "sum_over_time",
        "avg_over_time",
        "max_over_time",
        "min_over_time",
        "stdvar_over_time",
        "stddev_over_time",
        "quantile_over_time",
        "first_over_time",
        "last_over_time",
        "rate_counter",
    }
)
_UNWRAP_FORBIDDEN = frozenset({"count_over_time", "bytes_rate", "bytes_over_time", "absent_over_time"})
_GROUPING_ALLOWED = frozenset(
    {
        "avg_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "quantile_over_time",
        "rate",
        "rate_counter",
        "max_over_time",
        "min_over_time",
        "first_over_time",
        "last_over_time",
    }
)
VECTOR_OPS = frozenset(
    {"sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "sort", "sort_desc"}
)
_PARSER_STAGES = frozenset({"json", "logfmt", "regexp", "pattern", "unpack"})
_STAGE_WORDS = _PARSER_STAGES | {"decolorize", "distinct", "line_format", "label_format", "drop", "keep"}
_RESERVED = frozenset({"by", "without", "offset", "or", "and", "unless", "bool", "on", "ignoring"})
_CMP = ("==", "!=", ">", ">=", "<", "<=")
# Binary operator precedence, lowest first (Prometheus'/Loki's).
_PRECEDENCE: list[tuple[str, ...]] = [("or",), ("and", "unless"), _CMP, ("+", "-"), ("*", "/", "%"), ("^",)]
_SET_OPS = ("and", "or", "unless")
_EMPTY_SELECTOR_MSG = (
    "queries require at least one regexp or equality matcher that does not have an empty-compatible value. "
    'For instance, app=~".*" does not meet this requirement, but app=~".+" will'
)


def parse_expr(src: str) -> ast.Expr:
    """Parse and validate a LogQL expression; ``LogQLParseError`` with Loki's message on failure."""
    p = _Parser(src)
    expr = p.expr()
    p.expect_end()
    return expr


def parse_log_selector(src: str) -> ast.LogSelector:
    """Parse a log expression (selector and pipeline); metric expressions are rejected."""
    expr = parse_expr(src)
    if not isinstance(expr, ast.LogSelector):
        raise LogQLParseError("only log selector is supported")
    return expr


def parse_matchers(src: str) -> list[Matcher]:
    """The matchers of a bare stream selector ``{a="b", c=~"d"}``."""
    p = _Parser(src)
    matchers = p.selector()
    p.expect_end()
    return list(matchers)


class _Parser:
    def __init__(self, src: str) -> None:
        self.toks = tokenize(src)
        self.i = 0

    # -- token helpers -------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def advance(self) -> Token:
        t = self.toks[self.i]
        if t.kind is not Tok.EOF:
            self.i += 1
        return t

    def is_op(self, *ops: str) -> bool:
        return self.tok.kind is Tok.OP and self.tok.text in ops

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind is Tok.IDENT and self.tok.text in words

    def error(self, expecting: str = "", tok: Token | None = None) -> LogQLParseError:
        t = tok or self.tok
        msg = f"syntax error: unexpected {t.describe()}"
        if expecting:
            msg += f", expecting {expecting}"
        return LogQLParseError(msg, t.line, t.col)

    def expect_op(self, op: str) -> Token:
        if not self.is_op(op):
            raise self.error(op)
        return self.advance()

    def expect_kind(self, kind: Tok) -> Token:
        if self.tok.kind is not kind:
            raise self.error(kind.value)
        return self.advance()

    def expect_end(self) -> None:
        if self.tok.kind is not Tok.EOF:
            raise self.error()

    # -- expressions ---------------------------------------------------------

    def expr(self) -> ast.Expr:
        e = self.binary(0)
        return e

    def binary(self, level: int) -> ast.Expr:
        if level == len(_PRECEDENCE):
            return self.unary()
        ops = _PRECEDENCE[level]
        lhs = self.binary(level + 1)
        while self._at_binop(ops):
            op_tok = self.advance()
            op = op_tok.text
            return_bool = False
            if self.is_kw("bool"):
                if op not in _CMP:
                    raise self.error()
                self.advance()
                return_bool = True
            matching = self.vector_matching(op)
            # ``^`` is right-associative; the rest associate left.
            rhs = self.binary(level) if op == "^" else self.binary(level + 1)
            lhs = self._make_binop(op, lhs, rhs, return_bool, matching, op_tok)
        return lhs

    def _at_binop(self, ops: tuple[str, ...]) -> bool:
        t = self.tok
        if t.kind is Tok.OP:
            return t.text in ops
        return t.kind is Tok.IDENT and t.text in ops and t.text in _SET_OPS

    def vector_matching(self, op: str) -> ast.VectorMatching | None:
        if not self.is_kw("on", "ignoring"):
            return None
        on = self.advance().text == "on"
        labels = self.label_list()
        card = "one-to-one"
        include: tuple[str, ...] = ()
        if self.is_kw("group_left", "group_right"):
            if op in _SET_OPS:
                raise self.error()
            card = "many-to-one" if self.advance().text == "group_left" else "one-to-many"
            if self.is_op("("):
                include = self.label_list()
        return ast.VectorMatching(on, labels, card, include)

    def _make_binop(
        self,
        op: str,
        lhs: ast.Expr,
        rhs: ast.Expr,
        return_bool: bool,
        matching: ast.VectorMatching | None,
        tok: Token,
    ) -> ast.Expr:
        if isinstance(lhs, ast.LogSelector) or isinstance(rhs, ast.LogSelector):
            raise LogQLParseError("unexpected type for binary operation: log selector", tok.line, tok.col)
        lit_l = isinstance(lhs, ast.Literal)
        lit_r = isinstance(rhs, ast.Literal)
        if op in _SET_OPS and (lit_l or lit_r):
            raise LogQLParseError(
                f"unexpected literal for right leg of logical/set binary operation ({op})", 0, 0
            )
        if op in _CMP and lit_l and lit_r and not return_bool:
            raise LogQLParseError("comparisons between scalars must use BOOL modifier", 0, 0)
        if lit_l and lit_r:
            # Both legs literal: fold into a literal, as Loki does.
            from pitwall.logs.logql.metric import scalar_binop

            assert isinstance(lhs, ast.Literal) and isinstance(rhs, ast.Literal)
            return ast.Literal(scalar_binop(op, lhs.value, rhs.value, return_bool))
        return ast.BinOp(op, lhs, rhs, return_bool, matching)

    def unary(self) -> ast.Expr:
        if self.is_op("-", "+"):
            sign_tok = self.advance()
            operand = self.unary()
            if sign_tok.text == "+":
                return operand
            if isinstance(operand, ast.Literal):
                return ast.Literal(-operand.value)
            if isinstance(operand, ast.LogSelector):
                raise self.error(tok=sign_tok)
            return ast.BinOp("*", operand, ast.Literal(-1.0))
        return self.primary()

    def primary(self) -> ast.Expr:
        t = self.tok
        if t.kind is Tok.NUMBER:
            self.advance()
            return ast.Literal(parse_go_float(t.text))
        if self.is_op("{"):
            return self.log_expr()
        if self.is_op("("):
            self.advance()
            inner = self.expr()
            self.expect_op(")")
            return inner
        if t.kind is Tok.IDENT:
            name = t.text
            if name in RANGE_OPS:
                return self.range_agg()
            if name in VECTOR_OPS:
                return self.vector_agg()
            if name == "label_replace":
                return self.label_replace()
            if name == "vector":
                self.advance()
                self.expect_op("(")
                v = self.signed_number()
                self.expect_op(")")
                return ast.VectorExpr(v)
        raise self.error()

    def signed_number(self) -> float:
        neg = False
        if self.is_op("-", "+"):
            neg = self.advance().text == "-"
        t = self.expect_kind(Tok.NUMBER)
        v = parse_go_float(t.text)
        return -v if neg else v

    # -- log expressions -----------------------------------------------------

    def selector(self) -> tuple[Matcher, ...]:
        self.expect_op("{")
        matchers: list[Matcher] = []
        while not self.is_op("}"):
            name = self.expect_kind(Tok.IDENT)
            if not self.is_op("=", "!=", "=~", "!~"):
                raise self.error("= or != or =~ or !~")
            op = self.advance().text
            val = self.expect_kind(Tok.STRING)
            matchers.append(self.make_matcher(op, name.text, val))
            if self.is_op(","):
                self.advance()
            elif not self.is_op("}"):
                raise self.error(", or }")
        close = self.advance()
        if not matchers:
            raise self.error("IDENTIFIER", tok=close)
        if all(m.matches_empty() for m in matchers):
            raise LogQLParseError(_EMPTY_SELECTOR_MSG)
        return tuple(matchers)

    def make_matcher(self, op: str, name: str, val: Token) -> Matcher:
        try:
            return Matcher.of(MatchType(op), name, val.value)
        except ValueError as e:
            raise LogQLParseError(str(e), val.line, val.col) from None

    def log_expr(self) -> ast.LogSelector:
        matchers = self.selector()
        stages, _ = self.pipeline(allow_unwrap=False)
        return ast.LogSelector(matchers, tuple(stages))

    def pipeline(self, *, allow_unwrap: bool) -> tuple[list[ast.Stage], ast.Unwrap | None]:
        """Stages after a selector, and an ``| unwrap`` (with its trailing label filters)."""
        stages: list[ast.Stage] = []
        unwrap: ast.Unwrap | None = None
        while True:
            if self.is_op("|=", "!=", "|~", "!~", "|>", "!>"):
                if unwrap is not None:
                    raise self.error()
                stages.append(self.ip_line_filter() if self._is_ip_call(1) else self.line_filter())
                continue
            if not self.is_op("|"):
                break
            if unwrap is not None:
                self.advance()
                unwrap = ast.Unwrap(
                    unwrap.label, unwrap.conversion, (*unwrap.post_filters, self.label_filter())
                )
                continue
            if self.peek().kind is Tok.IDENT and self.peek().text == "unwrap":
                if not allow_unwrap:
                    raise self.error(tok=self.peek())
                self.advance()
                self.advance()
                unwrap = self.unwrap_spec()
                continue
            self.advance()
            stages.append(self.stage())
        return stages, unwrap

    def _is_ip_call(self, k: int) -> bool:
        t = self.peek(k) if k else self.tok
        return t.kind is Tok.IDENT and t.text == "ip" and self.peek(k + 1).kind is Tok.OP and \
            self.peek(k + 1).text == "("

    def ip_arg(self) -> str:
        """``ip("pattern")``, the pattern checked."""
        self.advance()
        self.expect_op("(")
        s = self.expect_kind(Tok.STRING)
        self.expect_op(")")
        try:
            compile_ip_pattern(s.value)
        except ValueError as e:
            raise LogQLParseError(str(e), s.line, s.col) from None
        return s.value

    def ip_line_filter(self) -> ast.IpLineFilter:
        op = self.advance()
        if op.text not in ("|=", "!="):
            raise self.error("STRING", tok=self.tok)  # Loki: ip() only with |= and !=
        return ast.IpLineFilter(op.text, self.ip_arg())

    def line_filter(self) -> ast.LineFilterExpr:
        op = self.advance().text
        patterns = [self.line_filter_value(op)]
        while self.is_kw("or"):
            self.advance()
            patterns.append(self.line_filter_value(op))
        return ast.LineFilterExpr(op, tuple(patterns))

    def line_filter_value(self, op: str) -> str:
        t = self.expect_kind(Tok.STRING)
        if op in ("|~", "!~"):
            try:
                regex.compile(t.value)
            except regex.RegexError as e:
                raise LogQLParseError(str(e), t.line, t.col) from None
        return t.value

    def stage(self) -> ast.Stage:
        t = self.tok
        if t.kind is Tok.IDENT and t.text in _STAGE_WORDS and not self._is_label_filter_start():
            name = t.text
            if name == "json":
                self.advance()
                return ast.JsonParser(tuple(self.extraction_params(json=True)))
            if name == "logfmt":
                self.advance()
                return self.logfmt()
            if name in ("regexp", "pattern"):
                self.advance()
                s = self.expect_kind(Tok.STRING)
                return self.regexp_or_pattern(name, s)
            if name == "unpack":
                self.advance()
                return ast.UnpackParser()
            if name == "decolorize":
                self.advance()
                return ast.Decolorize()
            if name == "distinct":
                self.advance()
                names = [self.expect_kind(Tok.IDENT).text]
                while self.is_op(","):
                    self.advance()
                    names.append(self.expect_kind(Tok.IDENT).text)
                return ast.Distinct(tuple(names))
            if name == "line_format":
                self.advance()
                s = self.expect_kind(Tok.STRING)
                _check_template(s)
                return ast.LineFormat(s.value)
            if name == "label_format":
                self.advance()
                return self.label_format()
            if name in ("drop", "keep"):
                self.advance()
                items = self.drop_keep_items()
                return ast.DropLabels(items) if name == "drop" else ast.KeepLabels(items)
        return self.label_filter()

    def _is_label_filter_start(self) -> bool:
        nxt = self.peek()
        return nxt.kind is Tok.OP and nxt.text in ("=", "!=", "=~", "!~", "==", ">", ">=", "<", "<=")

    def extraction_params(self, *, json: bool) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = []
        while self.tok.kind is Tok.IDENT and self.tok.text not in _RESERVED:
            name = self.advance()
            expr = name.text
            if self.is_op("="):
                self.advance()
                expr = self.expect_kind(Tok.STRING).value
            if json:
                _check_json_path(expr, name)
            params.append((name.text, expr))
            if self.is_op(","):
                self.advance()
                if self.tok.kind is not Tok.IDENT:
                    raise self.error("IDENTIFIER")
            else:
                break
        return params

    def logfmt(self) -> ast.LogfmtParser:
        strict = keep_empty = False
        while self.tok.kind is Tok.FLAG:
            flag = self.advance()
            if flag.text == "--strict":
                strict = True
            elif flag.text == "--keep-empty":
                keep_empty = True
            else:
                raise self.error(tok=flag)
        params = self.extraction_params(json=False)
        return ast.LogfmtParser(tuple(params), strict, keep_empty)

    def regexp_or_pattern(self, name: str, s: Token) -> ast.Stage:
        if name == "regexp":
            try:
                rx = regex.compile(s.value)
            except regex.RegexError as e:
                raise LogQLParseError(str(e), s.line, s.col) from None
            if not rx.groupindex:
                raise LogQLParseError("at least one named capture must be supplied", s.line, s.col)
            return ast.RegexpParser(s.value)
        from pitwall.logs.logql.pipeline import compile_pattern

        try:
            compile_pattern(s.value)
        except ValueError as e:
            raise LogQLParseError(str(e), s.line, s.col) from None
        return ast.PatternParser(s.value)

    def label_format(self) -> ast.LabelFormat:
        items: list[tuple[str, str, bool]] = []
        seen: set[str] = set()
        while True:
            dst = self.expect_kind(Tok.IDENT)
            self.expect_op("=")
            if self.tok.kind is Tok.IDENT:
                items.append((dst.text, self.advance().text, True))
            else:
                s = self.expect_kind(Tok.STRING)
                _check_template(s)
                items.append((dst.text, s.value, False))
            if dst.text == "__error__":
                raise LogQLParseError(f"{dst.text} cannot be formatted", dst.line, dst.col)
            if dst.text in seen:
                raise LogQLParseError(
                    f"multiple label name '{dst.text}' not allowed in a single format operation",
                    dst.line,
                    dst.col,
                )
            seen.add(dst.text)
            if not self.is_op(","):
                break
            self.advance()
        return ast.LabelFormat(tuple(items))

    def drop_keep_items(self) -> tuple[tuple[str, Matcher | None], ...]:
        items: list[tuple[str, Matcher | None]] = []
        while True:
            name = self.expect_kind(Tok.IDENT)
            matcher: Matcher | None = None
            if self.is_op("=", "!=", "=~", "!~"):
                op = self.advance().text
                val = self.expect_kind(Tok.STRING)
                matcher = self.make_matcher(op, name.text, val)
            items.append((name.text, matcher))
            if not self.is_op(","):
                break
            self.advance()
        return tuple(items)

    # -- label filters -------------------------------------------------------

    def label_filter(self) -> ast.LabelFilter:
        left = self.label_filter_and()
        while self.is_kw("or"):
            self.advance()
            right = self.label_filter_and()
            left = ast.BinaryLabelFilter(left, right, and_=False)
        return left

    def label_filter_and(self) -> ast.LabelFilter:
        left = self.label_filter_atom()
        while True:
            if self.is_kw("and") or self.is_op(","):
                self.advance()
            elif not (self.tok.kind is Tok.IDENT and self._is_label_filter_start()) and not self.is_op("("):
                break
            right = self.label_filter_atom()
            left = ast.BinaryLabelFilter(left, right, and_=True)
        return left

    def label_filter_atom(self) -> ast.LabelFilter:
        if self.is_op("("):
            self.advance()
            inner = self.label_filter()
            self.expect_op(")")
            return inner
        name = self.expect_kind(Tok.IDENT)
        if not self.is_op("=", "!=", "=~", "!~", "==", ">", ">=", "<", "<="):
            raise self.error("!= or !~ or < or <= or = or == or =~ or > or >=")
        op = self.advance().text
        val = self.tok
        if op in ("=", "!=") and self._is_ip_call(0):
            return ast.IpLabelFilter(name.text, op, self.ip_arg())
        if val.kind is Tok.STRING and op in ("=", "!=", "=~", "!~", "=="):
            self.advance()
            return ast.StringLabelFilter(self.make_matcher("=" if op == "==" else op, name.text, val))
        neg = False
        if self.is_op("-"):
            self.advance()
            neg = True
            val = self.tok
        if op in ("=~", "!~"):
            raise self.error("STRING", tok=val)
        num_op = "==" if op == "=" else op
        if val.kind is Tok.NUMBER:
            self.advance()
            v = parse_go_float(val.text)
            return ast.NumericLabelFilter(name.text, num_op, -v if neg else v)
        if val.kind is Tok.DURATION:
            self.advance()
            d = parse_duration_ns(val.text)
            return ast.DurationLabelFilter(name.text, num_op, -d if neg else d)
        if val.kind is Tok.BYTES and not neg:
            self.advance()
            return ast.BytesLabelFilter(name.text, num_op, parse_bytes(val.text))
        raise self.error("STRING or NUMBER or DURATION or BYTES", tok=val)

    # -- metric expressions ----------------------------------------------------

    def unwrap_spec(self) -> ast.Unwrap:
        t = self.expect_kind(Tok.IDENT)
        if t.text in ("duration", "duration_seconds", "bytes") and self.is_op("("):
            self.advance()
            label = self.expect_kind(Tok.IDENT).text
            self.expect_op(")")
            return ast.Unwrap(label, t.text)
        return ast.Unwrap(t.text)

    def log_range(self) -> ast.LogRange:
        parens = 0
        while self.is_op("("):
            self.advance()
            parens += 1
        matchers = self.selector()
        range_ns: int | None = None
        if self.is_op("["):
            range_ns = self.range_literal()
        stages, unwrap = self.pipeline(allow_unwrap=True)
        while parens and self.is_op(")"):
            self.advance()
            parens -= 1
        if range_ns is None:
            if not self.is_op("["):
                raise self.error("[")
            range_ns = self.range_literal()
        while parens and self.is_op(")"):
            self.advance()
            parens -= 1
        offset = 0
        if self.is_kw("offset"):
            self.advance()
            offset = parse_duration_ns(self.expect_kind(Tok.DURATION).text)
        if parens:
            self.expect_op(")")
        return ast.LogRange(ast.LogSelector(matchers, tuple(stages)), range_ns, offset, unwrap)

    def range_literal(self) -> int:
        self.expect_op("[")
        t = self.tok
        if t.kind is not Tok.DURATION:
            raise self.error("DURATION")
        self.advance()
        self.expect_op("]")
        ns = parse_duration_ns(t.text)
        if ns <= 0:
            raise LogQLParseError("invalid range duration", t.line, t.col)
        return ns

    def grouping(self) -> ast.Grouping:
        without = self.advance().text == "without"
        return ast.Grouping(self.label_list(), without)

    def label_list(self) -> tuple[str, ...]:
        self.expect_op("(")
        labels: list[str] = []
        while not self.is_op(")"):
            labels.append(self.expect_kind(Tok.IDENT).text)
            if self.is_op(","):
                self.advance()
            elif not self.is_op(")"):
                raise self.error(", or )")
        self.advance()
        return tuple(labels)

    def range_agg(self) -> ast.RangeAgg:
        op_tok = self.advance()
        op = op_tok.text
        self.expect_op("(")
        param: float | None = None
        if op == "quantile_over_time":
            param = self.signed_number()
            self.expect_op(",")
        rng = self.log_range()
        self.expect_op(")")
        grouping = self.grouping() if self.is_kw("by", "without") else None
        self.validate_range_agg(op, rng, grouping)
        return ast.RangeAgg(op, rng, param, grouping)

    def validate_range_agg(self, op: str, rng: ast.LogRange, grouping: ast.Grouping | None) -> None:
        if op in _UNWRAP_REQUIRED and rng.unwrap is None:
            raise LogQLParseError(f"invalid aggregation {op} without unwrap")
        if op in _UNWRAP_FORBIDDEN and rng.unwrap is not None:
            raise LogQLParseError(f"invalid aggregation {op} with unwrap")
        if grouping is not None and op not in _GROUPING_ALLOWED:
            raise LogQLParseError(f"grouping not allowed for {op} aggregation")

    def vector_agg(self) -> ast.VectorAgg:
        op = self.advance().text
        grouping = self.grouping() if self.is_kw("by", "without") else None
        self.expect_op("(")
        param: int | None = None
        if op in ("topk", "bottomk"):
            t = self.tok
            num = self.signed_number()
            if num != int(num):
                raise LogQLParseError(f"invalid parameter for operation {op}: {t.text}", t.line, t.col)
            param = int(num)
            self.expect_op(",")
        inner = self.expr()
        self.expect_op(")")
        if grouping is None and self.is_kw("by", "without"):
            grouping = self.grouping()
        if isinstance(inner, ast.LogSelector):
            raise LogQLParseError(f"invalid aggregation {op} of a log selector")
        if op in ("sort", "sort_desc") and grouping is not None:
            raise LogQLParseError(f"grouping not allowed for {op} aggregation")
        return ast.VectorAgg(op, inner, grouping, param)

    def label_replace(self) -> ast.LabelReplace:
        self.advance()
        self.expect_op("(")
        inner = self.expr()
        if isinstance(inner, ast.LogSelector):
            raise self.error()
        args: list[Token] = []
        for _ in range(4):
            self.expect_op(",")
            args.append(self.expect_kind(Tok.STRING))
        self.expect_op(")")
        try:
            regex.compile(args[3].value, anchored=True, dot_nl=True)
        except regex.RegexError as e:
            raise LogQLParseError(f"invalid regex in label_replace: {e}", args[3].line, args[3].col) from None
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", args[0].value):
            raise LogQLParseError(f"invalid destination label name in label_replace: {args[0].value}")
        return ast.LabelReplace(inner, args[0].value, args[1].value, args[2].value, args[3].value)


def _check_template(tok: Token) -> None:
    from pitwall.logs.logql.templates import TemplateError, compile_template

    try:
        compile_template(tok.value)
    except TemplateError as e:
        raise LogQLParseError(f"invalid template: {e}", tok.line, tok.col) from None


def _check_json_path(expr: str, tok: Token) -> None:
    from pitwall.logs.logql.pipeline import parse_json_path

    try:
        parse_json_path(expr)
    except ValueError as e:
        raise LogQLParseError(f"invalid json expression {expr!r}: {e}", tok.line, tok.col) from None
