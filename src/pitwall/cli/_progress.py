"""A one-line progress bar on stderr for long commands (``pitwall backup self``).

Shown when stderr is a terminal (``--progress`` forces it, ``--no-progress`` hides it); redrawn in place
with a carriage return and cleared when the command finishes, so output through a pipe stays clean.
"""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["ProgressLine", "bar", "human_bytes"]

WIDTH = 24  # characters of the bar


def human_bytes(n: float) -> str:
    """``1.5 GiB``, ``640 KiB``, ``12 B``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def bar(fraction: float | None, label: str, detail: str = "") -> str:
    """``[#########---------------]  37% label  detail``; an unknown fraction draws no bar."""
    if fraction is None:
        return f"{label}  {detail}".rstrip()
    f = min(max(fraction, 0.0), 1.0)
    filled = round(f * WIDTH)
    return f"[{'#' * filled}{'-' * (WIDTH - filled)}] {f * 100:3.0f}% {label}  {detail}".rstrip()


class ProgressLine:
    """Draws ``bar(...)`` lines over each other on ``stream``; ``enabled=None`` means "if it is a terminal"."""

    def __init__(self, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._width = 0

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        pad = max(self._width - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def done(self) -> None:
        """Clear the line (the command's own result follows)."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
