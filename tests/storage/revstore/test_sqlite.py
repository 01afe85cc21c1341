"""What only the embedded backend has: a data file that survives restarts and kill -9, one owner."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pitwall.storage.revstore import Compacted, Event, LeaseNotFound, Op, RevStoreError
from pitwall.storage.revstore.sqlite import SqliteRevStore


@pytest.mark.timeout(60)
async def test_restart_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    s = SqliteRevStore(path, compact_interval_s=None)
    await s.start()
    a1 = await s.put("/a", b"1")
    a2 = await s.put("/a", b"2")
    await s.put("/b", b"x")
    await s.delete("/b")
    lease = await s.grant(30)
    await s.put("/leased", b"l", lease=lease)
    await s.compact(a2.mod_revision)
    rev = await s.revision()
    await s.stop()

    s = SqliteRevStore(path, compact_interval_s=None)
    await s.start()
    try:
        assert await s.revision() == rev
        assert await s.get("/a") == a2
        assert await s.get("/b") is None
        assert await s.get("/a", revision=a2.mod_revision) == a2
        with pytest.raises(Compacted):
            await s.get("/a", revision=a1.mod_revision)
        assert await s.keepalive(lease) == 30  # leases come back with a full TTL
        nxt = await s.put("/c", b"")
        assert nxt.mod_revision == rev + 1
        watch = s.watch("/", start_revision=a2.mod_revision)
        events: list[Event] = []
        while len(events) < 5:
            events.extend(await asyncio.wait_for(anext(watch), 20))
        await watch.aclose()  # type: ignore[attr-defined]
        assert [e.kv.mod_revision for e in events] == list(range(a2.mod_revision, nxt.mod_revision + 1))
    finally:
        await s.stop()


@pytest.mark.timeout(60)
async def test_one_process_per_database(tmp_path: Path) -> None:
    first = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await first.start()
    try:
        with pytest.raises(RevStoreError, match="in use"):
            await SqliteRevStore(tmp_path / "state.db").start()
    finally:
        await first.stop()
    again = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await again.start()
    await again.stop()


@pytest.mark.timeout(60)
async def test_periodic_compaction(tmp_path: Path) -> None:
    s = SqliteRevStore(tmp_path / "state.db", compact_interval_s=0.2)
    await s.start()
    try:
        first = await s.put("/k", b"0")
        for i in range(5):
            await s.put("/k", str(i).encode())
        for _ in range(200):  # two intervals later the first revisions are gone
            try:
                await s.get("/k", revision=first.mod_revision)
            except Compacted:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("history was never compacted")
        assert (await s.get("/k")).value == b"4"  # type: ignore[union-attr]
    finally:
        await s.stop()


@pytest.mark.timeout(60)
async def test_a_lease_expires_after_restart(tmp_path: Path) -> None:
    s = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await s.start()
    lease = await s.grant(1)
    await s.put("/eph", b"", lease=lease)
    await s.stop()
    s = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await s.start()
    try:
        for _ in range(200):
            if await s.get("/eph") is None:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the key of an expired lease survived")
    finally:
        await s.stop()


_WRITER = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from pitwall.storage.revstore.sqlite import SqliteRevStore

    async def main() -> None:
        s = SqliteRevStore(Path(sys.argv[1]), compact_interval_s=None)
        await s.start()

        async def write(j: int) -> None:
            i = 0
            while True:
                kv = await s.put(f"/k/{j}/{i:06d}", b"v" * 200)
                sys.stdout.write(f"{j} {i} {kv.mod_revision}\\n")
                sys.stdout.flush()
                i += 1

        await asyncio.gather(*(write(j) for j in range(4)))

    asyncio.run(main())
""")


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    acked: list[tuple[int, int, int]] = []
    try:
        while len(acked) < 300:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
            assert line, "the writer died"
            j, i, rev = map(int, line.split())
            acked.append((j, i, rev))
        os.kill(proc.pid, signal.SIGKILL)  # mid-write: four writers keep the group commit busy
        proc.wait()
        for line in proc.stdout.read().splitlines():  # acknowledged before the kill, still in the pipe
            j, i, rev = map(int, line.split())
            acked.append((j, i, rev))
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()

    s = SqliteRevStore(path, compact_interval_s=None)
    await s.start()
    try:
        for j, i, rev in acked:
            kv = await s.get(f"/k/{j}/{i:06d}")
            assert kv is not None and kv.mod_revision == rev, (j, i, rev)
        assert await s.revision() >= max(rev for _, _, rev in acked)
        assert len({rev for _, _, rev in acked}) == len(acked)
    finally:
        await s.stop()


@pytest.mark.timeout(60)
async def test_online_backup(tmp_path: Path) -> None:
    s = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await s.start()
    try:
        for i in range(50):
            await s.put(f"/k/{i}", b"v")
        writes = asyncio.gather(*(s.put(f"/during/{i}", b"v") for i in range(50)))
        rev = await s.backup(tmp_path / "copy" / "state.db")
        await writes
    finally:
        await s.stop()
    copy = SqliteRevStore(tmp_path / "copy" / "state.db", compact_interval_s=None)
    await copy.start()
    try:
        assert await copy.revision() == rev >= 50
        assert (await copy.range("/k/")).count == 50
        assert len((await copy.range("/")).kvs) == rev  # one key per revision, nothing torn
    finally:
        await copy.stop()


@pytest.mark.timeout(60)
async def test_a_lone_failing_write_leaves_nothing(tmp_path: Path) -> None:
    """A write alone in its commit runs without a savepoint: its failure rolls the whole transaction back,
    and the next write still gets the next revision, with a watcher seeing exactly the writes that held."""
    s = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await s.start()
    try:
        await s.put("/a", b"1")
        events = s.watch("/", start_revision=1)
        with pytest.raises(LeaseNotFound):
            await s.txn([], [Op.put("/b", b"x"), Op.put("/c", b"y", lease=999)])  # fails on its second op
        assert await s.get("/b") is None and await s.revision() == 1
        kv = await s.put("/d", b"2")
        assert kv.mod_revision == 2
        seen = [[(e.kv.key, e.kv.mod_revision) for e in await anext(events)] for _ in range(2)]
        assert seen == [[("/a", 1)], [("/d", 2)]]
    finally:
        await s.stop()
    s = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await s.start()
    try:
        assert await s.revision() == 2 and [kv.key for kv in (await s.range("/")).kvs] == ["/a", "/d"]
    finally:
        await s.stop()
