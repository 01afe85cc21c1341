"""Regular expressions from users: RE2, in linear time, with Go's syntax and error texts.

Every pattern that comes from a query, a rule, a config file or an API
request is compiled here, never by Python's ``re``: a backtracking engine
takes exponential time on patterns like ``(a+)+b`` and holds the GIL while
it does, so one query could stall the whole server. RE2 is also what
Prometheus, Loki and Alertmanager define their regexes as (Go's ``regexp``
is RE2 syntax): ``(?P<n>..)``/``(?<n>..)``, ``\\z``, ``[[:alpha:]]``,
mid-pattern ``(?i)`` work as in the peers; backreferences and lookarounds
are rejected with Go's message (``error parsing regexp: invalid escape
sequence: `\\1```).

``compile(p)`` is Go's ``regexp.MustCompile(p)`` (leftmost-first search);
``compile(p, anchored=True, dot_nl=True)`` is Prometheus' label matcher
``^(?s:p)$``. Compiled patterns are cached and so shared by every query
that uses them. Memory is bounded: 256 patterns, each with at most 2 MiB of
RE2 program and DFA cache and 1,024 remembered results for texts of at most
128 characters.

Speed: one call through the RE2 binding costs about 0.6 µs against 0.1 µs
for ``re`` on short strings, so ``matches`` answers plain literals and
alternations of literals (and ``lit.*``-like shapes) without RE2 and
remembers recent results for short texts while they repeat (label values
do), and ``match_many`` matches a whole column in
Arrow's RE2 kernel, which also releases the GIL. Long array loops call
``core.deadline.check()`` between chunks, so a query's timeout stops them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import numpy as np
import pyarrow as pa
import re2
from re2 import _re2

from pitwall.core import deadline
from pitwall.core.arrow_compute import pc

__all__ = ["Match", "Regex", "RegexError", "compile", "escape"]



class _RE2(Protocol):
    """The part of the C++ binding (``re2._re2.RE2``, its own method names) used here; offsets are UTF-8 bytes."""

    def ok(self) -> bool: ...
    def error(self) -> bytes: ...
    def NumberOfCapturingGroups(self) -> int: ...
    def NamedCapturingGroups(self) -> list[tuple[bytes, int]]: ...
    def Match(self, anchor: Any, text: bytes, pos: int, endpos: int) -> list[tuple[int, int]]: ...


_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every bad pattern to stderr
_OPTIONS.max_mem = 2 << 20  # per pattern: program and DFA cache (RE2's default is 8 MiB)
_ANCHOR = _re2.RE2.Anchor
_UNANCHORED = _ANCHOR.UNANCHORED
_NO_SPAN = (-1, -1)

_CACHE_SIZE = 256  # compiled patterns kept
_MEMO_MAX = 1024  # remembered results per pattern
_MEMO_LEN = 128  # texts up to this length are remembered
_MEMO_ROUNDS = 4  # a memo filled this often is given up: the texts do not repeat
_ARRAY_MIN = 64  # below this many values a Python loop beats building an Arrow array
_CHUNK = 65_536  # values per Arrow call between deadline checks

_META = frozenset("\\.+*?()|[]{}^$")

# RE2's error codes as Go's regexp/syntax words them.
_GO_CODES = {
    "invalid escape sequence": "invalid escape sequence",
    "invalid character class": "invalid character class",
    "invalid character class range": "invalid character class range",
    "missing ]": "missing closing ]",
    "missing )": "missing closing )",
    "unexpected )": "unexpected )",
    "trailing \\": "trailing backslash at end of expression",
    "no argument for repetition operator": "missing argument to repetition operator",
    "invalid repetition size": "invalid repeat count",
    "bad repetition operator": "invalid nested repetition operator",
    "invalid perl operator": "invalid or unsupported Perl syntax",
    "invalid UTF-8": "invalid UTF-8",
    "invalid named capture group": "invalid named capture",
    "pattern too large - compile failed": "expression too large",
}


class RegexError(ValueError):
    """A pattern RE2 (and so Go) rejects; ``str()`` is Go's ``regexp.Compile`` error text."""

    def __init__(self, pattern: str, code: str, arg: str) -> None:
        self.pattern = pattern
        self.code = code
        self.arg = arg
        super().__init__(f"error parsing regexp: {code}: `{arg}`")


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _dec(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def _raw(pattern: str) -> _RE2:
    return cast(_RE2, _re2.RE2(_enc(pattern), _OPTIONS))


def _error(pattern: str, rx: _RE2) -> RegexError:
    text = _dec(rx.error())
    code, sep, arg = text.partition(": ")
    return RegexError(pattern, _GO_CODES.get(code, code), arg if sep else "")


def escape(text: str) -> str:
    """Go's ``regexp.QuoteMeta``: a pattern matching ``text`` literally."""
    return "".join("\\" + c if c in _META else c for c in text)


def compile(pattern: str, *, anchored: bool = False, dot_nl: bool = False) -> Regex:
    """The compiled (cached) form of ``pattern``; ``RegexError`` when it is not valid RE2 syntax.

    ``anchored``: matches must span the whole text (Prometheus' and
    Alertmanager's matchers, relabeling), compiled as they do: ``^(?:p)$``.
    ``dot_nl``: ``.`` also matches ``\\n``: ``(?s:p)``.
    """
    return _compile(pattern, anchored, dot_nl)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile(pattern: str, anchored: bool, dot_nl: bool) -> Regex:
    return Regex(pattern, anchored, dot_nl)


class Match:
    """One match: the text's bytes and the byte spans of every group (``(-1, -1)`` when unset)."""

    __slots__ = ("_data", "_rx", "spans")

    def __init__(self, rx: Regex, data: bytes, spans: list[tuple[int, int]]) -> None:
        self._rx = rx
        self._data = data
        self.spans = spans

    def group(self, key: int | str = 0) -> str | None:
        """The text of a group by number or name; None when it did not participate or does not exist."""
        i = key if isinstance(key, int) else self._rx.groupindex.get(key, -1)
        if not 0 <= i < len(self.spans):
            return None
        s, e = self.spans[i]
        return None if s < 0 else _dec(self._data[s:e])

    def groupdict(self) -> dict[str, str | None]:
        return {name: self.group(i) for name, i in self._rx.groupindex.items()}

    def expand(self, template: str) -> str:
        """Go's ``Regexp.ExpandString``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``; unknown -> ""."""
        return _dec(self._expand(_template(template)))

    def _expand(self, pieces: tuple[bytes | int | str, ...]) -> bytes:
        out: list[bytes] = []
        spans = self.spans
        data = self._data
        for p in pieces:
            if isinstance(p, bytes):
                out.append(p)
                continue
            i = p if isinstance(p, int) else self._rx.groupindex.get(p, -1)
            if 0 <= i < len(spans) and spans[i][0] >= 0:
                out.append(data[spans[i][0] : spans[i][1]])
        return b"".join(out)


@functools.lru_cache(maxsize=256)
def _template(template: str) -> tuple[bytes | int | str, ...]:
    """A Go expansion template as literal bytes and group references (int: number, str: name)."""
    out: list[bytes | int | str] = []
    lit: list[str] = []
    i, n = 0, len(template)
    while i < n:
        d = template.find("$", i)
        if d < 0:
            lit.append(template[i:])
            break
        lit.append(template[i:d])
        i = d + 1
        if i < n and template[i] == "$":
            lit.append("$")
            i += 1
            continue
        ref = _reference(template, i)
        if ref is None:
            lit.append("$")  # malformed: Go keeps the "$" as text
            continue
        name, i = ref
        if lit:
            out.append(_enc("".join(lit)))
            lit = []
        num = _group_number(name)
        out.append(num if num >= 0 else name)
    if lit and any(lit):
        out.append(_enc("".join(lit)))
    return tuple(out)


def _reference(template: str, i: int) -> tuple[str, int] | None:
    """Go's ``extract``: a name after ``$`` at ``template[i]`` (braced or not) and the index after it."""
    brace = i < len(template) and template[i] == "{"
    j = i + 1 if brace else i
    k = j
    while k < len(template) and (template[k] == "_" or template[k].isalpha() or template[k].isdigit()):
        k += 1
    if k == j:
        return None
    name = template[j:k]
    if brace:
        if k >= len(template) or template[k] != "}":
            return None
        k += 1
    return name, k


def _group_number(name: str) -> int:
    """Go's rule: ASCII digits, no leading zero, below 1e8 -> a group number; else -1 (a name)."""
    if not name.isascii() or not name.isdigit() or (len(name) > 1 and name[0] == "0") or len(name) > 8:
        return -1
    return int(name)


def _utf8_width(data: bytes, pos: int) -> int:
    """Bytes in the UTF-8 sequence at ``pos`` (1 for an invalid lead byte, 0 at the end)."""
    if pos >= len(data):
        return 0
    b = data[pos]
    if b < 0xC0:
        return 1
    w = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
    return w if pos + w <= len(data) else 1


class Regex:
    """A compiled RE2 pattern (see ``compile``)."""

    __slots__ = ("_arrow", "_fast", "_memo", "_memo_rounds", "_re", "anchored", "dot_nl", "groupindex", "groups",
                 "matches", "pattern")

    matches: Callable[[str], bool]

    def __init__(self, pattern: str, anchored: bool, dot_nl: bool) -> None:
        self.pattern = pattern
        self.anchored = anchored
        self.dot_nl = dot_nl
        # The very text the peers compile and search (Prometheus: "^(?s:" + v + ")$"), so errors quote
        # the same expression (`^(?s:()$`) and odd values ("a)|(b") mean the same; RE2 runs a
        # leading ^ and trailing $ as an anchored match.
        text = f"(?s:{pattern})" if dot_nl else f"(?:{pattern})" if anchored else pattern
        if anchored:
            text = f"^{text}$"
        rx = _raw(text)
        if not rx.ok():
            raise _error(pattern, rx)
        self._re = rx
        self.groups: int = rx.NumberOfCapturingGroups()
        self.groupindex: dict[str, int] = {_dec(k): v for k, v in rx.NamedCapturingGroups()}
        self._arrow = text
        self._memo: dict[str, bool] = {}
        self._memo_rounds = 0
        fast = self._fast_test()
        self._fast = fast is not None
        self.matches = fast if fast is not None else self._memo_test

    # ------------------------------------------------------------ booleans

    def _fast_test(self) -> Callable[[str], bool] | None:
        """A test without RE2 for the common shapes (as Prometheus' FastRegexMatcher has).

        A literal, literals joined by ``|``; with ``dot_nl`` (``.`` matches
        anything) and anchoring also ``.*``, ``.+``, ``lit.*``, ``.*lit`` and
        ``.*lit.*``.
        """
        p = self.pattern
        plain = _META.isdisjoint
        if plain(p):
            return p.__eq__ if self.anchored else (lambda s: p in s)
        if not self.anchored:
            return None
        if "|" in p and plain(p.replace("|", "")):
            return frozenset(p.split("|")).__contains__
        if not self.dot_nl:
            return None
        if p == ".*":
            return lambda s: True
        if p == ".+":
            return lambda s: s != ""
        if len(p) >= 4 and p.startswith(".*") and p.endswith(".*") and plain(p[2:-2]):
            inner = p[2:-2]
            return lambda s: inner in s
        if p.endswith(".*") and plain(p[:-2]):
            prefix = p[:-2]
            return lambda s: s.startswith(prefix)
        if p.startswith(".*") and plain(p[2:]):
            suffix = p[2:]
            return lambda s: s.endswith(suffix)
        return None

    def _re2_test(self, text: str) -> bool:
        data = _enc(text)
        return bool(self._re.Match(_UNANCHORED, data, 0, len(data))[0] != _NO_SPAN)

    def _memo_test(self, text: str) -> bool:
        memo = self._memo
        r = memo.get(text)
        if r is None:
            r = self._re2_test(text)
            if len(text) <= _MEMO_LEN:
                if len(memo) >= _MEMO_MAX:
                    memo.clear()
                    self._memo_rounds += 1
                    if self._memo_rounds >= _MEMO_ROUNDS:
                        self.matches = self._re2_test
                        return r
                memo[text] = r
        return r

    def match_many(self, values: Sequence[str]) -> np.ndarray:
        """``matches`` for every value, as a bool array; large inputs go through Arrow's RE2 kernel."""
        n = len(values)
        if n < _ARRAY_MIN or self._fast:
            return np.fromiter(map(self.matches, values), dtype=bool, count=n)
        parts: list[np.ndarray] = []
        for lo in range(0, n, _CHUNK):
            deadline.check()
            chunk = values[lo : lo + _CHUNK]
            try:
                arr = pa.array(chunk, pa.string())
                hit = pc.match_substring_regex(arr, self._arrow)
            except (pa.ArrowException, UnicodeError):
                # Text Arrow cannot hold (lone surrogates), or an RE2 build that disagrees: one at a time.
                parts.append(np.fromiter(map(self._re2_test, chunk), dtype=bool, count=len(chunk)))
                continue
            parts.append(hit.to_numpy(zero_copy_only=False))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    # ------------------------------------------------------------ submatches

    def search(self, text: str) -> Match | None:
        """The leftmost-first match (the whole text when ``anchored``), or None."""
        data = _enc(text)
        spans = self._re.Match(_UNANCHORED, data, 0, len(data))
        if spans[0] == _NO_SPAN:
            return None
        return Match(self, data, spans)

    def extractor(self, groups: Sequence[int]) -> Callable[[str], list[str] | None]:
        """``text ->`` the texts of ``groups`` ("" when unset) in the first match, or None without one.

        Go's ``FindStringSubmatch`` cut to the groups asked for: the per-line
        path of ``| regexp``, with no ``Match`` object and one decode per group.
        """
        match = self._re.Match
        wanted = tuple(groups)

        def run(text: str) -> list[str] | None:
            data = text.encode("utf-8", "surrogatepass")
            spans = match(_UNANCHORED, data, 0, len(data))
            if spans[0][0] < 0:
                return None
            out = []
            for i in wanted:
                s, e = spans[i]
                out.append(data[s:e].decode("utf-8", "surrogatepass") if s >= 0 else "")
            return out

        return run

    def _all(self, data: bytes) -> list[list[tuple[int, int]]]:
        """Go's ``allMatches``: successive non-overlapping matches, no empty one right after a match."""
        out: list[list[tuple[int, int]]] = []
        match = self._re.Match
        n = len(data)
        pos, prev_end = 0, -1
        while pos <= n:
            spans = match(_UNANCHORED, data, pos, n)
            s, e = spans[0]
            if s < 0:
                break
            accept = True
            if e == pos:
                if s == prev_end:
                    accept = False
                pos += _utf8_width(data, pos) or 1
            else:
                pos = e
            prev_end = e
            if accept:
                out.append(spans)
        return out

    def count(self, text: str) -> int:
        """Number of matches ``FindAllStringIndex(text, -1)`` finds."""
        return len(self._all(_enc(text)))

    def replace_all(self, text: str, template: str, *, literal: bool = False) -> str:
        """Go's ``ReplaceAllString`` (``$`` references expand) or ``ReplaceAllLiteralString``."""
        data = _enc(text)
        pieces = (_enc(template),) if literal else _template(template)
        out: list[bytes] = []
        match = self._re.Match
        n = len(data)
        last = pos = 0
        while pos <= n:
            spans = match(_UNANCHORED, data, pos, n)
            s, e = spans[0]
            if s < 0:
                break
            out.append(data[last:s])
            # No replacement for an empty match right after the previous match.
            if e > last or s == 0:
                out.append(Match(self, data, spans)._expand(pieces))
            last = e
            width = _utf8_width(data, pos)
            if pos + width > e:
                pos += width
            elif pos + 1 > e:
                pos += 1
            else:
                pos = e
        if not out:
            return text
        out.append(data[last:])
        return _dec(b"".join(out))

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r}, anchored={self.anchored}, dot_nl={self.dot_nl})"
