"""Alertmanager label matchers: ``name="value"``, ``name!=v``, ``name=~re``, ``name!~re``.

The parser follows Alertmanager's classic rules (``pkg/labels/parse.go``):
braces are optional, values may be quoted or bare, ``\\n``, ``\\"`` and
``\\\\`` are the only escapes, a comma inside quotes does not split. As in
Alertmanager's UTF-8 mode, a label name may also be double-quoted
(``{"service name"="api"}``). Regular expressions are RE2, fully anchored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pitwall.core import regex
from pitwall.core.gofmt import go_quote

__all__ = [
    "MatchType",
    "Matcher",
    "MatcherError",
    "matchers_match",
    "matchers_string",
    "parse_matcher",
    "parse_matchers",
]

MatchType = Literal["=", "!=", "=~", "!~"]

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# '=~' must come before '=' so that '~' is not read as part of the value.
_CLASSIC = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*(.*?)\s*$", re.S)
_QUOTED_NAME = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"\s*(=~|=|!=|!~)\s*(.*?)\s*$', re.S)


class MatcherError(ValueError):
    """A matcher string that Alertmanager would reject."""


def is_valid_label_name(name: str) -> bool:
    """Prometheus' classic label-name rule (what Alertmanager 0.25 enforces in configs)."""
    return bool(_LABEL_NAME.match(name))


@dataclass(frozen=True)
class Matcher:
    """One label matcher; regex matchers are anchored at both ends."""

    name: str
    type: MatchType
    value: str
    _re: regex.Regex | None = field(default=None, compare=False, repr=False, hash=False)

    @classmethod
    def create(cls, name: str, type_: MatchType, value: str) -> Matcher:
        """A matcher, compiling the regex (RE2, ``^(?:value)$``) now so a bad one fails at load."""
        compiled = None
        if type_ in ("=~", "!~"):
            try:
                compiled = regex.compile(value, anchored=True)
            except regex.RegexError as e:
                raise MatcherError(str(e)) from None
        return cls(name, type_, value, compiled)

    @property
    def is_regex(self) -> bool:
        return self.type in ("=~", "!~")

    @property
    def is_equal(self) -> bool:
        return self.type in ("=", "=~")

    def matches(self, value: str) -> bool:
        """Whether a label value (``""`` when absent) satisfies the matcher."""
        if self.type == "=":
            return value == self.value
        if self.type == "!=":
            return value != self.value
        assert self._re is not None
        hit = self._re.matches(value)
        return hit if self.type == "=~" else not hit

    def __str__(self) -> str:
        name = self.name if _LABEL_NAME.match(self.name) else go_quote(self.name)
        return f"{name}{self.type}{go_quote(self.value)}"

    def sort_key(self) -> tuple[str, str, int]:
        """Alertmanager's Matchers ordering: name, then value, then type."""
        return (self.name, self.value, ("=", "!=", "=~", "!~").index(self.type))


def matchers_match(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher accepts the label set (missing labels read as empty)."""
    return all(m.matches(labels.get(m.name, "")) for m in matchers)


def matchers_string(matchers: Sequence[Matcher]) -> str:
    """``{a="1",b=~"x"}`` as Alertmanager prints a matcher list."""
    return "{" + ",".join(str(m) for m in matchers) + "}"


def _split(text: str) -> list[str]:
    """Split on commas outside double quotes, honouring backslash escapes."""
    tokens: list[str] = []
    buf: list[str] = []
    inside = escaped = False
    for ch in text:
        if ch == "," and not inside:
            tokens.append("".join(buf))
            buf = []
            continue
        if ch == '"':
            if not escaped:
                inside = not inside
            else:
                escaped = False
        elif ch == "\\":
            escaped = not escaped
        else:
            escaped = False
        buf.append(ch)
    last = "".join(buf).strip()
    if last:
        tokens.append(last)
    return tokens


def parse_matchers(text: str) -> list[Matcher]:
    """Parse ``{a="b",c=~"d"}`` (braces optional) into matchers."""
    s = text.strip()
    s = s.removeprefix("{").removesuffix("}")
    return [parse_matcher(tok) for tok in _split(s)]


def _unescape(raw: str, original: str) -> str:
    quoted = raw.startswith('"')
    if quoted:
        raw = raw[1:]
    out: list[str] = []
    escaped = False
    for i, ch in enumerate(raw):
        if escaped:
            escaped = False
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(ch, "\\" + ch))
            continue
        if ch == "\\":
            if i < len(raw) - 1:
                escaped = True
                continue
            out.append("\\")
        elif ch == '"':
            if not quoted or i < len(raw) - 1:
                raise MatcherError(f"matcher value contains unescaped double quote: {original}")
            quoted = False
        else:
            out.append(ch)
    if quoted:
        raise MatcherError(f"matcher value contains unescaped double quote: {original}")
    return "".join(out)


def parse_matcher(text: str) -> Matcher:
    """Parse one ``name<op>value`` matcher."""
    m = _CLASSIC.match(text) or _QUOTED_NAME.match(text)
    if m is None:
        raise MatcherError(f"bad matcher format: {text}")
    name = m.group(1)
    if m.re is _QUOTED_NAME:
        name = _unescape('"' + name + '"', name)
    op: MatchType = m.group(2)  # type: ignore[assignment]
    return Matcher.create(name, op, _unescape(m.group(3), m.group(3)))
