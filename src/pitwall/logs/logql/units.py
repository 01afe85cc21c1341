"""Go-compatible value parsing and formatting that LogQL relies on.

Durations (``time.ParseDuration`` plus Prometheus' d/w/y units, in ``core.durations``), humanized
byte sizes (``go-humanize`` ``ParseBytes``), ``strconv.ParseFloat``-style
numbers and Go string literals. (Regular expressions are RE2 itself, see
``pitwall.core.regex``.)
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from pitwall.core.durations import parse_duration_ns

__all__ = [
    "format_go_float",
    "format_sample_value",
    "go_unquote",
    "parse_bytes",
    "parse_duration_ns",
    "parse_go_float",
]

DURATION_RE = re.compile(r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h|d|w|y))+")


_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ti": 1024**4,
    "tib": 1024**4,
    "p": 1000**5,
    "pb": 1000**5,
    "pi": 1024**5,
    "pib": 1024**5,
    "e": 1000**6,
    "eb": 1000**6,
    "ei": 1024**6,
    "eib": 1024**6,
}
_BYTES_RE = re.compile(r"\s*([0-9][0-9.,]*)\s*([a-zA-Z]*)\s*")


def parse_bytes(text: str) -> int:
    """Bytes in a humanized size (``20MB`` = 20e6, ``1KiB`` = 1024), as go-humanize's ParseBytes."""
    m = _BYTES_RE.fullmatch(text)
    if m is None:
        raise ValueError(f'strconv.ParseFloat: parsing "{text}": invalid syntax')
    num = m.group(1).replace(",", "")
    unit = m.group(2).lower()
    if unit not in _BYTE_UNITS:
        raise ValueError(f"unhandled size name: {unit}")
    try:
        f = float(num)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{num}": invalid syntax') from None
    value = f * _BYTE_UNITS[unit]
    if value >= 2**64:
        raise ValueError(f"too large: {text}")
    return int(value)


_FLOAT_RE = re.compile(
    r"[+-]?(?:(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?|0[xX][0-9a-fA-F_.]+[pP][+-]?\d+"
    r"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])"
)


def parse_go_float(text: str) -> float:
    """A float as Go's ``strconv.ParseFloat(s, 64)`` reads it; ``ValueError`` otherwise."""
    try:
        f = float(text)
    except ValueError:
        pass
    else:
        # Python also takes surrounding spaces and digit underscores, which Go rejects.
        if "_" not in text and not text[0].isspace() and not text[-1].isspace():
            return f
    if not _FLOAT_RE.fullmatch(text):
        raise ValueError(f'strconv.ParseFloat: parsing "{text}": invalid syntax')
    t = text.replace("_", "")
    try:
        if "x" in t.lower() and "n" not in t.lower():
            return float.fromhex(t)
        return float(t)
    except (ValueError, OverflowError):
        raise ValueError(f'strconv.ParseFloat: parsing "{text}": invalid syntax') from None


def _digits(v: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of ``abs(v)`` and the decimal point position."""
    _, digits, exp = Decimal(repr(abs(v))).as_tuple()
    assert isinstance(exp, int)
    raw = "".join(map(str, digits))
    ds = raw.lstrip("0") or "0"
    # value = int(raw) * 10**exp, so the point sits len(ds) + exp digits into ds.
    dp = len(ds) + exp
    ds = ds.rstrip("0") or "0"
    return ds, dp


def format_go_float(v: float) -> str:
    """Go's ``%v`` for a float64 (shortest ``%g``: ``1e+06``, ``0.5``, ``100``)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    ds, dp = _digits(v)
    sign = "-" if v < 0 else ""
    exp = dp - 1
    # strconv 'g' with the shortest precision switches to %e at exponent 6.
    if exp < -4 or exp >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{sign}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return sign + _fixed(ds, dp)


def _fixed(ds: str, dp: int) -> str:
    if dp <= 0:
        return "0." + "0" * (-dp) + ds
    if dp >= len(ds):
        return ds + "0" * (dp - len(ds))
    return ds[:dp] + "." + ds[dp:]


def format_sample_value(v: float) -> str:
    """A sample value as Loki/Prometheus write it in JSON (``strconv.FormatFloat(v, 'f', -1, 64)``)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "0"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    ds, dp = _digits(v)
    return ("-" if v < 0 else "") + _fixed(ds, dp)


_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
}


def go_unquote(body: str, quote: str) -> str:
    """Decode the inside of a Go string literal (``quote`` is ``"`` or a backtick)."""
    if quote == "`":
        return body.replace("\r", "")
    out: list[str] = []
    i = 0
    n = len(body)
    while i < n:
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("invalid syntax")
        e = body[i + 1]
        if e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            i += 2
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            hexs = body[i + 2 : i + 2 + width]
            if len(hexs) != width or not re.fullmatch(r"[0-9a-fA-F]+", hexs):
                raise ValueError("invalid syntax")
            out.append(chr(int(hexs, 16)))
            i += 2 + width
        elif e in "01234567":
            octs = body[i + 1 : i + 4]
            if len(octs) != 3 or not re.fullmatch(r"[0-7]{3}", octs):
                raise ValueError("invalid syntax")
            out.append(chr(int(octs, 8)))
            i += 4
        else:
            raise ValueError("invalid syntax")
    return "".join(out)
