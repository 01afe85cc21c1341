"""The metrics store's head: samples applied but not yet flushed into blocks.

Contract: the head is a list of ``Chunk`` s, each grouped by sid and
time-ordered within a sid; for any sid, later chunks hold later samples. It
keeps O(log n) chunks by merging the newest into the one before while that
one is no bigger (a binary counter), so a read gathers from few chunks and
each sample is merged O(log n) times. A flush freezes a prefix of the chunks,
writes them elsewhere and then drops them; appends meanwhile go after the
frozen prefix and are never merged into it. All methods are thread-safe.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from pitwall.storage.metrics.merge import Chunk

__all__ = ["Head"]


class Head:
    """Unflushed samples in a few sorted chunks."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self._frozen = 0  # chunks[:frozen] are being flushed
        self._lock = threading.Lock()
        self.samples = 0
        self.since = time.monotonic()  # when the oldest unflushed sample arrived (about)

    def add(self, s: np.ndarray, t: np.ndarray, v: np.ndarray) -> None:
        """Append validated samples sorted by (sid, ts), all newer than the head's per sid."""
        with self._lock:
            if not self.chunks or self.samples == 0:
                self.since = time.monotonic()
            self.chunks.append(Chunk(s, t, v))
            self.samples += len(s)
            self._merge_tail_locked()

    def _merge_tail_locked(self) -> None:
        """Merge the newest chunk into the one before while that one is no bigger.

        Merging keeps each sid's samples in time order: the newer chunk's come after.
        """
        ch = self.chunks
        while len(ch) - self._frozen >= 2 and len(ch[-2]) <= len(ch[-1]):
            a, b = ch[-2], ch[-1]
            sid = np.concatenate([a.sid, b.sid])
            order = np.argsort(sid, kind="stable")  # two sorted runs: a linear merge
            ch[-2:] = [Chunk(sid[order], np.concatenate([a.ts, b.ts])[order],
                             np.concatenate([a.val, b.val])[order])]

    def snapshot(self) -> list[Chunk]:
        """The chunks now (chunks are never changed in place, only replaced)."""
        with self._lock:
            return list(self.chunks)

    def freeze(self) -> list[Chunk] | None:
        """Freeze the chunks now in the head for a flush; None while another flush holds some."""
        with self._lock:
            if self._frozen:
                return None
            self._frozen = len(self.chunks)
            return self.chunks[: self._frozen]

    def thaw(self) -> None:
        """A flush gave up: its chunks stay and may be merged again."""
        with self._lock:
            self._frozen = 0

    def drop_frozen(self, n: int) -> None:
        """A flush wrote the first ``n`` chunks: drop them."""
        with self._lock:
            del self.chunks[:n]
            self._frozen = 0
            self.samples = sum(len(c) for c in self.chunks)
            self.since = time.monotonic()
