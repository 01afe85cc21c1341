"""core.jsonchunks: the same values and the same failures as json.loads, parsed in slices."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitwall.core import jsonchunks

_TEXT = st.text(alphabet='"\\ab,:[]{} \n\té\u2028', max_size=10)
_SCALARS = (st.none() | st.booleans() | st.integers(-(10**20), 10**20)
            | st.floats(allow_nan=False, allow_infinity=False) | _TEXT)
_VALUES = st.recursive(_SCALARS, lambda ch: st.lists(ch, max_size=6) | st.dictionaries(_TEXT, ch, max_size=5),
                       max_leaves=40)


def _dumps(v: Any, rnd: random.Random) -> str:
    """JSON with random whitespace between tokens."""
    def ws() -> str:
        return rnd.choice(["", " ", "\n", "\t ", "  \r\n"])

    if isinstance(v, list):
        return "[" + ws() + ("," + ws()).join(_dumps(x, rnd) + ws() for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ws() + ",".join(ws() + json.dumps(k) + ws() + ":" + ws() + _dumps(x, rnd) + ws()
                                     for k, x in v.items()) + "}"
    return json.dumps(v, ensure_ascii=rnd.random() < 0.5)


def _outcome(data: bytes, chunk: int | None) -> tuple[str, Any]:
    try:
        return "ok", json.loads(data) if chunk is None else jsonchunks.loads(data, chunk)
    except (ValueError, RecursionError):
        return "error", None


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(_VALUES, st.integers(0, 2**32), st.integers(1, 40), st.integers(1, 9))
def test_same_as_json_loads_for_valid_and_broken_documents(value: Any, seed: int, chunk: int, window: int) -> None:
    rnd = random.Random(seed)
    text = (rnd.choice(["", " ", "\n"]) + _dumps(value, rnd) + rnd.choice(["", "\n"])).encode()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jsonchunks, "_WINDOW", window)  # escapes and strings cut across index windows
        assert jsonchunks.loads(text, chunk) == json.loads(text)
        for _ in range(4):
            b = bytearray(text)
            i = rnd.randrange(len(b) + 1)
            if rnd.random() < 0.5 and b:
                del b[min(i, len(b) - 1)]
            else:
                b.insert(i, rnd.choice(b'[]{},:"\\ 1a'))
            expected = _outcome(bytes(b), None)
            got = _outcome(bytes(b), chunk)
            assert got[0] == expected[0], bytes(b)
            assert got == expected


@pytest.mark.parametrize("text", [
    b'[' + b'1,' * 50 + b'[' + b'2,' * 50 + b'3],]',  # a trailing comma after a large element
    b'{"a":[' + b'1,' * 50 + b'1],}',
    b'[' + b'1,' * 50 + b'1] [2]',  # two values
    b'[' + b'[1,2] [3]' * 20 + b']',
    b'{"a" ' + b'[1],' * 40 + b'}',
    b'{' + b'"k":1,' * 40 + b'"k" 2}',
])
def test_broken_documents_fail_as_with_json_loads(text: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        jsonchunks.loads(text, 16)


def test_large_values_come_in_slices() -> None:
    doc = {"streams": [{"stream": {"a": "b"}, "values": [[str(i), f"line {i}"] for i in range(1000)]}],
           "other": 1}
    root = jsonchunks.parse(json.dumps(doc).encode(), chunk=512)
    assert root.kind == "object"
    members = list(root.members())
    big = [m for m in members if isinstance(m, tuple)]
    assert [k for k, _ in big] == ["streams"]
    streams = big[0][1]
    assert streams.length() == 1
    (stream,) = list(streams.batches())
    assert isinstance(stream, jsonchunks.Value)
    values = next(v for k, v in (m for m in stream.members() if isinstance(m, tuple)) if k == "values")
    assert values.length() == 1000
    batches = list(values.batches())
    assert len(batches) > 10  # slices of ~512 bytes
    assert [e for b in batches for e in (b if isinstance(b, list) else [b.load()])] == doc["streams"][0]["values"]
    assert root.load() == doc


def test_duplicate_keys_keep_the_last_value_at_the_first_position() -> None:
    text = b'{"a":1,' + b'"pad":[' + b'0,' * 100 + b'0],"b":2,"a":3}'
    assert list(jsonchunks.loads(text, 32).items()) == list(json.loads(text).items())


def test_empty_containers_and_scalars() -> None:
    for text in (b"[" + b" " * 100 + b"]", b"{" + b"\n" * 100 + b"}", b'"' + b"x" * 100 + b'"', b" 12 ", b"[]"):
        assert jsonchunks.loads(text, 8) == json.loads(text)
    assert jsonchunks.parse(b"[" + b" " * 100 + b"]", chunk=8).length() == 0


def test_deep_nesting_fails_as_json_loads_does() -> None:
    text = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(RecursionError):
        jsonchunks.loads(text)
