"""The one suite every RevStore backend passes (SQLite and a real etcd; see conftest)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from pitwall.storage.revstore import (
    Compacted,
    Compare,
    Event,
    FutureRevision,
    KeyValue,
    LeaseNotFound,
    Op,
    RevStore,
    RevStoreError,
    prefix_end,
)

from .conftest import WATCH_QUEUE_LIMIT, MakeStore


async def _collect(it: AsyncIterator[list[Event]], n: int, timeout: float = 20.0) -> list[Event]:
    """The next ``n`` events of a watch (batches flattened)."""
    out: list[Event] = []

    async def run() -> None:
        while len(out) < n:
            out.extend(await anext(it))

    await asyncio.wait_for(run(), timeout)
    return out


async def _aclose(it: AsyncIterator[list[Event]]) -> None:
    await it.aclose()  # type: ignore[attr-defined]


def _seen(events: list[Event]) -> list[tuple[str, str, int]]:
    return [(e.type, e.kv.key, e.kv.mod_revision) for e in events]


@pytest.mark.timeout(60)
async def test_revisions_and_versions(store: RevStore, ns: str) -> None:
    a1 = await store.put(ns + "a", b"1")
    a2 = await store.put(ns + "a", b"2")
    b1 = await store.put(ns + "b", b"x")
    assert (a1.create_revision, a1.mod_revision, a1.version) == (a1.mod_revision, a1.mod_revision, 1)
    assert (a2.create_revision, a2.mod_revision, a2.version) == (a1.mod_revision, a1.mod_revision + 1, 2)
    assert b1.mod_revision == a2.mod_revision + 1 and b1.version == 1
    assert await store.revision() == b1.mod_revision
    got = await store.get(ns + "a")
    assert got == a2 and got.value == b"2"
    assert await store.get(ns + "missing") is None
    # Deleting and re-creating starts the version again.
    [gone] = await store.delete(ns + "a")
    assert gone == a2
    a3 = await store.put(ns + "a", b"3")
    assert a3.version == 1 and a3.create_revision == a3.mod_revision == b1.mod_revision + 2


@pytest.mark.timeout(60)
async def test_range_prefix_limit_and_resume(store: RevStore, ns: str) -> None:
    keys = [f"{ns}items/{i:02d}" for i in range(7)]
    for k in reversed(keys):
        await store.put(k, k.encode())
    await store.put(ns + "items0", b"sibling, not under the prefix")
    await store.put(ns + "item", b"shorter, not under the prefix")
    first = await store.range(ns + "items/", limit=3)
    assert [kv.key for kv in first.kvs] == keys[:3]
    assert first.more and first.count == 7
    seen = [kv.key for kv in first.kvs]
    page = first
    for _ in range(10):
        if not page.more:
            break
        page = await store.range(ns + "items/", start=page.kvs[-1].key + "\0", limit=3,
                                 revision=first.revision)
        seen += [kv.key for kv in page.kvs]
    assert seen == keys
    everything = await store.range(ns)
    assert len(everything.kvs) == 9 and not everything.more and everything.count == 9
    assert everything.revision == await store.revision()


@pytest.mark.timeout(60)
async def test_read_at_old_revision(store: RevStore, ns: str) -> None:
    v1 = await store.put(ns + "k", b"v1")
    v2 = await store.put(ns + "k", b"v2")
    other = await store.put(ns + "other", b"o")
    await store.delete(ns + "k")
    assert await store.get(ns + "k") is None
    assert (await store.get(ns + "k", revision=v1.mod_revision)) == v1
    assert (await store.get(ns + "k", revision=v2.mod_revision)) == v2
    assert (await store.get(ns + "k", revision=other.mod_revision)) == v2
    old = await store.range(ns, revision=v2.mod_revision)
    assert [kv.value for kv in old.kvs] == [b"v2"]
    assert [kv.key for kv in (await store.range(ns, revision=other.mod_revision)).kvs] == [ns + "k", ns + "other"]
    with pytest.raises(FutureRevision):
        await store.range(ns, revision=await store.revision() + 1000)


@pytest.mark.timeout(60)
async def test_txn_create_if_absent(store: RevStore, ns: str) -> None:
    key = ns + "lock"
    absent = [Compare(key, "create", "=", 0)]
    r1 = await store.txn(absent, [Op.put(key, b"me")], [Op.get(key)])
    assert r1.succeeded and r1.results[0][0].value == b"me" and r1.results[0][0].version == 1
    assert r1.revision == r1.results[0][0].mod_revision == await store.revision()
    r2 = await store.txn(absent, [Op.put(key, b"you")], [Op.get(key)])
    assert not r2.succeeded and r2.revision == r1.revision  # a read-only branch makes no revision
    assert r2.results == [[r1.results[0][0]]]


@pytest.mark.timeout(60)
async def test_txn_update_if_unchanged(store: RevStore, ns: str) -> None:
    key = ns + "obj"
    kv = await store.put(key, b"a")
    ok = await store.txn([Compare(key, "mod", "=", kv.mod_revision)], [Op.put(key, b"b")])
    assert ok.succeeded and ok.results[0][0].version == 2
    stale = await store.txn([Compare(key, "mod", "=", kv.mod_revision)], [Op.put(key, b"c")], [Op.get(key)])
    assert not stale.succeeded and stale.results[0][0].value == b"b"
    # version, value and the other operators
    assert (await store.txn([Compare(key, "version", "=", 2)], [])).succeeded
    assert (await store.txn([Compare(key, "version", ">", 1), Compare(key, "version", "<", 3)], [])).succeeded
    assert (await store.txn([Compare(key, "value", "=", b"b")], [])).succeeded
    assert not (await store.txn([Compare(key, "value", "!=", b"b")], [])).succeeded
    assert (await store.txn([Compare(key, "value", ">", b"a")], [])).succeeded
    # A value compare on a missing key is false whatever the operator (etcd's rule).
    assert not (await store.txn([Compare(ns + "none", "value", "!=", b"x")], [])).succeeded
    assert (await store.txn([Compare(ns + "none", "version", "=", 0)], [])).succeeded


@pytest.mark.timeout(60)
async def test_txn_puts_of_compared_new_and_existing_keys(store: RevStore, ns: str) -> None:
    """One transaction puts a key it compared, one it compared as absent, a new key and an existing key it did
    not compare (a Consul write's value, history record and change event are such keys): each gets its right
    create revision, version and previous value, in the results and on a watch."""
    seen = await store.put(ns + "seen", b"s1")
    other = await store.put(ns + "other", b"o1")
    w = store.watch(ns, start_revision=other.mod_revision + 1, prev_kv=True)
    try:
        r = await store.txn([Compare(ns + "seen", "mod", "=", seen.mod_revision), Compare(ns + "gone", "create", "=", 0)],
                            [Op.put(ns + "seen", b"s2"), Op.put(ns + "gone", b"g1"), Op.put(ns + "new", b"n1"),
                             Op.put(ns + "other", b"o2")])
        assert r.succeeded
        rev = r.revision
        got = {kv[0].key[len(ns):]: (kv[0].value, kv[0].create_revision, kv[0].version) for kv in r.results}
        assert got == {"seen": (b"s2", seen.create_revision, 2), "gone": (b"g1", rev, 1), "new": (b"n1", rev, 1),
                       "other": (b"o2", other.create_revision, 2)}
        events = await _collect(w, 4)
    finally:
        await _aclose(w)
    prev = {e.kv.key[len(ns):]: None if e.prev_kv is None else e.prev_kv.value for e in events}
    assert prev == {"seen": b"s1", "gone": None, "new": None, "other": b"o1"}
    assert {e.kv.key: e.kv for e in events} == {kv[0].key: kv[0] for kv in r.results}
    for key, (value, create, version) in got.items():
        assert await store.get(ns + key) == KeyValue(ns + key, value, create, rev, version)


@pytest.mark.timeout(60)
async def test_txn_writes_share_one_revision(store: RevStore, ns: str) -> None:
    await store.put(ns + "old/1", b"1")
    await store.put(ns + "old/2", b"2")
    r = await store.txn([], [Op.put(ns + "new", b"n"), Op.delete(ns + "old/", prefix=True), Op.get(ns, prefix=True)])
    assert r.succeeded
    assert [kv.key for kv in r.results[1]] == [ns + "old/1", ns + "old/2"]
    assert [kv.key for kv in r.results[2]] == [ns + "new"]
    assert r.results[0][0].mod_revision == r.revision == await store.revision()
    with pytest.raises(RevStoreError):
        await store.txn([], [Op.put(ns + "x", b"1"), Op.put(ns + "x", b"2")])


@pytest.mark.timeout(60)
async def test_delete_prefix(store: RevStore, ns: str) -> None:
    for k in ("d/a", "d/b", "d/c/d", "e"):
        await store.put(ns + k, b"")
    before = await store.revision()
    gone = await store.delete(ns + "d/", prefix=True)
    assert [kv.key for kv in gone] == [ns + "d/a", ns + "d/b", ns + "d/c/d"]
    assert await store.revision() == before + 1  # one revision for all
    assert [kv.key for kv in (await store.range(ns)).kvs] == [ns + "e"]
    assert await store.delete(ns + "d/", prefix=True) == []
    assert await store.revision() == before + 1  # deleting nothing makes no revision


@pytest.mark.timeout(60)
async def test_lease_expiry_deletes_keys(store: RevStore, ns: str) -> None:
    lease = await store.grant(1)
    await store.put(ns + "ephemeral/1", b"x", lease=lease)
    await store.put(ns + "ephemeral/2", b"y", lease=lease)
    kept = await store.put(ns + "stays", b"z")
    assert (await store.get(ns + "ephemeral/1")).lease == lease  # type: ignore[union-attr]
    watch = store.watch(ns, start_revision=kept.mod_revision + 1)
    try:
        deletes = await _collect(watch, 2)
    finally:
        await _aclose(watch)
    assert {e.type for e in deletes} == {"DELETE"}
    assert len({e.kv.mod_revision for e in deletes}) == 1  # the lease's keys go in one revision
    assert [kv.key for kv in (await store.range(ns)).kvs] == [ns + "stays"]
    with pytest.raises(LeaseNotFound):
        await store.keepalive(lease)
    with pytest.raises(LeaseNotFound):
        await store.put(ns + "late", b"", lease=lease)


@pytest.mark.timeout(60)
async def test_keepalive_keeps_keys(store: RevStore, ns: str) -> None:
    lease = await store.grant(2)
    await store.put(ns + "k", b"v", lease=lease)
    end = time.monotonic() + 4
    while time.monotonic() < end:  # twice the TTL, renewed well within it
        assert await store.keepalive(lease) >= 1
        await asyncio.sleep(0.3)
    assert await store.get(ns + "k") is not None
    await store.revoke(lease)
    assert await store.get(ns + "k") is None
    with pytest.raises(LeaseNotFound):
        await store.revoke(lease)


@pytest.mark.timeout(60)
async def test_watch_from_old_revision_then_live(store: RevStore, ns: str) -> None:
    await store.put(ns + "before", b"")  # not asked for
    a = await store.put(ns + "a", b"1")
    await store.put(ns + "a", b"2")
    await store.delete(ns + "a")
    await store.put("/outside" + ns, b"")
    watch = store.watch(ns, start_revision=a.mod_revision, prev_kv=True)
    try:
        missed = await _collect(watch, 3)
        r = a.mod_revision
        assert _seen(missed) == [("PUT", ns + "a", r), ("PUT", ns + "a", r + 1), ("DELETE", ns + "a", r + 2)]
        assert missed[0].prev_kv is None
        assert missed[1].prev_kv is not None and missed[1].prev_kv.value == b"1"
        assert missed[2].prev_kv is not None and missed[2].prev_kv.value == b"2"
        assert missed[2].kv.value == b"" and missed[2].kv.version == 0
        live = await store.txn([], [Op.put(ns + "x", b"x"), Op.put(ns + "y", b"y")])
        batch = await asyncio.wait_for(anext(watch), 20)
        assert _seen(batch) == [("PUT", ns + "x", live.revision), ("PUT", ns + "y", live.revision)]
    finally:
        await _aclose(watch)


@pytest.mark.timeout(60)
async def test_watch_catch_up_to_live_boundary(store: RevStore, ns: str) -> None:
    """A watch started while writes go on sees every revision once, in order."""
    first = await store.put(ns + "k", b"0")
    n = 150

    async def writer() -> None:
        for i in range(1, n):
            await store.put(ns + f"k{i % 7}", str(i).encode())

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.05)
    watch = store.watch(ns, start_revision=first.mod_revision)
    try:
        events = await _collect(watch, n, timeout=40)
    finally:
        await _aclose(watch)
        await task
    revs = [e.kv.mod_revision for e in events]
    assert revs == list(range(first.mod_revision, first.mod_revision + n))
    assert [e.kv.value for e in events] == [str(i).encode() for i in range(n)]


@pytest.mark.timeout(60)
async def test_slow_watcher_loses_nothing(store: RevStore, ns: str) -> None:
    """A consumer far behind (more than the queue limit) still gets every event."""
    first = await store.put(ns + "k", b"first")
    watch = store.watch(ns, start_revision=first.mod_revision)
    try:
        assert _seen(await _collect(watch, 1)) == [("PUT", ns + "k", first.mod_revision)]  # live now
        n = WATCH_QUEUE_LIMIT * 6
        for i in range(n):
            await store.put(ns + "k", str(i).encode())
        await asyncio.sleep(0.2)  # let the queue overflow before consuming
        events = await _collect(watch, n)
        last = await store.put(ns + "k", b"last")
        after = await _collect(watch, 1)  # and it is live again afterwards
    finally:
        await _aclose(watch)
    assert [e.kv.value for e in events] == [str(i).encode() for i in range(n)]
    assert [e.kv.mod_revision for e in events] == list(range(first.mod_revision + 1, last.mod_revision))
    assert _seen(after) == [("PUT", ns + "k", last.mod_revision)]


@pytest.mark.timeout(60)
async def test_watch_from_now(store: RevStore, ns: str) -> None:
    watch = store.watch(ns + "w/")
    got: list[Event] = []

    async def consume() -> None:
        async for batch in watch:
            got.extend(batch)
            if any(e.kv.value == b"stop" for e in batch):
                return

    task = asyncio.create_task(consume())
    try:
        for i in range(100):  # the watch is live at some point; everything after must arrive
            await store.put(ns + "w/k", str(i).encode())
            await asyncio.sleep(0.05)
            if got:
                break
        await store.put(ns + "w/k", b"stop")
        await asyncio.wait_for(task, 20)
    finally:
        task.cancel()
        await _aclose(watch)
    revs = [e.kv.mod_revision for e in got]
    assert revs == sorted(set(revs)) and got[-1].kv.value == b"stop"


@pytest.mark.timeout(60)
async def test_compaction(store: RevStore, ns: str) -> None:
    v1 = await store.put(ns + "k", b"1")
    v2 = await store.put(ns + "k", b"2")
    await store.put(ns + "gone", b"")
    await store.delete(ns + "gone")
    v3 = await store.put(ns + "k", b"3")
    await store.compact(v2.mod_revision)
    await store.compact(v1.mod_revision)  # below the compaction point: nothing to do
    with pytest.raises(Compacted):
        await store.get(ns + "k", revision=v1.mod_revision)
    with pytest.raises(Compacted):
        await store.range(ns, revision=v1.mod_revision)
    assert (await store.get(ns + "k", revision=v2.mod_revision)) == v2  # the state at the point stays
    assert (await store.get(ns + "k")) == v3
    too_old = store.watch(ns, start_revision=v1.mod_revision)
    with pytest.raises(Compacted):
        await asyncio.wait_for(anext(too_old), 20)
    await _aclose(too_old)
    ok = store.watch(ns, start_revision=v2.mod_revision)
    try:
        events = await _collect(ok, 4)
    finally:
        await _aclose(ok)
    assert _seen(events)[0] == ("PUT", ns + "k", v2.mod_revision)
    assert _seen(events)[-1] == ("PUT", ns + "k", v3.mod_revision)


@pytest.mark.timeout(120)
async def test_concurrent_cas_loses_no_update(make_store: MakeStore, ns: str) -> None:
    stores = [await make_store() for _ in range(3)]
    key = ns + "counter"
    await stores[0].put(key, b"0")
    workers, each = 6, 15

    async def incr(s: RevStore) -> int:
        retries = 0
        for _ in range(each):
            for _attempt in range(1000):
                kv = await s.get(key)
                assert kv is not None
                r = await s.txn([Compare(key, "mod", "=", kv.mod_revision)],
                                [Op.put(key, str(int(kv.value) + 1).encode())])
                if r.succeeded:
                    break
                retries += 1
        return retries

    await asyncio.gather(*(incr(stores[i % len(stores)]) for i in range(workers)))
    final = await stores[0].get(key)
    assert final is not None and int(final.value) == workers * each
    assert final.version == workers * each + 1


@pytest.mark.timeout(60)
async def test_prefix_end() -> None:
    assert prefix_end("/registry/pods/") == "/registry/pods0"
    assert prefix_end("a") == "b"
    assert prefix_end("") == "\0"


@pytest.mark.timeout(60)
async def test_stop_ends_watches(make_store: MakeStore, ns: str) -> None:
    s = await make_store()
    watch = s.watch(ns)

    async def drain() -> int:
        n = 0
        async for batch in watch:
            n += len(batch)
        return n

    task = asyncio.create_task(drain())
    await asyncio.sleep(0.2)
    await s.stop()
    assert await asyncio.wait_for(task, 20) == 0  # ended, not hanging


@pytest.mark.timeout(60)
async def test_compacted_says_where(store: RevStore, ns: str) -> None:
    """The "too old" answer names the compaction point (Kubernetes puts it in its 410 message)."""
    v1 = await store.put(ns + "k", b"1")
    v2 = await store.put(ns + "k", b"2")
    await store.compact(v2.mod_revision)
    with pytest.raises(Compacted) as e:
        await store.get(ns + "k", revision=v1.mod_revision)
    assert e.value.requested == v1.mod_revision and e.value.compact_revision >= v2.mod_revision


@pytest.mark.timeout(60)
async def test_a_failing_write_fails_alone(store: RevStore, ns: str) -> None:
    """Writes sent together (one group commit where a backend batches) succeed or fail each on its own."""
    before = await store.revision()
    results = await asyncio.gather(
        *(store.put(f"{ns}k{i}", b"v") for i in range(5)),
        store.put(ns + "bad", b"v", lease=12345),  # no such lease
        store.txn([], [Op.put(ns + "dup", b"1"), Op.put(ns + "dup", b"2")]),  # refused
        *(store.put(f"{ns}k{i}", b"w") for i in range(5, 10)),
        return_exceptions=True)
    assert isinstance(results[5], LeaseNotFound) and isinstance(results[6], RevStoreError)
    good = [r for i, r in enumerate(results) if i not in (5, 6)]
    assert not any(isinstance(r, BaseException) for r in good)
    assert sorted(r.mod_revision for r in good) == list(range(before + 1, before + 11))  # type: ignore[union-attr]
    assert await store.get(ns + "bad") is None and await store.revision() == before + 10


@pytest.mark.timeout(60)
async def test_watchers_of_concurrent_writes_see_them_in_order(store: RevStore, ns: str) -> None:
    """Writes sent together (one group commit where a backend batches) reach a watcher asking for previous
    values and one not asking in revision order, each event once, with prev_kv only where asked."""
    base = await store.put(ns + "a/0", b"seed")
    with_prev = store.watch(ns, start_revision=base.mod_revision + 1, prev_kv=True)
    only_a = store.watch(ns + "a/", start_revision=base.mod_revision + 1)
    try:
        await asyncio.gather(
            *(store.put(ns + f"{'a' if i % 2 else 'b'}/{i % 3}", str(i).encode()) for i in range(30)),
            store.txn([], [Op.put(ns + "a/x", b"t"), Op.put(ns + "b/x", b"t"), Op.delete(ns + "a/0")]))
        everything = await _collect(with_prev, 33)
        a_events = await _collect(only_a, sum(e.kv.key.startswith(ns + "a/") for e in everything))
    finally:
        await _aclose(with_prev)
        await _aclose(only_a)
    revs = [e.kv.mod_revision for e in everything]
    assert sorted(set(revs)) == list(range(base.mod_revision + 1, base.mod_revision + 32))  # 30 puts, one txn
    assert revs == sorted(revs)
    assert [_seen([e]) for e in a_events] == [_seen([e]) for e in everything if e.kv.key.startswith(ns + "a/")]
    assert all(e.prev_kv is None for e in a_events)
    deleted = next(e for e in everything if e.type == "DELETE")
    assert deleted.prev_kv is not None and deleted.prev_kv.key == ns + "a/0"
    rewrites = [e for e in everything if e.type == "PUT" and e.kv.version > 1]
    assert rewrites and all(e.prev_kv is not None and e.prev_kv.version == e.kv.version - 1 for e in rewrites)
