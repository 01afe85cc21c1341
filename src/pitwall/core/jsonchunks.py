"""JSON parsed in slices, so the thread parsing a large body never holds the GIL for long.

``json.loads`` holds the GIL for a whole document: a 100 MB Loki push stalls
the event loop (health probes included) for seconds, even when it is parsed in
a worker thread. ``parse(data)`` returns a lazy ``Value``: ``load()`` equals
``json.loads(data)`` but parses slices of about ``chunk`` bytes each, and
``batches()`` (arrays) and ``members()`` (objects) let a decoder consume a
large value piece by piece, so only one slice of parsed objects is alive at a
time (which also keeps the garbage collector's passes short).

How: the first time a large container is cut, the document's structure is
indexed with numpy, one window at a time: outside strings (quotes paired after
discounting backslash-escaped ones), every ``,`` and ``:`` is recorded with
its nesting depth. The elements of a container whose separators lie at depth
d are the text between its brackets cut at the depth-d commas; runs of small
elements are parsed together (``[`` + run + ``]``), an element larger than
``chunk`` is cut the same way one level down. Every byte of the document lies
in some slice that ``json.loads`` parses, and a container is only cut when
its first and last characters are a matching bracket pair, so a malformed
document fails as with ``json.loads`` (the message may name another position
in non-ASCII documents: positions are counted in bytes). Documents that do not
start with ``[`` or ``{`` (scalars, UTF-16/32, a byte-order mark) are parsed
whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["CHUNK", "Value", "loads", "parse"]

CHUNK = 1 << 20  # bytes per json.loads call: ~10 ms of GIL
_WINDOW = 1 << 20  # bytes indexed per numpy pass
_MAX_DEPTH = 64  # separators deeper than this are not indexed; deeper large values parse whole

_WS = b" \t\n\r"
_NON_WS = re.compile(rb"[^ \t\n\r]")
_CLASS = np.zeros(256, dtype=np.int8)  # 1 opens, -1 closes, 2 comma, 3 colon
for _ch, _v in ((b"[", 1), (b"{", 1), (b"]", -1), (b"}", -1), (b",", 2), (b":", 3)):
    _CLASS[_ch[0]] = _v
_STRUCTURAL = _CLASS != 0
_CLOSER = {ord("["): ord("]"), ord("{"): ord("}")}


def loads(data: bytes, chunk: int | None = None) -> Any:
    """``json.loads(data)``, parsed in slices of about ``chunk`` (default ``CHUNK``) bytes."""
    return parse(data, chunk).load()


def parse(data: bytes, chunk: int | None = None) -> Value:
    """The document as a lazy ``Value`` (nothing is parsed or indexed yet)."""
    doc = _Doc(data, chunk or CHUNK)
    m = _NON_WS.search(data)
    if m is None or b"\x00" in data[:4]:
        return Value(doc, 0, len(data), 1, whole=True)
    lo = m.start()
    hi = _rstrip(data, lo, len(data))
    return Value(doc, lo, hi, 1, whole=True)


class _Doc:
    """The text and, once needed, its separator index: positions and depth (negative for ``:``)."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data = data
        self.chunk = chunk
        self._pos: np.ndarray | None = None
        self._code: np.ndarray | None = None

    def index(self) -> tuple[np.ndarray, np.ndarray]:
        if self._pos is None or self._code is None:
            self._pos, self._code = _index(self.data)
        return self._pos, self._code


