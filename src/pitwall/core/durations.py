"""Prometheus duration strings ("1h30m", "15s", "2d", "500ms") <-> milliseconds, and Go's
``time.ParseDuration`` in nanoseconds (LogQL, Jaeger, TraceQL).

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


_GO_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
    "d": 86400 * 1_000_000_000,
    "w": 7 * 86400 * 1_000_000_000,
    "y": 365 * 86400 * 1_000_000_000,
}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w|y)")


def parse_duration_ns(text: str, *, go_only: bool = False) -> int:
    """Nanoseconds in a Go duration (``1h30m``, ``1.5s``, ``-2ms``); d/w/y unless ``go_only``.

    Raises ``ValueError`` with Go's wording on malformed input.
    """
    s = text
    sign = 1
    if s and s[0] in "+-":  # s[:1] of "" is "", which `in` any string holds
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _GO_PART.match(s, pos)
        if m is None or (go_only and m.group(2) in ("d", "w", "y")):
            if re.match(r"(\d+(?:\.\d*)?|\.\d+)$", s[pos:]):
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _GO_UNIT_NS[m.group(2)]
        pos = m.end()
    return sign * round(total)


def short_age(seconds: float) -> str:
    """kubectl's short age of a duration: ``42s``, ``5m``, ``3h``, ``2d`` (never negative)."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"
