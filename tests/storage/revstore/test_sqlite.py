"""What only the embedded backend has: a data file that survives restarts and kill -9, one owner."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

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


@pytest.mark.timeout(60)
async def test_the_revision_survives_a_restart_after_compacting_away_a_delete(tmp_path: Path) -> None:
    """Commits do not write the revision down: it is the newest history row's, or meta's after a compaction."""
    path = tmp_path / "state.db"
    s = SqliteRevStore(path, compact_interval_s=None)
    await s.start()
    await s.put("/a", b"1")
    await s.put("/b", b"2")
    await s.delete("/a")
    await s.delete("/b")
    rev = await s.revision()
    await s.compact(rev)  # every row at or below it goes: both keys are deleted
    await s.stop()
    s = SqliteRevStore(path, compact_interval_s=None)
    await s.start()
    try:
        assert await s.revision() == rev
        assert (await s.range("/")).revision == rev
        assert (await s.put("/c", b"3")).mod_revision == rev + 1
    finally:
        await s.stop()


_OLD_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE kv_history (
    rev INTEGER NOT NULL, sub INTEGER NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
    create_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL,
    deleted INTEGER NOT NULL, PRIMARY KEY (rev, sub));
CREATE INDEX kv_history_key ON kv_history (key, rev);
CREATE TABLE kv_current (
    key BLOB PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL,
    version INTEGER NOT NULL, lease INTEGER NOT NULL);
CREATE TABLE leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL);
INSERT INTO meta VALUES ('revision', 4), ('compact_revision', 2);
INSERT INTO kv_history VALUES (2, 0, CAST('/a' AS BLOB), CAST('a1' AS BLOB), 2, 1, 0, 0),
    (3, 0, CAST('/a' AS BLOB), CAST('a2' AS BLOB), 2, 2, 0, 0),
    (3, 1, CAST('/b' AS BLOB), CAST('b1' AS BLOB), 3, 1, 0, 0),
    (4, 0, CAST('/b' AS BLOB), x'', 0, 0, 0, 1);
INSERT INTO kv_current VALUES (CAST('/a' AS BLOB), CAST('a2' AS BLOB), 2, 3, 2, 0);
"""


@pytest.mark.timeout(60)
async def test_a_store_with_the_old_history_key_is_moved_over(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "state.db"
    with sqlite3.connect(path) as old:
        old.executescript(_OLD_SCHEMA)
    s = SqliteRevStore(path, compact_interval_s=None)
    await s.start()
    try:
        assert await s.revision() == 4
        a = await s.get("/a")
        assert a is not None and (a.value, a.create_revision, a.mod_revision, a.version) == (b"a2", 2, 3, 2)
        at3 = await s.range("/", revision=3)
        assert [(kv.key, kv.value, kv.mod_revision) for kv in at3.kvs] == [("/a", b"a2", 3), ("/b", b"b1", 3)]
        assert [kv.value for kv in (await s.range("/", revision=2)).kvs] == [b"a1"]
        with pytest.raises(Compacted):
            await s.range("/", revision=1)
        watch = s.watch("/", start_revision=3, prev_kv=True)
        batches = [await asyncio.wait_for(anext(watch), 20) for _ in range(2)]
        await watch.aclose()  # type: ignore[attr-defined]
        assert [[(e.type, e.kv.key, e.kv.mod_revision) for e in b] for b in batches] == [
            [("PUT", "/a", 3), ("PUT", "/b", 3)], [("DELETE", "/b", 4)]]
        assert batches[1][0].prev_kv is not None and batches[1][0].prev_kv.value == b"b1"
        assert (await s.put("/a", b"a3")).mod_revision == 5
    finally:
        await s.stop()
    with sqlite3.connect(path) as moved:
        assert [r[1] for r in moved.execute("PRAGMA table_info(kv_history)")][:2] == ["id", "key"]


@pytest.mark.timeout(60)
async def test_a_prefix_delete_over_the_per_revision_limit_changes_nothing(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from pitwall.storage.revstore import sqlite as backend

    monkeypatch.setattr(backend, "_MAX_SUB", 3)
    s = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await s.start()
    try:
        for i in range(4):
            await s.put(f"/p/{i}", b"v")
        rev = await s.revision()
        with pytest.raises(RevStoreError, match="at most 3 keys"):
            await s.delete("/p/", prefix=True)
        assert await s.revision() == rev
        assert len((await s.range("/p/")).kvs) == 4
        assert len(await s.delete("/p/0")) == 1  # the store goes on
    finally:
        await s.stop()


async def _consume(watch: Any, order: list[str]) -> list[Event]:
    got: list[Event] = await anext(watch)
    order.append("watcher")  # in the same task step that received the batch
    return got


@pytest.mark.timeout(60)
async def test_an_answer_first_writer_resumes_before_the_watchers_see_its_write(tmp_path: Path) -> None:
    s = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await s.start()
    try:
        for hint in (False, True):
            order: list[str] = []
            watch = s.watch(f"/{hint}/")

            first = asyncio.ensure_future(_consume(watch, order))
            for _ in range(100):  # until the watch has subscribed
                await asyncio.sleep(0)
            await s.txn([], [Op.put(f"/{hint}/k", b"v")], answer_first=hint)
            order.append("writer")
            batch = await asyncio.wait_for(first, 10)
            await watch.aclose()  # type: ignore[attr-defined]
            assert [e.kv.key for e in batch] == [f"/{hint}/k"]  # offered either way
            assert order == (["writer", "watcher"] if hint else ["watcher", "writer"])
    finally:
        await s.stop()
