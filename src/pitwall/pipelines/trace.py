"""A job's log: masked, capped, written to its trace file and handed on in lines (to the log store)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["MASK", "TraceWriter"]

MASK = "[MASKED]"
MAX_LINE = 64 << 10  # a line without a newline is cut here
KEEP_LINES = 1000  # the last lines, for the coverage regex


class TraceWriter:
    """Takes the process's output in chunks; writes whole masked lines until ``limit`` bytes, then a note.

    Masking works on whole lines, so a secret split across two reads is still masked; a partial line
    longer than ``MAX_LINE`` is cut, keeping enough of its tail that a secret across the cut is masked."""

    def __init__(self, path: Path, masks: list[str], limit: int, on_lines: Callable[[list[str]], None]) -> None:
        self.path = path
        self.masks = sorted({m for m in masks if m}, key=len, reverse=True)
        self.limit = limit
        self.on_lines = on_lines
        self.written = 0
        self.capped = False
        self._buf = b""
        self._keep = max((len(m.encode()) for m in self.masks), default=0)
        self._f = path.open("ab")
        self.lines_seen: list[str] = []

    def mask(self, text: str) -> str:
        for m in self.masks:
            text = text.replace(m, MASK)
        return text

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        lines: list[str] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            lines.append(self._buf[:nl].decode("utf-8", "replace"))
            self._buf = self._buf[nl + 1:]
        if len(self._buf) > MAX_LINE:
            cut = len(self._buf) - self._keep
            lines.append(self._buf[:cut].decode("utf-8", "replace"))
            self._buf = self._buf[cut:]
        if lines:
            self._emit(lines)

    def line(self, text: str) -> None:
        """A line of the runner's own (section headers, the verdict)."""
        self._emit([text])

    def close(self) -> None:
        if self._buf:
            self._emit([self._buf.decode("utf-8", "replace")])
            self._buf = b""
        self._f.close()

    def _emit(self, lines: list[str]) -> None:
        if self.capped:
            return
        out: list[str] = []
        for raw in lines:
            text = self.mask(raw.rstrip("\r"))
            size = len(text.encode()) + 1
            if self.written + size > self.limit:
                self.capped = True
                note = (f"Job's log exceeded limit of {self.limit} bytes.\n"
                        "Job execution will continue but no more output will be collected.")
                out.extend(note.split("\n"))
                self._f.write((note + "\n").encode())
                break
            self.written += size
            self._f.write((text + "\n").encode())
            out.append(text)
        self.lines_seen.extend(out)
        del self.lines_seen[:-KEEP_LINES]
        self._f.flush()
        if out:
            self.on_lines(out)
