"""The value after a quoted JSON key in many lines at once, read from an Arrow array's bytes.

What ``columnar.py`` asked of RE2 with a capture (``"key"\\s*:\\s*(value)``, a
scan of every line with a capture group) is done here with numpy over the
array's data buffer: the positions of every ``"`` once per array, the ones
that start ``"key"`` by comparing the few following bytes, then each such
key's colon and value by stepping all rows forward a byte at a time. Rows whose
value cannot be delimited within a few bytes (whitespace or a number longer
than that) are reported as ``V_UNSURE`` for the caller's exact path; nothing
here guesses.

Whitespace around the colon is RE2's ``\\s`` (``[\\t\\n\\f\\r ]``), a superset of
JSON's that the callers' regexes used; on a line known to be a flat JSON
object only JSON's can occur.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = [
    "V_FALSE",
    "V_NONE",
    "V_NULL",
    "V_NUMBER",
    "V_STRING",
    "V_TRUE",
    "V_UNSURE",
    "JsonText",
    "KeyValues",
]

V_NONE = 0  # the key does not occur exactly once, or its one occurrence is not followed by ``:``
V_STRING = 1
V_NUMBER = 2  # a token of number characters (validate it where it matters)
V_TRUE = 3
V_FALSE = 4
V_NULL = 5
V_UNSURE = 6  # the key occurs once and is followed by ``:``, the value could not be delimited here

_W_COLON = 16  # whitespace bytes skipped on either side of the colon at most
_W_VALUE = 40  # bytes of a number token at most (rounded up to whole 8-byte steps)
NO_BYTE = 256  # ``KeyValues.follow`` of a number that ends its line
_PAD = 64  # zero bytes after the copied rows: more than any window or word reads past a position

_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\n\f\r")] = True
_NUMBER_CHAR = np.zeros(256, dtype=bool)
_NUMBER_CHAR[list(b"0123456789.eE+-")] = True
_QUOTE = ord('"')


@dataclass
class KeyValues:
    """Per row of the scanned array: how often the quoted key occurs, and its value's text."""

    count: np.ndarray  # int8: 0, 1, or 2 for "two or more"
    kind: np.ndarray  # int8: V_*
    rows: np.ndarray  # int64: the rows with a value (V_STRING, V_NUMBER or a literal), ascending
    texts: pa.Array  # per row of ``rows``: the string's content, the number's or literal's text, "" for null
    follow: np.ndarray  # int16 per row of ``rows``: the byte after a number (``NO_BYTE``: none), else 0


