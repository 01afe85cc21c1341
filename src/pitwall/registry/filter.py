"""Consul's ``?filter=`` expressions (go-bexpr v0.1.2, the version Consul uses) over the JSON it answers.

Grammar: ``or``/``and``/``not`` with parentheses; matches ``Sel == V``,
``Sel != V``, ``Sel contains V``, ``Sel not contains V``, ``V in Sel``,
``V not in Sel``, ``Sel matches "re"``, ``Sel not matches "re"``, ``Sel is
empty``, ``Sel is not empty``. A selector is dotted names (``Service.Meta.env``)
or ``Meta["key with dots"]``; a value is a number, a ``"quoted"`` or
```raw``` string, or a bare word (``passing``). As in bexpr v0.1.2:

- a selector passing through a list (``Checks.Status``) matches when *any*
  element does, the operator (negated ones too) applied per element;
- a missing map key makes ``==``, ``in`` and ``is not empty`` false and their
  negations true; an unknown field of an object is an error;
- the value is read as the selected field's type (``Port == 8080``,
  ``EnableTagOverride == true``); regular expressions are RE2, as Go's.

Errors are :class:`FilterError`, whose text Consul's HTTP API answers with 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pitwall.core import regex as user_regex

__all__ = ["MAP_FIELDS", "Filter", "FilterError", "parse_filter"]

MAX_FILTER_LEN = 4096

# Fields that are maps in Consul's Go types (a missing key is an answer, not an error); every other object
# in an answer is a struct whose fields are fixed.
MAP_FIELDS = frozenset({"Meta", "NodeMeta", "ServiceMeta", "TaggedAddresses", "ServiceTaggedAddresses", "Header"})

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<op>==|!=)
  | (?P<lp>\() | (?P<rp>\)) | (?P<lb>\[) | (?P<rb>\]) | (?P<dot>\.)
  | (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<num>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?![A-Za-z0-9_]))
  | (?P<ident>[A-Za-z][A-Za-z0-9_/]*)
""", re.VERBOSE)


class FilterError(ValueError):
    """A filter that does not parse or cannot be applied; ``str()`` is Consul's message."""

    def __init__(self, why: str) -> None:
        super().__init__(f"Failed to create boolean expression evaluator: {why}")


@dataclass(frozen=True)
class _Match:
    selector: tuple[str, ...]
    op: str  # ==, !=, in, not in, matches, not matches, empty, not empty
    value: str | None
    regex: Any = None

    def __call__(self, datum: Any) -> bool:
        return _eval(self, datum, 0)


@dataclass(frozen=True)
class _Bool:
    op: str  # and, or, not
    args: tuple[Callable[[Any], bool], ...]

    def __call__(self, datum: Any) -> bool:
        if self.op == "not":
            return not self.args[0](datum)
        if self.op == "and":
            return all(a(datum) for a in self.args)
        return any(a(datum) for a in self.args)


class Filter:
    """A parsed expression; :meth:`apply` keeps the items it is true for."""

    def __init__(self, expr: Callable[[Any], bool]) -> None:
        self._expr = expr

    def matches(self, item: Any) -> bool:
        return self._expr(item)

    def apply(self, items: Iterable[Any]) -> list[Any]:
        return [i for i in items if self._expr(i)]

    def apply_map(self, items: dict[str, Any]) -> dict[str, Any]:
        """For the agent endpoints, whose answer is an object keyed by id: the filter sees the values."""
        return {k: v for k, v in items.items() if self._expr(v)}


