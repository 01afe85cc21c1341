"""``JsonText.values`` against a plain-Python reading of the same bytes, on generated lines."""

from __future__ import annotations

import random
import re

import pyarrow as pa
import pytest

from pitwall.logs.logql.jsontext import (
    NO_BYTE,
    V_FALSE,
    V_NONE,
    V_NULL,
    V_NUMBER,
    V_STRING,
    V_TRUE,
    V_UNSURE,
    JsonText,
)

_SPACE = b" \t\n\f\r"
_NUMBER = re.compile(rb"[-0-9.eE+]*")
_PIECES = ['"level"', '"lvl"', '"l"', '"status"', ":", " ", "\t", "\n", " " * 17, ",", "{", "}", "[", "]", '"',
           '"info"', '"é"', '"x\\"y"', "true", "tru", "false", "null", "nul", "0", "-1.5e3", "12", "1" * 45, "-", "é",
           "\\", "level", "a", '"status":', '"level":', '"level" :  "warn"', '"status":500,']


def _reference(line: bytes, key: str) -> tuple[int, int, bytes | None, int]:
    """(count capped at 2, kind, text, follow) as the regex-based readers saw the line."""
    needle = f'"{key}"'.encode()
    # overlapping occurrences count ("level"level" twice): more is the cautious answer for both callers
    count = min(len(re.findall(b"(?=" + re.escape(needle) + b")", line)), 2)
    if count != 1:
        return count, V_NONE, None, 0
    p = line.index(needle) + len(needle)
    q = p
    while q < len(line) and line[q] in _SPACE:
        q += 1
    if q - p >= 16:
        return count, V_UNSURE, None, 0
    if q >= len(line) or line[q] != ord(":"):
        return count, V_NONE, None, 0
    v = q + 1
    while v < len(line) and line[v] in _SPACE:
        v += 1
    if v - q - 1 >= 16 or v >= len(line):
        return count, V_UNSURE, None, 0
    rest = line[v:]
    if rest[:1] == b'"':
        close = rest.find(b'"', 1)
        return (count, V_STRING, rest[1:close], 0) if close >= 0 else (count, V_UNSURE, None, 0)
    for word, kind, text in ((b"true", V_TRUE, b"true"), (b"false", V_FALSE, b"false"), (b"null", V_NULL, b"")):
        if rest.startswith(word):
            return count, kind, text, 0
    if rest[:1] in (b"-", *(bytes([c]) for c in b"0123456789")):
        m = _NUMBER.match(rest)
        assert m is not None
        tok = m.group()
        if len(tok) >= 40:
            return count, V_UNSURE, None, 0
        return count, V_NUMBER, tok, rest[len(tok)] if len(tok) < len(rest) else NO_BYTE
    return count, V_UNSURE, None, 0


def _lines(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randrange(0, 14))) for _ in range(n)]


@pytest.mark.parametrize("key", ["level", "l", "status"])
@pytest.mark.parametrize("seed", range(4))
def test_values_match_a_plain_reading_of_each_line(seed: int, key: str) -> None:
    lines = _lines(seed, 3000)
    arr = pa.array(lines, pa.string())
    for part in (arr, arr.slice(7, 1500)):  # a slice: rows that do not start the buffer
        kv = JsonText(part).values(key)
        texts = dict(zip(kv.rows.tolist(), kv.texts.to_pylist(), strict=True))
        follows = dict(zip(kv.rows.tolist(), kv.follow.tolist(), strict=True))
        for i, line in enumerate(part.to_pylist()):
            count, kind, text, follow = _reference(line.encode(), key)
            assert (int(kv.count[i]), int(kv.kind[i])) == (count, kind), line
            assert (texts[i].encode() if i in texts else None) == text, line
            if kind == V_NUMBER:
                assert follows[i] == follow, line


def test_strings_can_be_left_to_the_caller() -> None:
    kv = JsonText(pa.array(['{"level":"info"}', '{"level":5}'])).values("level", strings=False)
    assert kv.kind.tolist() == [V_UNSURE, V_NUMBER]
    assert kv.texts.to_pylist() == ["5"]


def test_rows_holding_a_byte() -> None:
    t = JsonText(pa.array(["a", "b\\c", "", "\\"]))
    got = t.has_byte(ord("\\"))
    assert got is not None and got.tolist() == [False, True, False, True]
    assert JsonText(pa.array(["a", ""])).has_byte(ord("\\")) is None
