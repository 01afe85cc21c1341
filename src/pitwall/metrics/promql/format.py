"""Value and label formatting exactly as Prometheus prints them."""

from __future__ import annotations

import math

import numpy as np

from pitwall.core.gofmt import go_quote
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


def labels_string(labels: Labels) -> str:
    """``labels.Labels.String()``: ``{__name__="x", a="b"}``, every pair quoted."""
    return "{" + ", ".join(f"{k}={go_quote(v)}" for k, v in labels) + "}"
