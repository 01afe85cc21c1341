"""Value and label formatting exactly as Prometheus prints them."""

from __future__ import annotations

from pitwall.core.gofmt import format_float_f as format_float
from pitwall.core.gofmt import go_quote
from pitwall.core.labels import Labels

__all__ = ["format_float", "format_seconds", "labels_string"]


def format_seconds(ms: int) -> float | int:
    """A sample timestamp for JSON: seconds, integral when the time is whole seconds."""
    if ms % 1000 == 0:
        return ms // 1000
    return ms / 1000


def labels_string(labels: Labels) -> str:
    """``labels.Labels.String()``: ``{__name__="x", a="b"}``, every pair quoted."""
    return "{" + ", ".join(f"{k}={go_quote(v)}" for k, v in labels) + "}"
