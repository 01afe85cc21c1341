from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pitwall.core.gofmt import format_float, format_float_f, go_quote


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.0, "1"), (-0.0, "-0"), (0.1, "0.1"), (123456.789, "123456.789"), (1e16, "10000000000000000"),
     (1e21, "1000000000000000000000"), (1.5e-7, "0.00000015"), (5e-324, "0." + "0" * 323 + "5"),
     (math.nan, "NaN"), (math.inf, "+Inf"), (-math.inf, "-Inf")],
)
def test_format_float_f_is_go_f_minus_one(value: float, text: str) -> None:
    assert format_float_f(value) == text
    assert format_float(value, "f") == text


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_format_float_f_fast_path_agrees_with_the_general_one(x: float) -> None:
    text = format_float_f(x)
    assert text == format_float(x, "f")
    if math.isfinite(x):
        # Shortest round-trip digits, positional: what numpy's Dragon4 prints too.
        assert text == np.format_float_positional(x, unique=True, trim="-")
        assert float(text) == x


@pytest.mark.parametrize(("value", "quoted"), [
    ("api", '"api"'), ("", '""'), ('a"b', '"a\\"b"'), ("a\\b", '"a\\\\b"'), ("a\tb\n", '"a\\tb\\n"'),
    ("\x01", '"\\x01"'), ("\x7f", '"\\x7f"'), ("é", '"é"'), ("\u200b", '"\\u200b"'), ("\U0001f600", '"\U0001f600"'),
])
def test_go_quote_is_strconv_quote(value: str, quoted: str) -> None:
    assert go_quote(value) == quoted