class Value:
    """A span of the document holding one JSON value (whitespace stripped)."""

    __slots__ = ("_parsed", "depth", "doc", "hi", "lo", "whole")

    def __init__(self, doc: _Doc, lo: int, hi: int, depth: int, whole: bool = False) -> None:
        self.doc = doc
        self.lo = lo
        self.hi = hi
        self.depth = depth  # depth of the separators directly inside, if a container
        self.whole = whole  # the whole document: json.loads gets all of it, whitespace and all
        self._parsed: list[Any] = []  # a small value once parsed, so length() then batches() parse it once

    @property
    def size(self) -> int:
        return self.hi - self.lo

    @property
    def kind(self) -> str:
        """``array``, ``object`` or ``other`` (a scalar, or text that is not JSON)."""
        d = self.doc.data
        if self.hi - self.lo < 2:
            return "other"
        first, last = d[self.lo], d[self.hi - 1]
        if _CLOSER.get(first) != last:
            return "other"
        return "array" if first == ord("[") else "object"

    def _small(self) -> bool:
        return self.size <= self.doc.chunk or self.depth > _MAX_DEPTH or self.kind == "other"

    def load(self) -> Any:
        """The parsed value, as ``json.loads`` gives it."""
        if self._small():
            if not self._parsed:
                d = self.doc.data
                self._parsed.append(json.loads(d if self.whole else d[self.lo : self.hi]))
            return self._parsed[0]
        if self.kind == "array":
            out: list[Any] = []
            for b in self.batches():
                if isinstance(b, Value):
                    out.append(b.load())
                else:
                    out.extend(b)
            return out
        obj: dict[str, Any] = {}
        for m in self.members():
            if isinstance(m, dict):
                obj.update(m)
            else:
                obj[m[0]] = m[1].load()
        return obj

    def length(self) -> int:
        """The number of elements of an array; a large one is counted without being parsed."""
        if self._small():
            v = self.load()
            if not isinstance(v, list):
                raise ValueError(f"expected a JSON array, got {type(v).__name__}")
            return len(v)
        if self.kind != "array":
            raise ValueError("expected a JSON array")
        pos, code = self.doc.index()
        i0, i1 = np.searchsorted(pos, (self.lo, self.hi))
        commas = int(np.count_nonzero(code[i0:i1] == self.depth))
        if not commas and _NON_WS.search(self.doc.data, self.lo + 1, self.hi - 1) is None:
            return 0
        return commas + 1

    def batches(self) -> Iterator[list[Any] | Value]:
        """An array's elements: lists of parsed small elements, or one large element as a ``Value``."""
        if self._small():
            v = self.load()
            if not isinstance(v, list):
                raise ValueError(f"expected a JSON array, got {type(v).__name__}")
            yield v
            return
        if self.kind != "array":
            raise ValueError("expected a JSON array")
        for s, e, single in self._pieces():
            if single:
                yield self._child(s, e)
            else:
                yield _loads_piece(self.doc.data, s, e, b"[", b"]")

    def members(self) -> Iterator[dict[str, Any] | tuple[str, Value]]:
        """An object's members: dicts of parsed small members, or one large member as ``(key, Value)``."""
        if self._small():
            v = self.load()
            if not isinstance(v, dict):
                raise ValueError(f"expected a JSON object, got {type(v).__name__}")
            yield v
            return
        if self.kind != "object":
            raise ValueError("expected a JSON object")
        data = self.doc.data
        pos, code = self.doc.index()
        for s, e, single in self._pieces():
            if not single:
                yield _loads_piece(data, s, e, b"{", b"}")
                continue
            i0, i1 = np.searchsorted(pos, (s, e))
            colons = np.flatnonzero(code[i0:i1] == -self.depth)
            if not len(colons):
                raise _decode_error("Expecting ':' delimiter", data, e)
            colon = int(pos[i0 + colons[0]])
            key = _loads_piece(data, s, colon, b"", b"")
            if not isinstance(key, str):
                raise _decode_error("Expecting property name enclosed in double quotes", data, s)
            yield key, self._child(colon + 1, e)

    def _child(self, s: int, e: int) -> Value:
        data = self.doc.data
        m = _NON_WS.search(data, s, e)
        if m is None:
            raise _decode_error("Expecting value", data, e)
        lo = m.start()
        return Value(self.doc, lo, _rstrip(data, lo, e), self.depth + 1)

    def _pieces(self) -> Iterator[tuple[int, int, bool]]:
        """Spans inside the brackets: runs of small elements, or one large element (``single``)."""
        data = self.doc.data
        pos, code = self.doc.index()
        lo, hi = self.lo + 1, self.hi - 1
        i0, i1 = np.searchsorted(pos, (lo, hi))
        cuts = pos[i0:i1][code[i0:i1] == self.depth].astype(np.int64)
        starts = np.concatenate(([lo], cuts + 1))
        ends = np.concatenate((cuts, [hi]))
        n = len(starts)
        chunk = self.doc.chunk
        big = np.flatnonzero(ends - starts > chunk).tolist()
        if n == 1 and _NON_WS.search(data, lo, hi) is None:
            big = []  # an empty container
        a = 0
        for b in [*big, n]:
            while a < b:  # elements a..b-1 are small: runs of about ``chunk`` bytes
                last = int(np.searchsorted(ends, starts[a] + chunk, side="right")) - 1
                last = min(max(last, a), b - 1)
                s, e = int(starts[a]), int(ends[last])
                if n > 1 and _NON_WS.search(data, s, e) is None:
                    raise _decode_error("Expecting value", data, e)  # an empty element: "[1,]"
                yield s, e, False
                a = last + 1
            if b < n:
                yield int(starts[b]), int(ends[b]), True
            a = b + 1


