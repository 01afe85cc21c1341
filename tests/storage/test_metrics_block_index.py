"""Sealed metric blocks' persisted index: start-up reads it instead of the block's rows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pitwall.core.labels import Labels, Matcher
from pitwall.metrics.model import SampleBatch
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore, blockindex

pytestmark = pytest.mark.timeout(60)

UP_A: Labels = (("__name__", "up"), ("instance", "a"))
UP_B: Labels = (("__name__", "up"), ("instance", "b"))
UP_C: Labels = (("__name__", "up"), ("instance", "c"))


def _store(path: Path, **kw: Any) -> MetricStore:
    return MetricStore(TelemetryDB(path / "t.duckdb"), path / "wal", fsync=False, block_ms=10_000, **kw)


def _index_dir(path: Path) -> Path:
    return path / "t.duckdb.metrics-index"


def _select(store: MetricStore) -> dict[Labels, list[tuple[int, float]]]:
    res = store.querier().select([Matcher.of("=", "__name__", "up")], 0, 10**12)
    return {s.labels: list(zip(s.ts.tolist(), s.values.tolist(), strict=True)) for s in res}


async def _two_sealed_blocks(path: Path) -> MetricStore:
    """Blocks 0 and 10000 written in one flush each and sealed; returns the running store."""
    st = _store(path)
    await st.start()
    await st.append("default", SampleBatch.from_rows(
        [(UP_A, t, float(t)) for t in range(0, 20_000, 1000)] + [(UP_B, t, -float(t)) for t in range(5000, 15_000, 500)]))
    await st.flush()
    st.compact(now_ms=10**12)
    return st


async def _restart(st: MetricStore, path: Path) -> MetricStore:
    await st.stop()
    st.db.close()
    st = _store(path)
    await st.start()
    return st


class _Summaries:
    """Counts the rows start-up reads from block tables (``blockindex.summarize`` calls)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows: list[tuple[int, int]] = []  # (first row, rows) per call
        real = blockindex.summarize

        def spy(sid: np.ndarray, ts: np.ndarray, val: np.ndarray, base: int = 0) -> blockindex.Summary:
            self.rows.append((base, len(sid)))
            return real(sid, ts, val, base)

        monkeypatch.setattr(blockindex, "summarize", spy)


async def test_sealed_blocks_open_from_their_index_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = await _two_sealed_blocks(tmp_path)
    want = _select(st)
    index = {k: (b.index.keys.tolist(), b.index.lo.tolist(), b.index.hi.tolist()) for k, b in st.blocks.by_start.items()}
    assert sorted(p.name for p in _index_dir(tmp_path).iterdir()) == [
        "metrics_samples_0.0.idx", "metrics_samples_10000.0.idx"]
    spy = _Summaries(monkeypatch)
    st = await _restart(st, tmp_path)
    assert spy.rows == []  # no block table was read
    assert {k: (b.index.keys.tolist(), b.index.lo.tolist(), b.index.hi.tolist())
            for k, b in st.blocks.by_start.items()} == index
    assert _select(st) == want
    # The newest samples came back from the files: appending at or before them is refused.
    assert st._last_ts[st.lookup("default", UP_A)] == 19_000  # type: ignore[index]
    assert st._min_ts[st.lookup("default", UP_B)] == 5000  # type: ignore[index]
    await st.stop()


async def test_a_corrupt_or_missing_index_file_is_rebuilt_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    st = await _two_sealed_blocks(tmp_path)
    want = _select(st)
    await st.stop()
    st.db.close()
    f0 = _index_dir(tmp_path) / "metrics_samples_0.0.idx"
    raw = bytearray(f0.read_bytes())
    raw[40] ^= 0xFF
    f0.write_bytes(bytes(raw))
    (_index_dir(tmp_path) / "metrics_samples_10000.0.idx").unlink()
    caplog.set_level(logging.INFO, logger="pitwall.storage.metrics.blocks")
    st = _store(tmp_path)
    await st.start()
    reasons = {r.table: r.reason for r in caplog.records if r.getMessage().startswith("metrics block index")}  # type: ignore[attr-defined]
    assert reasons == {"metrics_samples_0": "index file checksum mismatch", "metrics_samples_10000": "no index file"}
    assert _select(st) == want
    st.compact(now_ms=10**12)  # the next maintenance pass writes both again
    assert blockindex.load(_index_dir(tmp_path), "metrics_samples_0", 0, 10**9)[0] is not None
    assert (_index_dir(tmp_path) / "metrics_samples_10000.0.idx").exists()
    await st.stop()


async def test_a_run_flushed_after_the_file_is_read_from_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = await _two_sealed_blocks(tmp_path)
    # A new series may still write into a sealed block: a second run after the file.
    await st.append("default", SampleBatch.from_rows([(UP_C, 3000, 7.0), (UP_C, 4000, 8.0)]))
    await st.flush()
    want = _select(st)
    assert want[UP_C] == [(3000, 7.0), (4000, 8.0)]
    await st.stop()
    st.db.close()
    spy = _Summaries(monkeypatch)
    st = _store(tmp_path)
    await st.start()
    assert spy.rows == [(20, 2)]  # block 0: 10 rows of A and 10 of B from the file, C's 2 rows from the table
    assert _select(st) == want
    await st.stop()


async def test_compaction_moves_the_index_to_a_new_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = _store(tmp_path)
    await st.start()
    for lo in (0, 5000):  # two runs into block 0: fragmented
        await st.append("default", SampleBatch.from_rows(
            [(s, t, float(t)) for s in (UP_A, UP_B) for t in range(lo, lo + 5000, 1000)]))
        await st.flush()
    assert st.compact(now_ms=10**12) == ["metrics_samples_0"]
    assert [p.name for p in _index_dir(tmp_path).iterdir()] == ["metrics_samples_0.1.idx"]
    want = _select(st)
    spy = _Summaries(monkeypatch)
    st = await _restart(st, tmp_path)
    assert spy.rows == []
    assert st.blocks.by_start[0].generation == 1 and not st.blocks.by_start[0].index.fragmented()
    assert _select(st) == want
    await st.stop()


async def test_a_compaction_cut_short_leaves_the_old_generation_in_use(tmp_path: Path) -> None:
    st = await _two_sealed_blocks(tmp_path)
    want = _select(st)
    await st.stop()
    st.db.close()
    # As if a compaction wrote its file and died before its swap committed.
    stray = _index_dir(tmp_path) / "metrics_samples_0.1.idx"
    stray.write_bytes(b"garbage")
    st = _store(tmp_path)
    await st.start()
    assert not stray.exists()
    assert st.blocks.by_start[0].persisted_rows == 20
    assert _select(st) == want
    await st.stop()


async def test_retention_removes_a_block_and_its_index_file(tmp_path: Path) -> None:
    st = await _two_sealed_blocks(tmp_path)
    st.retention_ms = 10_000
    assert st.apply_retention(now_ms=20_000) == ["metrics_samples_0"]
    assert [p.name for p in _index_dir(tmp_path).iterdir()] == ["metrics_samples_10000.0.idx"]
    st = await _restart(st, tmp_path)
    assert sorted(st.blocks.by_start) == [10_000]
    await st.stop()
