from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pitwall.core.wal import Wal, WalCorruption


async def test_append_replay_roundtrip(tmp_path: Path) -> None:
    wal = Wal(tmp_path, fsync=False)
    wal.open_for_append()
    await asyncio.gather(*(wal.append(1, f"rec{i}".encode()) for i in range(50)))
    await wal.close()
    got = [r.payload for r in Wal(tmp_path).replay()]
    assert got == [f"rec{i}".encode() for i in range(50)]


async def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    wal = Wal(tmp_path, fsync=True)
    wal.open_for_append()
    await asyncio.gather(*(wal.append(1, b"x" * 100) for _ in range(200)))
    await wal.close()
    assert wal.fsyncs < 200


async def test_torn_tail_is_truncated(tmp_path: Path) -> None:
    wal = Wal(tmp_path, fsync=False)
    wal.open_for_append()
    await wal.append(1, b"complete")
    await wal.append(2, b"torn-record-payload")
    await wal.close()
    seg = sorted(tmp_path.glob("*.wal"))[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[:-5])
    recs = list(Wal(tmp_path).replay())
    assert [r.payload for r in recs] == [b"complete"]
    # The torn bytes are gone: a new writer appends after the intact prefix.
    assert seg.stat().st_size == len(data) - 9 - len(b"torn-record-payload")


async def test_corruption_in_older_segment_raises(tmp_path: Path) -> None:
    wal = Wal(tmp_path, fsync=False)
    wal.open_for_append()
    await wal.append(1, b"first")
    seg = await wal.rotate()
    await wal.append(1, b"second")
    await wal.close()
    first = tmp_path / f"{seg - 1:08d}.wal"
    raw = bytearray(first.read_bytes())
    raw[-1] ^= 0xFF
    first.write_bytes(bytes(raw))
    with pytest.raises(WalCorruption):
        list(Wal(tmp_path).replay())


async def test_rotate_and_remove_before(tmp_path: Path) -> None:
    wal = Wal(tmp_path, fsync=False)
    wal.open_for_append()
    await wal.append(1, b"a")
    seg = await wal.rotate()
    await wal.append(1, b"b")
    assert wal.remove_before(seg) == 1
    await wal.close()
    assert [r.payload for r in Wal(tmp_path).replay()] == [b"b"]


async def test_segments_roll_over_by_size(tmp_path: Path) -> None:
    wal = Wal(tmp_path, fsync=False, segment_bytes=100)
    wal.open_for_append()
    for i in range(10):
        await wal.append(1, bytes([i]) * 40)
    await wal.close()
    assert len(wal.segments()) > 3
    assert [r.payload[0] for r in Wal(tmp_path).replay()] == list(range(10))