def _loads_piece(data: bytes, s: int, e: int, open_: bytes, close: bytes) -> Any:
    try:
        return json.loads(open_ + data[s:e] + close)
    except json.JSONDecodeError as err:
        raise _decode_error(err.msg, data, min(max(s, s + err.pos - len(open_)), e)) from None


def _decode_error(msg: str, data: bytes, pos: int) -> json.JSONDecodeError:
    """A JSONDecodeError at byte ``pos`` of the whole document."""
    lineno = data.count(b"\n", 0, pos) + 1
    colno = pos - data.rfind(b"\n", 0, pos)
    err = json.JSONDecodeError.__new__(json.JSONDecodeError)
    ValueError.__init__(err, f"{msg}: line {lineno} column {colno} (char {pos})")
    err.msg, err.doc, err.pos, err.lineno, err.colno = msg, "", pos, lineno, colno
    return err


def _rstrip(data: bytes, lo: int, hi: int) -> int:
    """``hi`` moved left past whitespace, not below ``lo``."""
    while hi > lo:
        tail = data[max(lo, hi - 4096) : hi].rstrip(_WS)
        if tail:
            return max(lo, hi - 4096) + len(tail)
        hi = max(lo, hi - 4096)
    return hi


def _index(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``,`` and ``:`` outside strings, and their depth (negated for ``:``), up to ``_MAX_DEPTH``."""
    buf = np.frombuffer(data, dtype=np.uint8)
    n = len(buf)
    pos_type = np.int32 if n < 2**31 else np.int64
    in_string = 0
    depth = 0
    backslashes = 0  # run of backslashes ending the previous window
    pos_parts: list[np.ndarray] = []
    code_parts: list[np.ndarray] = []
    for o in range(0, n, _WINDOW):
        a = buf[o : o + _WINDOW]
        quotes = np.flatnonzero(a == 0x22)
        is_bs = a == 0x5C
        if backslashes or is_bs.any():
            quotes, backslashes = _unescaped(quotes, is_bs, backslashes)
        s = np.flatnonzero(_STRUCTURAL[a])
        outside = ((np.searchsorted(quotes, s) + in_string) & 1) == 0
        s = s[outside]
        c = _CLASS[a[s]]
        d = np.cumsum(c == 1, dtype=np.int64) - np.cumsum(c == -1, dtype=np.int64) + depth
        if len(d):
            depth = int(d[-1])
        in_string ^= len(quotes) & 1
        keep = (c >= 2) & (d >= 1) & (d <= _MAX_DEPTH)
        pos_parts.append((s[keep] + o).astype(pos_type))
        code_parts.append(np.where(c[keep] == 3, -d[keep], d[keep]).astype(np.int8))
    if not pos_parts:
        return np.empty(0, dtype=pos_type), np.empty(0, dtype=np.int8)
    return np.concatenate(pos_parts), np.concatenate(code_parts)


def _unescaped(quotes: np.ndarray, is_bs: np.ndarray, carry: int) -> tuple[np.ndarray, int]:
    """The quotes not escaped by an odd run of backslashes; and the run of backslashes ending the window."""
    idx = np.arange(len(is_bs), dtype=np.int64)
    last_other = np.maximum.accumulate(np.where(is_bs, -1, idx))  # last non-backslash at or before i
    before = quotes - 1
    lp = np.where(before >= 0, last_other[np.maximum(before, 0)], -1)
    run = np.where(before >= 0, before - lp, 0) + np.where(lp == -1, carry, 0)
    tail = int(last_other[-1])
    trailing = len(is_bs) - 1 - tail if tail >= 0 else len(is_bs) + carry
    return quotes[(run & 1) == 0], trailing
