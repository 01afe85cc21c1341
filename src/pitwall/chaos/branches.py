"""The boolean expressions of a Workflow Task's ``conditionalBranches`` (expr-lang's syntax, the subset used).

Chaos Mesh evaluates them with ``expr.EvalBool`` over ``{"exitCode": int,
"stdout": str}``. This is that language's comparison core: number, string
(``"..."`` or ``'...'``) and bool literals, the environment's names, ``==``
``!=`` ``<`` ``<=`` ``>`` ``>=``, ``&&``/``and``, ``||``/``or``,
``!``/``not``, ``contains``, ``startsWith``, ``endsWith``, ``matches``
(RE2) and parentheses. Anything else is an error, which Chaos Mesh records
as the branch's ``Unknown`` result.
"""

from __future__ import annotations

import re
from typing import Any

from pitwall.core import regex as user_regex

__all__ = ["ExprError", "eval_bool"]

MAX_EXPR_LEN = 2048

_TOKEN = re.compile(r"""\s*(?:
    (?P<num>\d+(?:\.\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
)""", re.VERBOSE)
_WORD_OPS = {"and": "&&", "or": "||", "not": "!"}
_BINARY = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 4, "<=": 4, ">": 4, ">=": 4, "contains": 4,
           "startsWith": 4, "endsWith": 4, "matches": 4}


class ExprError(ValueError):
    """The expression does not parse, names an unknown variable or compares values of different types."""


def eval_bool(text: str, env: dict[str, Any]) -> bool:
    """``text`` evaluated over ``env``; it must give a bool (as ``expr.EvalBool`` requires)."""
    if len(text) > MAX_EXPR_LEN:
        raise ExprError(f"expression longer than {MAX_EXPR_LEN} characters")
    p = _Parser(_tokens(text), env)
    value = p.expr(0)
    if p.i != len(p.toks):
        raise ExprError(f"unexpected token {p.toks[p.i][1]!r}")
    if not isinstance(value, bool):
        raise ExprError(f"expected bool, but got {type(value).__name__}")
    return value


def _tokens(text: str) -> list[tuple[str, str]]:
    out, i = [], 0
    while i < len(text):
        if text[i:].strip() == "":
            break
        m = _TOKEN.match(text, i)
        if m is None or m.end() == i:
            raise ExprError(f"unexpected character {text[i:].lstrip()[:1]!r}")
        kind = m.lastgroup or ""
        tok = m.group(kind)
        if kind == "name" and tok in _WORD_OPS:
            kind, tok = "op", _WORD_OPS[tok]
        elif kind == "name" and tok in _BINARY:
            kind = "op"
        out.append((kind, tok))
        i = m.end()
    return out


class _Parser:
    def __init__(self, toks: list[tuple[str, str]], env: dict[str, Any]) -> None:
        self.toks, self.i, self.env = toks, 0, env

    def expr(self, min_prec: int) -> Any:
        left = self.unary()
        while self.i < len(self.toks) and self.toks[self.i][0] == "op" and _BINARY.get(self.toks[self.i][1], 0) > min_prec:
            op = self.toks[self.i][1]
            self.i += 1
            if op in ("&&", "||"):  # short-circuit as expr does
                right = self.expr(_BINARY[op])
                left = (_truth(left) and _truth(right)) if op == "&&" else (_truth(left) or _truth(right))
            else:
                left = _apply(op, left, self.expr(_BINARY[op]))
        return left

    def unary(self) -> Any:
        if self.i >= len(self.toks):
            raise ExprError("unexpected end of expression")
        kind, tok = self.toks[self.i]
        self.i += 1
        if kind == "op" and tok == "!":
            return not _truth(self.unary())
        if kind == "op" and tok == "(":
            value = self.expr(0)
            if self.i >= len(self.toks) or self.toks[self.i][1] != ")":
                raise ExprError("missing closing parenthesis")
            self.i += 1
            return value
        if kind == "num":
            return float(tok) if "." in tok else int(tok)
        if kind == "str":
            return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), tok[1:-1])
        if kind == "name":
            if tok in ("true", "false"):
                return tok == "true"
            if tok not in self.env:
                raise ExprError(f"unknown name {tok}")
            return self.env[tok]
        raise ExprError(f"unexpected token {tok!r}")


def _truth(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ExprError(f"invalid operation: non-bool {v!r} used as condition")
    return v


def _apply(op: str, a: Any, b: Any) -> bool:
    if op in ("==", "!="):
        same = a == b and (isinstance(a, str) == isinstance(b, str))
        return same if op == "==" else not same
    if op in ("contains", "startsWith", "endsWith", "matches"):
        if not (isinstance(a, str) and isinstance(b, str)):
            raise ExprError(f"invalid operation: {op} on {type(a).__name__} and {type(b).__name__}")
        if op == "matches":
            try:
                return user_regex.compile(b).matches(a)
            except user_regex.RegexError as e:
                raise ExprError(str(e)) from None
        return b in a if op == "contains" else a.startswith(b) if op == "startsWith" else a.endswith(b)
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    if not numbers and not (isinstance(a, str) and isinstance(b, str)):
        raise ExprError(f"invalid operation: {op} on {type(a).__name__} and {type(b).__name__}")
    return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])
