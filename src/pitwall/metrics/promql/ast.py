"""Parsing: promql-parser's AST converted into small frozen nodes with positions.

promql-parser gives no source positions, and its Python wrappers are rebuilt on
every attribute access, so the tree is converted once into our own nodes.
Positions (needed for annotations, ``PromQL warning: ... (line:col)``) are
recovered from the source text by scanning forward in source order: each node
searches for its own leading token after the previous node's. That is exact for
ordinary queries; a label name or string equal to a later metric name can fool
it, which only moves an annotation's column.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import promql_parser as pp

from pitwall.core.labels import Matcher, MatchType
from pitwall.metrics.promql.errors import PromQLParseError, parse_error

Pos = tuple[int, int]


@dataclass(frozen=True)
class At:
    """An ``@`` modifier: ``kind`` is "abs" (with ``ms``), "start" or "end"."""

    kind: str
    ms: int = 0


@dataclass(frozen=True)
class Node:
    pos: Pos = field(default=(1, 1), kw_only=True)


@dataclass(frozen=True)
class NumberLit(Node):
    value: float


@dataclass(frozen=True)
class StringLit(Node):
    value: str


@dataclass(frozen=True)
class Selector(Node):
    name: str
    matchers: tuple[Matcher, ...]
    or_matchers: tuple[tuple[Matcher, ...], ...]
    offset_ms: int
    at: At | None
    text: str  # canonical text, for error messages


@dataclass(frozen=True)
class MatrixSel(Node):
    sel: Selector
    range_ms: int


@dataclass(frozen=True)
class Subquery(Node):
    expr: Node
    range_ms: int
    step_ms: int | None
    offset_ms: int
    at: At | None


@dataclass(frozen=True)
class Aggregate(Node):
    op: str
    expr: Node
    param: Node | None
    grouping: tuple[str, ...]
    without: bool


@dataclass(frozen=True)
class Binary(Node):
    op: str
    lhs: Node
    rhs: Node
    return_bool: bool
    card: str  # one-to-one, many-to-one, one-to-many, many-to-many
    on: bool | None  # None: no on/ignoring clause
    matching: tuple[str, ...]
    include: tuple[str, ...]
    fill_lhs: float | None = None
    fill_rhs: float | None = None


@dataclass(frozen=True)
class Unary(Node):
    expr: Node


@dataclass(frozen=True)
class Paren(Node):
    expr: Node


@dataclass(frozen=True)
class Call(Node):
    func: str
    args: tuple[Node, ...]


# promql-parser's enums are not hashable; compare them in order instead.
_OPS = [
    (pp.MatchOp.Equal, MatchType.EQUAL),
    (pp.MatchOp.NotEqual, MatchType.NOT_EQUAL),
    (pp.MatchOp.Re, MatchType.REGEX),
    (pp.MatchOp.NotRe, MatchType.NOT_REGEX),
]
_CARD = [
    (pp.VectorMatchCardinality.OneToOne, "one-to-one"),
    (pp.VectorMatchCardinality.ManyToOne, "many-to-one"),
    (pp.VectorMatchCardinality.OneToMany, "one-to-many"),
    (pp.VectorMatchCardinality.ManyToMany, "many-to-many"),
]


def _lookup(table: list[tuple[Any, Any]], key: Any) -> Any:
    for k, v in table:
        if k == key:
            return v
    raise PromQLParseError(f"parse error: unexpected enum value {key}")


_EXTRA_FUNCTIONS_REGISTERED = False


def _register_extra_functions() -> None:
    """holt_winters was renamed in Prometheus 3; accept the old name too."""
    global _EXTRA_FUNCTIONS_REGISTERED
    if _EXTRA_FUNCTIONS_REGISTERED:
        return
    vt = pp.ValueType
    # ValueError: already registered (e.g. by another importer in this process).
    with contextlib.suppress(ValueError):
        pp.register_extra_functions(
            [pp.Function("holt_winters", [vt.Matrix, vt.Scalar, vt.Scalar], vt.Vector)]
        )
    _EXTRA_FUNCTIONS_REGISTERED = True


def _ms(d: timedelta | None) -> int:
    if d is None:
        return 0
    return (d.days * 86_400_000) + d.seconds * 1000 + d.microseconds // 1000


class _Scanner:
    """Finds each node's leading token in the source, moving forward only."""

    _WORD = re.compile(r"[A-Za-z0-9_:]")

    def __init__(self, text: str) -> None:
        self.text = text
        self.cursor = 0
        # Mask out string contents so names inside quotes are never matched.
        masked = list(text)
        for m in re.finditer(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', text):
            for i in range(m.start() + 1, m.end() - 1):
                masked[i] = " "
        self.masked = "".join(masked)

    def pos_of(self, offset: int) -> Pos:
        line = self.text.count("\n", 0, offset) + 1
        col = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        return (line, col)

    def here(self) -> Pos:
        i = self.cursor
        while i < len(self.text) and self.text[i].isspace():
            i += 1
        return self.pos_of(i)

    def literal(self) -> Pos:
        """Position of the next literal (skipping call punctuation); moves past it."""
        m = re.compile(r"[\s(,]*").match(self.masked, self.cursor)
        i = m.end() if m else self.cursor
        tok = re.compile(r"\"[^\"]*\"|'[^']*'|`[^`]*`|[-+]?[0-9A-Za-z_.]+(?:[eE][-+]?\d+)?").match(
            self.masked, i
        )
        self.cursor = tok.end() if tok else i
        return self.pos_of(i)

    def find_word(self, word: str, advance: bool = True) -> Pos:
        start = self.cursor
        while True:
            i = self.masked.find(word, start)
            if i < 0:
                return self.here()
            before = self.masked[i - 1] if i > 0 else " "
            after = self.masked[i + len(word)] if i + len(word) < len(self.masked) else " "
            if not self._WORD.match(before) and not self._WORD.match(after):
                if advance:
                    self.cursor = i + len(word)
                return self.pos_of(i)
            start = i + 1

    def find_char(self, ch: str) -> Pos:
        i = self.masked.find(ch, self.cursor)
        if i < 0:
            return self.here()
        self.cursor = i + 1
        return self.pos_of(i)

    def skip_braces(self) -> None:
        """After a metric name, step past its ``{...}`` so label values are not searched."""
        i = self.cursor
        while i < len(self.masked) and self.masked[i].isspace():
            i += 1
        if i < len(self.masked) and self.masked[i] == "{":
            j = self.masked.find("}", i)
            if j >= 0:
                self.cursor = j + 1

    def skip_grouping(self) -> None:
        m = re.compile(r"\s*(by|without)\s*\(([^)]*)\)").match(self.masked, self.cursor)
        if m:
            self.cursor = m.end()


class _Converter:
    def __init__(self, text: str) -> None:
        self.scan = _Scanner(text)

    def convert(self, e: Any) -> Node:
        if isinstance(e, pp.NumberLiteral):
            return NumberLit(float(e.val), pos=self.scan.literal())
        if isinstance(e, pp.StringLiteral):
            return StringLit(str(e.val), pos=self.scan.literal())
        if isinstance(e, pp.VectorSelector):
            return self.selector(e)
        if isinstance(e, pp.MatrixSelector):
            sel = self.selector(e.vector_selector)
            return MatrixSel(sel, _ms(e.range), pos=sel.pos)
        if isinstance(e, pp.ParenExpr):
            pos = self.scan.find_char("(")
            return Paren(self.convert(e.expr), pos=pos)
        if isinstance(e, pp.UnaryExpr):
            pos = self.scan.find_char("-")
            return Unary(self.convert(e.expr), pos=pos)
        if isinstance(e, pp.SubqueryExpr):
            inner = self.convert(e.expr)
            return Subquery(
                inner,
                _ms(e.range),
                _ms(e.step) if e.step is not None else None,
                _ms(e.offset),
                self.at(e.at),
                pos=inner.pos,
            )
        if isinstance(e, pp.Call):
            return self.call(e)
        if isinstance(e, pp.AggregateExpr):
            return self.aggregate(e)
        if isinstance(e, pp.BinaryExpr):
            return self.binary(e)
        raise PromQLParseError(f"unsupported expression type {type(e).__name__}")

    def at(self, a: Any) -> At | None:
        if a is None:
            return None
        if a.type == pp.AtModifierType.Start:
            return At("start")
        if a.type == pp.AtModifierType.End:
            return At("end")
        try:
            dt = a.at
        except OverflowError as ex:
            raise PromQLParseError("parse error: timestamp out of bounds for @ modifier") from ex
        ms = round(dt.timestamp() * 1000)
        return At("abs", ms)

    def selector(self, e: Any) -> Selector:
        name = e.name or ""
        pos = self.scan.find_word(name) if name else self.scan.find_char("{")
        if name:
            self.scan.skip_braces()
        else:
            self.scan.cursor -= 1
            self.scan.skip_braces()
        ms = tuple(self.matcher(m) for m in e.matchers.matchers if str(m.name) != _INFO_PLACEHOLDER)
        ors = tuple(tuple(self.matcher(m) for m in grp) for grp in e.matchers.or_matchers)
        if name:
            ms = (Matcher.of(MatchType.EQUAL, "__name__", name), *ms)
            ors = tuple((Matcher.of(MatchType.EQUAL, "__name__", name), *g) for g in ors)
        return Selector(name, ms, ors, _ms(e.offset), self.at(e.at), str(e), pos=pos)

    @staticmethod
    def matcher(m: Any) -> Matcher:
        op = _lookup(_OPS, m.op)
        value = str(m.value)
        try:
            return Matcher.of(op, str(m.name), value)
        except ValueError as ex:
            raise PromQLParseError(f"parse error: {ex}") from ex

    def call(self, e: Any) -> Call:
        name = str(e.func.name)
        pos = self.scan.find_word(name)
        args = tuple(self.convert(a) for a in e.args)
        return Call(name, args, pos=pos)

    def aggregate(self, e: Any) -> Aggregate:
        op = str(e.op)
        pos = self.scan.find_word(op)
        self.scan.skip_grouping()
        param = self.convert(e.param) if e.param is not None else None
        expr = self.convert(e.expr)
        self.scan.skip_grouping()
        grouping: tuple[str, ...] = ()
        without = False
        if e.modifier is not None:
            grouping = tuple(str(x) for x in e.modifier.labels)
            without = e.modifier.type == pp.AggModifierType.Without
        return Aggregate(op, expr, param, grouping, without, pos=pos)

    def binary(self, e: Any) -> Binary:
        lhs = self.convert(e.lhs)
        rhs = self.convert(e.rhs)
        mod = e.modifier
        op = str(e.op)
        if mod is None:
            card = "many-to-many" if op in ("and", "or", "unless") else "one-to-one"
            return Binary(op, lhs, rhs, False, card, None, (), (), pos=lhs.pos)
        on: bool | None = None
        matching: tuple[str, ...] = ()
        if mod.matching is not None:
            on = mod.matching.type == pp.LabelModifierType.Include
            matching = tuple(str(x) for x in mod.matching.labels)
        include = tuple(str(x) for x in (mod.group_labels or []))
        fill = mod.fill_values
        return Binary(
            op,
            lhs,
            rhs,
            bool(mod.return_bool),
            _lookup(_CARD, mod.card),
            on,
            matching,
            include,
            fill.lhs if fill is not None else None,
            fill.rhs if fill is not None else None,
            pos=lhs.pos,
        )


# info()'s second argument is a label selector whose matchers may all match the
# empty string (``{data=~".*"}``), which promql-parser rejects for any vector
# selector. Such an argument is parsed with this never-empty matcher added,
# which the converter then removes again.
_INFO_PLACEHOLDER = "__pitwall_info_selector__"
_EMPTY_SELECTOR = "vector selector must contain at least one non-empty matcher"


def _with_info_placeholders(text: str) -> str | None:
    """``text`` with the placeholder matcher added to each info() label selector."""
    out = text
    changed = False
    for m in reversed(list(re.finditer(r"\binfo\s*\(", text))):
        masked = _Scanner(text).masked
        depth = 0
        i = m.end()
        comma = -1
        while i < len(masked):
            ch = masked[i]
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                if depth == 0:
                    break
                depth -= 1
            elif ch == "," and depth == 0:
                comma = i
                break
            i += 1
        if comma < 0:
            continue
        open_ = masked.find("{", comma)
        close = masked.find("}", open_)
        if open_ < 0 or close < 0 or masked[comma + 1 : open_].strip() or not masked[open_ + 1 : close].strip():
            continue
        inner = out[open_ + 1 : close].rstrip().rstrip(",")
        out = f'{out[: open_ + 1]}{inner}, {_INFO_PLACEHOLDER}="1"{out[close:]}'
        changed = True
    return out if changed else None


def parse(text: str) -> Node:
    """Parse a PromQL expression; syntax errors raise PromQLParseError."""
    _register_extra_functions()
    try:
        raw = pp.parse(text)
    except (ValueError, OverflowError) as ex:
        msg = str(ex)
        retry = _with_info_placeholders(text) if _EMPTY_SELECTOR in msg else None
        if retry is None:
            raise parse_error(text, msg) from ex
        try:
            raw = pp.parse(retry)
        except (ValueError, OverflowError):
            raise parse_error(text, msg) from ex
        return _Converter(retry).convert(raw)
    return _Converter(text).convert(raw)


def parse_matchers(selector: str) -> list[Matcher]:
    """Matchers of a series selector such as ``up{job="x"}`` (for ``match[]``)."""
    node = parse(selector)
    if not isinstance(node, Selector):
        raise PromQLParseError("parse error: expected type vector selector")
    if node.or_matchers:
        raise PromQLParseError("parse error: 'or' in label matchers is not supported in match[]")
    return list(node.matchers)


def walk(node: Node) -> list[Node]:
    """All nodes of a tree, pre-order."""
    out: list[Node] = [node]
    for child in children(node):
        out.extend(walk(child))
    return out


def children(node: Node) -> list[Node]:
    if isinstance(node, MatrixSel):
        return [node.sel]
    if isinstance(node, (Subquery, Unary, Paren)):
        return [node.expr]
    if isinstance(node, Aggregate):
        return [node.param, node.expr] if node.param is not None else [node.expr]
    if isinstance(node, Binary):
        return [node.lhs, node.rhs]
    if isinstance(node, Call):
        return list(node.args)
    return []
