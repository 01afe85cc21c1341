"""GitLab CI's ``rules:if`` / ``only:variables`` expressions.

Grammar (as GitLab's ``Gitlab::Ci::Pipeline::Expression``): operands are ``$VARIABLE``, ``"string"`` or
``'string'``, ``/pattern/flags`` and ``null``; operators ``==``, ``!=``, ``=~``, ``!~``, ``&&`` (binds tighter)
and ``||``; parentheses group. A bare variable is true when it is set and not empty. Patterns are RE2
(``core.regex``), searched anywhere in the value, as GitLab's untrusted-regexp matching does; a variable on the
right of ``=~`` is used as the pattern.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from pitwall.core.regex import RegexError
from pitwall.core.regex import compile as compile_regex

__all__ = ["ExprError", "Expression", "parse_expression"]

MAX_EXPR_CHARS = 4096


class ExprError(Exception):
    """An expression that does not parse."""


@dataclass(frozen=True)
class _Var:
    name: str


@dataclass(frozen=True)
class _Str:
    value: str


@dataclass(frozen=True)
class _Pattern:
    source: str
    flags: str


@dataclass(frozen=True)
class _Null:
    pass


@dataclass(frozen=True)
class _Bin:
    op: str
    left: _Node
    right: _Node


_Node = Union[_Var, _Str, _Pattern, _Null, _Bin]  # noqa: UP007 - a runtime alias
_Value = str | None | bool

_OPS = ("==", "!=", "=~", "!~", "&&", "||")


def _tokens(text: str) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()":
            out.append((c, c))
            i += 1
        elif text.startswith(_OPS, i):
            out.append(("op", text[i:i + 2]))
            i += 2
        elif c == "$":
            j = i + 1
            if j < n and text[j] == "{":  # ${VAR} is accepted by GitLab's lexer too
                k = text.find("}", j)
                if k < 0:
                    raise ExprError(f"unterminated ${{ at {i}")
                name, i = text[j + 1:k], k + 1
            else:
                while j < n and (text[j].isalnum() or text[j] == "_"):
                    j += 1
                name, i = text[i + 1:j], j
            if not name:
                raise ExprError(f"invalid variable at {i}")
            out.append(("operand", _Var(name)))
        elif c in "\"'":
            k = text.find(c, i + 1)
            if k < 0:
                raise ExprError(f"unterminated string at {i}")
            out.append(("operand", _Str(text[i + 1:k])))
            i = k + 1
        elif c == "/":
            i = _pattern(text, i, out)
        elif text.startswith("null", i):
            out.append(("operand", _Null()))
            i += 4
        else:
            raise ExprError(f"unknown token at {i}: {text[i:i + 10]!r}")
    return out


def _pattern(text: str, i: int, out: list[tuple[str, object]]) -> int:
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text[j] == "/":
            break
        j += 1
    else:
        raise ExprError(f"unterminated pattern at {i}")
    k = j + 1
    while k < len(text) and text[k] in "imsx":
        k += 1
    pat = _Pattern(text[i + 1:j].replace("\\/", "/"), text[j + 1:k])
    _compile(pat)  # a bad pattern is a lint error, not a false at run time
    out.append(("operand", pat))
    return k


def _compile(p: _Pattern) -> object:
    flags = "".join(f for f in p.flags if f in "ims")
    try:
        return compile_regex(f"(?{flags}){p.source}" if flags else p.source)
    except RegexError as e:
        raise ExprError(f"invalid pattern /{p.source}/: {e}") from None


class _Parser:
    def __init__(self, toks: list[tuple[str, object]]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self) -> tuple[str, object] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, object]:
        t = self.peek()
        if t is None:
            raise ExprError("unexpected end of expression")
        self.i += 1
        return t

    def parse_or(self) -> _Node:
        left = self.parse_and()
        while (t := self.peek()) is not None and t == ("op", "||"):
            self.i += 1
            left = _Bin("||", left, self.parse_and())
        return left

    def parse_and(self) -> _Node:
        left = self.parse_cmp()
        while (t := self.peek()) is not None and t == ("op", "&&"):
            self.i += 1
            left = _Bin("&&", left, self.parse_cmp())
        return left

    def parse_cmp(self) -> _Node:
        left = self.parse_atom()
        t = self.peek()
        if t is not None and t[0] == "op" and t[1] in ("==", "!=", "=~", "!~"):
            self.i += 1
            return _Bin(str(t[1]), left, self.parse_atom())
        return left

    def parse_atom(self) -> _Node:
        kind, val = self.take()
        if kind == "(":
            node = self.parse_or()
            if self.take()[0] != ")":
                raise ExprError("missing )")
            return node
        if kind == "operand":
            return val  # type: ignore[return-value]
        raise ExprError(f"unexpected {val!r}")


@dataclass(frozen=True)
class Expression:
    """A parsed expression; ``evaluate`` against a variable mapping."""

    source: str
    root: _Node

    def evaluate(self, variables: dict[str, str]) -> bool:
        return _truthy(_eval(self.root, variables))


def _eval(node: _Node, env: dict[str, str]) -> _Value:
    if isinstance(node, _Var):
        return env.get(node.name)
    if isinstance(node, _Str):
        return node.value
    if isinstance(node, _Null):
        return None
    if isinstance(node, _Pattern):
        return f"/{node.source}/{node.flags}"
    if node.op == "&&":
        return _truthy(_eval(node.left, env)) and _truthy(_eval(node.right, env))
    if node.op == "||":
        return _truthy(_eval(node.left, env)) or _truthy(_eval(node.right, env))
    left = _eval(node.left, env)
    if node.op in ("==", "!="):
        right = _eval(node.right, env)
        return (left == right) == (node.op == "==")
    return _matches(left, node.right, env) == (node.op == "=~")


def _matches(left: _Value, right: _Node, env: dict[str, str]) -> bool:
    if not isinstance(left, str):
        return False
    if isinstance(right, _Pattern):
        pat = right
    else:
        value = _eval(right, env)
        if not isinstance(value, str):
            return False
        pat = _as_pattern(value)
    try:
        return _compile(pat).search(left) is not None  # type: ignore[attr-defined]
    except ExprError:
        return False  # a variable holding a bad pattern matches nothing, as GitLab's does


def _as_pattern(value: str) -> _Pattern:
    if len(value) >= 2 and value.startswith("/"):
        end = value.rfind("/")
        if end > 0 and all(f in "imsx" for f in value[end + 1:]):
            return _Pattern(value[1:end], value[end + 1:])
    return _Pattern(value, "")


def _truthy(v: _Value) -> bool:
    return bool(v)


def parse_expression(text: str) -> Expression:
    """Parse ``text``; raises ``ExprError`` naming what is wrong."""
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"expression longer than {MAX_EXPR_CHARS} characters")
    toks = _tokens(text)
    if not toks:
        raise ExprError("empty expression")
    p = _Parser(toks)
    root = p.parse_or()
    if p.peek() is not None:
        raise ExprError(f"unexpected {p.peek()[1]!r}")  # type: ignore[index]
    return Expression(text, root)
