"""Prometheus duration strings ("1h30m", "15s", "2d", "500ms") <-> milliseconds."""

from __future__ import annotations

import re

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
             "y": 31_536_000_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_ORDER = ["y", "w", "d", "h", "m", "s", "ms"]


def parse_duration_ms(text: str) -> int:
    """Parse a Prometheus duration; units must appear largest first, each once."""
    s = text.strip()
    if s == "0":
        return 0
    pos, total, last = 0, 0, -1
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        rank = _ORDER.index(m.group(2))
        if rank <= last:
            raise ValueError(f"not a valid duration string: {text!r}")
        last = rank
        total += int(m.group(1)) * _UNITS_MS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"not a valid duration string: {text!r}")
    return total


def format_duration_ms(ms: int) -> str:
    """Prometheus' canonical form: 90000 -> "1m30s"; 0 -> "0s"."""
    if ms == 0:
        return "0s"
    out = []
    for unit in _ORDER:
        size = _UNITS_MS[unit]
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)