class JsonText:
    """The bytes of a string array's rows, scanned for ``"key": value`` pairs.

    Holds a copy of the rows' bytes followed by ``_PAD`` zero bytes, so reading a
    few bytes past any row (fixed-width windows, 8-byte words) needs no bounds
    checks; every read is then bounded by its row's end explicitly.
    """

    def __init__(self, arr: pa.Array) -> None:
        self.n = len(arr)
        bufs = arr.buffers()
        large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
        offs = np.frombuffer(bufs[1], dtype=np.int64 if large else np.int32) if self.n else np.zeros(1, np.int32)
        offs = offs[arr.offset : arr.offset + self.n + 1].astype(np.int64)
        lo, hi = int(offs[0]), int(offs[-1])
        self.offs = offs - lo
        self.data = np.zeros(hi - lo + _PAD, dtype=np.uint8)
        if hi > lo:
            self.data[: hi - lo] = np.frombuffer(bufs[2], dtype=np.uint8)[lo:hi]
        self.size = hi - lo
        # the 8 bytes from every position, as one little-endian word (a strided view, no copy)
        self._words = np.ndarray((self.size + _PAD - 7,), dtype="<u8", buffer=self.data, strides=(1,))
        self._quotes: np.ndarray | None = None
        self._after: np.ndarray | None = None

    def quotes(self) -> np.ndarray:
        """Positions of every ``"`` byte of the rows, ascending."""
        if self._quotes is None:
            self._quotes = np.flatnonzero(self.data[: self.size] == _QUOTE)
        return self._quotes

    def _after_quotes(self) -> np.ndarray:
        """Per ``"`` the byte after it (a key's first character)."""
        if self._after is None:
            self._after = self.data[self.quotes() + 1]
        return self._after

    def has_byte(self, byte: int) -> np.ndarray | None:
        """Per row whether it holds ``byte``; None when no row does (one pass over the bytes)."""
        at = np.flatnonzero(self.data[: self.size] == byte)
        if not len(at):
            return None
        out = np.zeros(self.n, dtype=bool)
        out[np.searchsorted(self.offs, at, side="right") - 1] = True
        return out

    def occurrences(self, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: how often ``"key"`` occurs (2: twice or more), where it first ends (-1: nowhere)
        and the index in ``quotes()`` of that occurrence's opening quote.

        Overlapping occurrences (``"a"a"``) count, unlike ``str.count``'s: where they differ the
        line is no flat object, and "more than once" is the cautious answer for every caller.
        """
        needle = f'"{key}"'.encode()
        size = len(needle)
        offs, q = self.offs, self.quotes()
        qi = np.flatnonzero(self._after_quotes() == needle[1])  # candidates by the key's first character
        at = q[qi]
        for j in range(1, size, 8):  # then 8 bytes at a time (the padding keeps the words inside the copy)
            part = needle[j : j + 8]
            mask = np.uint64((1 << (8 * len(part))) - 1)
            keep = (self._words[at + j] & mask) == np.uint64(int.from_bytes(part, "little"))
            at, qi = at[keep], qi[keep]
        row = np.searchsorted(offs, at, side="right") - 1
        inside = at + size <= offs[row + 1]  # str.count never counts across lines
        at, row, qi = at[inside], row[inside], qi[inside]
        count = np.minimum(np.bincount(row, minlength=self.n), 2).astype(np.int8)
        first = np.full(self.n, -1, dtype=np.int64)
        first_qi = np.full(self.n, -1, dtype=np.int64)
        lead = np.ones(len(row), dtype=bool)
        lead[1:] = row[1:] != row[:-1]
        first[row[lead]] = at[lead] + size
        first_qi[row[lead]] = qi[lead]
        return count, first, first_qi

    def _advance(self, pos: np.ndarray, end: np.ndarray, table: np.ndarray, limit: int) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
        """Each position moved past the bytes ``table`` accepts (not past ``end``); and the rows still
        moving after ``limit`` bytes. Rows that stop at once cost one byte read; the others step
        eight bytes (one word) at a time."""
        pos = pos.copy()
        active = np.flatnonzero(table[self.data[pos]] & (pos < end))
        for _ in range(0, limit, 8):
            if not len(active):
                break
            p = pos[active]
            go = table[self._words[p].view(np.uint8).reshape(-1, 8)]
            stop = go.argmin(axis=1)
            step = np.where(go[np.arange(len(p)), stop], 8, stop)  # argmin finds a True only when all are
            step = np.minimum(step, end[active] - p)
            pos[active] = p + step
            active = active[step == 8]
        going = np.zeros(len(pos), dtype=bool)
        going[active] = True
        return pos, going

    def _byte_at(self, pos: np.ndarray, end: np.ndarray) -> np.ndarray:
        """The byte at each position as int16, ``NO_BYTE`` at or past the row's end."""
        got: np.ndarray = self.data[pos].astype(np.int16)
        got[pos >= end] = NO_BYTE
        return got

    def values(self, key: str, strings: bool = True) -> KeyValues:
        """Where ``"key"`` occurs once in a row and is followed by ``\\s*:\\s*``, the value after it.

        ``strings``: also delimit string values (their closing quote, taken as the next ``"``,
        is exact only on lines without escapes); else they are reported as ``V_UNSURE``.
        """
        count, first, first_qi = self.occurrences(key)
        kind = np.zeros(self.n, dtype=np.int8)
        one = np.flatnonzero(count == 1)
        end = self.offs[one + 1]
        colon, going = self._advance(first[one], end, _SPACE, _W_COLON)
        is_colon = self._byte_at(colon, end) == ord(":")
        start, going2 = self._advance(colon + 1, end, _SPACE, _W_COLON)
        unsure = going | (is_colon & going2)
        kind[one[unsure]] = V_UNSURE
        ok = is_colon & ~unsure
        one, start, end = one[ok], start[ok], end[ok]
        return self._values(one, start, end, first_qi[one], count, kind, strings)

    def _values(self, rows: np.ndarray, start: np.ndarray, end: np.ndarray, key_qi: np.ndarray, count: np.ndarray,
                kind: np.ndarray, strings: bool) -> KeyValues:
        """Classify and delimit the values starting at ``start`` of ``rows`` (``key_qi``: their key's quote)."""
        lead = self._byte_at(start, end)
        lengths = np.zeros(len(rows), dtype=np.int64)
        follow = np.zeros(len(rows), dtype=np.int16)
        vkind = np.full(len(rows), V_UNSURE, dtype=np.int8)
        room = end - start
        for word, k, text_len in ((b"true", V_TRUE, 4), (b"false", V_FALSE, 5), (b"null", V_NULL, 0)):
            at = np.flatnonzero(lead == word[0])
            mask = np.uint64((1 << (8 * len(word))) - 1)
            same = (self._words[start[at]] & mask) == np.uint64(int.from_bytes(word, "little"))
            at = at[same & (room[at] >= len(word))]
            vkind[at] = k
            lengths[at] = text_len
        numeric = np.flatnonzero((lead == ord("-")) | ((lead >= ord("0")) & (lead <= ord("9"))))
        if len(numeric):
            stop, going = self._advance(start[numeric], end[numeric], _NUMBER_CHAR, _W_VALUE)
            fits = numeric[~going]
            lengths[fits] = stop[~going] - start[fits]
            follow[fits] = self._byte_at(stop[~going], end[fits])
            vkind[fits] = V_NUMBER
        quoted = np.flatnonzero(lead == _QUOTE)
        if strings and len(quoted):
            # Only space and ":" lie between the key's closing quote and the value's opening one,
            # so the quote after that one closes the value.
            q = self.quotes()
            close_qi = key_qi[quoted] + 3
            close = np.where(close_qi < len(q), q[np.minimum(close_qi, len(q) - 1)], -1)
            closed = (close >= 0) & (close < end[quoted])
            vkind[quoted[closed]] = V_STRING
            lengths[quoted[closed]] = close[closed] - start[quoted[closed]] - 1
            start = start.copy()
            start[quoted] += 1
        kind[rows] = vkind
        got = vkind != V_UNSURE
        return KeyValues(count, kind, rows[got], self._gather(start[got], lengths[got]), follow[got])

    def _gather(self, starts: np.ndarray, lengths: np.ndarray) -> pa.Array:
        """The byte ranges as a string array (they start and end at ASCII bytes of valid UTF-8)."""
        offs = np.zeros(len(starts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offs[1:])
        total = int(offs[-1])
        idx = np.repeat(starts - offs[:-1], lengths) + np.arange(total, dtype=np.int64)
        payload = self.data[idx] if total else np.zeros(0, dtype=np.uint8)
        return pa.Array.from_buffers(pa.large_string(), len(starts), [None, pa.py_buffer(offs),
                                     pa.py_buffer(payload)]).cast(pa.string())

