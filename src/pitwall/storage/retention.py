"""The one retention rule of every telemetry store: whole blocks, and 0 keeps everything."""

from __future__ import annotations

from collections.abc import Iterable


def expired_blocks(starts: Iterable[int], block_len: int, retention: int, now: int) -> list[int]:
    """Start times (sorted) of the blocks that end at or before ``now - retention``.

    All values in one unit (ms or ns). ``retention`` 0 means "keep forever",
    as the stores' settings document it.
    """
    if retention <= 0:
        return []
    cutoff = now - retention
    return sorted(b for b in starts if b + block_len <= cutoff)
