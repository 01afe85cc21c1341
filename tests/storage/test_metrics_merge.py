"""``merge.gather_few`` (the head read of a few series) against the general ``gather_head`` + ``place``."""

from __future__ import annotations

import numpy as np
import pytest

from pitwall.storage.metrics import merge
from pitwall.storage.metrics.merge import Chunk, gather_few, gather_head, place

pytestmark = pytest.mark.timeout(60)


def _chunks(rng: np.random.Generator, n_sids: int, spread: int = 1) -> list[Chunk]:
    """Head-like chunks: rows grouped by sid, times increasing per sid across chunks too."""
    last = np.zeros(n_sids, dtype=np.int64)
    out = []
    for _ in range(int(rng.integers(1, 5))):
        sids = np.sort(rng.choice(n_sids, size=int(rng.integers(1, n_sids + 1)), replace=False))
        s, t = [], []
        for sid in sids.tolist():
            steps = np.cumsum(rng.integers(1, 50, size=int(rng.integers(1, 8))))
            times = last[sid] + steps
            last[sid] = times[-1]
            s += [sid] * len(times)
            t += times.tolist()
        out.append(Chunk(np.array(s, dtype=np.int64) * spread + 1000, np.array(t, dtype=np.int64) + 10**12,
                         rng.normal(size=len(s))))
    return out


def _general(chunks: list[Chunk], sids: np.ndarray, start: int, end: int) -> tuple[np.ndarray, ...]:
    parts = [p for c in chunks if (p := gather_head(c, sids, start, end)) is not None]
    rank = np.zeros(int(sids.max()) + 2000, dtype=np.int64)
    rank[sids] = np.arange(len(sids))
    return place(parts, rank, len(sids))


@pytest.fixture(params=["c", "python"])
def few_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``gather_few`` through the C helper, then through the Python loop."""
    if request.param == "c" and merge._metricsc is None:
        pytest.skip("C helper not built")
    if request.param == "python":
        monkeypatch.setattr(merge, "_metricsc", None)
    return str(request.param)


@pytest.mark.parametrize("spread", [1, 200])  # sids dense (an index of row starts) or sparse (searched)
def test_gather_few_agrees_with_the_general_path(few_path: str, spread: int) -> None:
    rng = np.random.default_rng(3)
    sparse = 0
    for _ in range(300):
        chunks = _chunks(rng, 12, spread)
        # Wanted sids in any order, some absent from every chunk (below, inside and above their range).
        sids = rng.choice(np.arange(995, 1020), size=int(rng.integers(1, 8)), replace=False).astype(np.int64)
        sids = (sids - 1000) * spread + 1000
        sparse += sum(c.sid_starts()[1] is None for c in chunks)
        start = 10**12 + int(rng.integers(-20, 150))
        end = start + int(rng.integers(-1, 200))
        seen: list[int] = []
        got = gather_few(chunks, sids, start, end, seen.append)
        assert got is not None
        want = _general(chunks, sids, start, end)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.tolist() == w.tolist()
            assert g.flags.writeable  # a copy the reader owns, never a view of the head
        assert sum(seen) == int(want[0].sum())
        assert all(seen)  # told only of chunks with samples
    assert (sparse > 0) == (spread > 1)


def test_gather_few_stops_when_the_account_refuses(few_path: str) -> None:
    class Enough(Exception):
        pass

    def refuse(n: int) -> None:
        raise Enough

    chunks = [Chunk(np.array([1, 1, 2], dtype=np.int64), np.array([10, 20, 10], dtype=np.int64), np.ones(3))]
    with pytest.raises(Enough):
        gather_few(chunks, np.array([2, 1], dtype=np.int64), 0, 100, refuse)
    got = gather_few(chunks, np.array([2, 1, 7], dtype=np.int64), 15, 100)
    assert got is not None and [a.tolist() for a in got] == [[0, 1, 0], [20], [1.0]]


def test_gather_few_with_a_chunk_whose_key_would_overflow(few_path: str) -> None:
    c = Chunk(np.array([0, 2**40], dtype=np.int64), np.array([0, 2**40], dtype=np.int64), np.arange(2.0))
    got = gather_few([c], np.array([2**40, 0], dtype=np.int64), 0, 2**41)
    if few_path == "python":
        assert got is None  # the caller reads by the general path
    else:  # too sparse for the row index: found by binary search
        assert got is not None and [a.tolist() for a in got] == [[1, 1], [2**40, 0], [1.0, 0.0]]
