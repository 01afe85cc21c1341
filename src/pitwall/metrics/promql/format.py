"""Value and label formatting exactly as Prometheus prints them."""

from __future__ import annotations

import math

import numpy as np

from pitwall.metrics.model import Labels


def format_float(v: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)``: shortest round-trip digits, no exponent."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(np.format_float_positional(v, unique=True, trim="-"))


def format_seconds(ms: int) -> float | int:
    """A sample timestamp for JSON: seconds, integral when the time is whole seconds."""
    if ms % 1000 == 0:
        return ms // 1000
    return ms / 1000


def _quote(v: str) -> str:
    """Go's ``strconv.Quote`` for the characters label values commonly hold."""
    out = []
    for ch in v:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def labels_string(labels: Labels) -> str:
    """``labels.Labels.String()``: ``{__name__="x", a="b"}``, every pair quoted."""
    return "{" + ", ".join(f"{k}={_quote(v)}" for k, v in labels) + "}"
