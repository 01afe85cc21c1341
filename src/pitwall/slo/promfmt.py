"""Prometheus' duration text, as ``model.Duration.String()`` prints it."""

from __future__ import annotations

__all__ = ["prom_duration"]

_UNITS = (("y", 31_536_000_000, True), ("w", 604_800_000, True), ("d", 86_400_000, False),
          ("h", 3_600_000, False), ("m", 60_000, False), ("s", 1000, False), ("ms", 1, False))


def prom_duration(ms: int) -> str:
    """Prometheus' ``model.Duration.String()``: years and weeks only when exact (30d, not 4w2d)."""
    if ms == 0:
        return "0s"
    out = []
    for unit, size, exact in _UNITS:
        if exact and ms % size:
            continue
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)