def parse_filter(text: str) -> Filter | None:
    """The filter of ``?filter=``, or None when the parameter is empty."""
    if not text.strip():
        return None
    if len(text) > MAX_FILTER_LEN:
        raise FilterError(f"filter longer than {MAX_FILTER_LEN} characters")
    p = _Parser(_tokens(text))
    expr = p.or_expr()
    if (rest := p.peek()) is not None:
        raise FilterError(f"unexpected {rest[1]!r} at position {rest[2] + 1}")
    return Filter(expr)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, i = [], 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            raise FilterError(f"unexpected character {text[i]!r} at position {i + 1}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append((kind, m.group(), i))
        i = m.end()
    return out


class _Parser:
    def __init__(self, toks: list[tuple[str, str, int]]) -> None:
        self.toks, self.i = toks, 0

    def peek(self, k: int = 0) -> tuple[str, str, int] | None:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else None

    def word(self, k: int = 0) -> str:
        t = self.peek(k)
        return t[1] if t and t[0] == "ident" else ""

    def take(self, kind: str, text: str | None = None) -> str:
        t = self.peek()
        if t is None or t[0] != kind or (text is not None and t[1] != text):
            where = f"{t[1]!r} at position {t[2] + 1}" if t else "end of filter"
            raise FilterError(f"expected {text or kind}, found {where}")
        self.i += 1
        return t[1]

    def or_expr(self) -> Callable[[Any], bool]:
        args = [self.and_expr()]
        while self.word() == "or":
            self.i += 1
            args.append(self.and_expr())
        return args[0] if len(args) == 1 else _Bool("or", tuple(args))

    def and_expr(self) -> Callable[[Any], bool]:
        args = [self.not_expr()]
        while self.word() == "and":
            self.i += 1
            args.append(self.not_expr())
        return args[0] if len(args) == 1 else _Bool("and", tuple(args))

    def not_expr(self) -> Callable[[Any], bool]:
        if self.word() == "not":
            self.i += 1
            return _Bool("not", (self.not_expr(),))
        t = self.peek()
        if t is not None and t[0] == "lp":
            self.i += 1
            inner = self.or_expr()
            self.take("rp")
            return inner
        return self.match()

    def match(self) -> _Match:
        t = self.peek()
        if t is None:
            raise FilterError("expected a match expression, found end of filter")
        if t[0] in ("str", "num") or (t[0] == "ident" and self._value_first()):
            value = self.value()
            negate = self.word() == "not"
            if negate:
                self.i += 1
            self.take("ident", "in")
            return _Match(self.selector(), "not in" if negate else "in", value)
        sel = self.selector()
        t = self.peek()
        if t is not None and t[0] == "op":
            self.i += 1
            return _Match(sel, t[1], self.value())
        words = []
        while self.word() in ("not", "is", "contains", "matches", "empty"):
            words.append(self.word())
            self.i += 1
        phrase = " ".join(words)
        if phrase in ("contains", "not contains"):
            return _Match(sel, "in" if phrase == "contains" else "not in", self.value())
        if phrase in ("matches", "not matches"):
            value = self.value()
            try:
                regex = user_regex.compile(value)
            except user_regex.RegexError as e:
                raise FilterError(f"failed to compile regular expression {value!r}: {e}") from None
            return _Match(sel, phrase, value, regex)
        if phrase in ("is empty", "is not empty"):
            return _Match(sel, "empty" if phrase == "is empty" else "not empty", None)
        where = f"{t[1]!r} at position {t[2] + 1}" if t else "end of filter"
        raise FilterError(f"expected a match operator after {'.'.join(sel)!r}, found {where}")

    def _value_first(self) -> bool:
        """A bare word followed by ``in``/``not in`` is a value (``primary in Service.Tags``)."""
        j = 1
        while (t := self.peek(j)) is not None and t[0] in ("dot", "ident", "lb", "rb", "str"):
            if t[0] == "ident" and t[1] in ("in", "not", "is", "contains", "matches", "and", "or"):
                return t[1] == "in" or (t[1] == "not" and self.word(j + 1) == "in")
            j += 1
        return False

    def selector(self) -> tuple[str, ...]:
        parts = [self.take("ident")]
        while (t := self.peek()) is not None and t[0] in ("dot", "lb"):
            self.i += 1
            if t[0] == "dot":
                parts.append(self.take("ident"))
            else:
                parts.append(_unquote(self.take("str")))
                self.take("rb")
        return tuple(parts)

    def value(self) -> str:
        t = self.peek()
        if t is None:
            raise FilterError("expected a value, found end of filter")
        if t[0] == "str":
            self.i += 1
            return _unquote(t[1])
        if t[0] == "num":
            self.i += 1
            return t[1]
        return ".".join(self.selector())  # a bare word (or dotted words) is its own text


def _unquote(s: str) -> str:
    if s.startswith("`"):
        return s[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), s[1:-1])


def _eval(m: _Match, node: Any, depth: int) -> bool:
    if depth == len(m.selector):
        return _leaf(m, node)
    if isinstance(node, list):
        return any(_eval(m, item, depth) for item in node)  # bexpr v0.1.2: a list in the path means ANY
    if not isinstance(node, dict):
        raise FilterError(f"value at selector {'.'.join(m.selector[:depth])!r} does not support nested field "
                          "selection")
    name = m.selector[depth]
    if name not in node:
        if depth and m.selector[depth - 1] in MAP_FIELDS:
            return m.op in ("!=", "empty", "not in")  # a missing key is unequal, empty, contains nothing
        raise FilterError(f"selector {'.'.join(m.selector[:depth + 1])!r} is not valid")
    return _eval(m, node[name], depth + 1)


def _leaf(m: _Match, v: Any) -> bool:
    if m.op in ("==", "!="):
        if isinstance(v, (dict, list)):
            raise FilterError(f"cannot compare {'.'.join(m.selector)!r} (not a single value) with ==/!=")
        return bool(_coerce(m, v) == v) == (m.op == "==")
    if m.op in ("in", "not in"):
        return _contains(m, v) == (m.op == "in")
    if m.op in ("empty", "not empty"):
        if v is not None and not isinstance(v, (str, list, dict)):
            raise FilterError(f"cannot check {'.'.join(m.selector)!r} for emptiness")
        return (not v) == (m.op == "empty")
    if not isinstance(v, str):
        raise FilterError(f"value of {'.'.join(m.selector)!r} is not a string to match a regular expression")
    return bool(m.regex.matches(v)) == (m.op == "matches")


def _contains(m: _Match, v: Any) -> bool:
    if isinstance(v, str):
        return str(m.value) in v
    if isinstance(v, dict):
        return m.value in v
    if isinstance(v, list):
        return any(not isinstance(x, (dict, list)) and _coerce(m, x) == x for x in v)
    raise FilterError(f"cannot perform in/contains operations on {'.'.join(m.selector)!r}")


def _coerce(m: _Match, like: Any) -> Any:
    """The match value as the field's type (Go's strconv rules for bools and numbers)."""
    raw = str(m.value)
    try:
        if isinstance(like, bool):
            return {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
                    "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}[raw]
        if isinstance(like, int):
            return int(raw, 0) if raw.lower().startswith(("0x", "0o", "0b")) else int(raw)
        if isinstance(like, float):
            return float(raw)
    except (KeyError, ValueError):
        raise FilterError(f"failed to coerce value {raw!r} to the type of {'.'.join(m.selector)!r}") from None
    return raw
