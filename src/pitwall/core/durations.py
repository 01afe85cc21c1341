"""Prometheus duration strings ("1h30m", "15s", "2d", "500ms") <-> milliseconds.

One implementation for every settings tree and Prometheus-family config
format (pitwall.yaml, scrape configs, rule files, Alertmanager configs), with
Prometheus' own error texts (``model.ParseDuration``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

NS_PER_MS = 1_000_000  # stores keep nanoseconds (logs, spans), APIs and settings milliseconds

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
             "y": 31_536_000_000}
_ORDER = ["y", "w", "d", "h", "m", "s", "ms"]
# Each unit at most once, largest first, as Prometheus' model.ParseDuration accepts.
_DURATION_RE = re.compile("".join(f"(?:(\\d+){u})?" for u in _ORDER) + r"\Z")


def parse_duration_ms(text: str) -> int:
    """Parse a Prometheus duration into milliseconds; ``ValueError`` with Prometheus' message."""
    if text == "":
        raise ValueError("empty duration string")
    if text == "0":
        return 0
    m = _DURATION_RE.match(text)
    if m is None or not any(m.groups()):
        raise ValueError(f'not a valid duration string: "{text}"')
    return sum(int(g) * _UNITS_MS[u] for g, u in zip(m.groups(), _ORDER, strict=True) if g is not None)


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


def _duration_field(v: Any) -> Any:
    if isinstance(v, str):
        return parse_duration_ms(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f'not a valid duration string: "{v}"')
    return v


# A settings field holding milliseconds, written as a duration string (an int is taken as ms).
DurationMs = Annotated[int, BeforeValidator(_duration_field), Field(ge=0)]
