"""KVStore and ConfigHistory on a SQLite RevStore, without HTTP: txn planning, retries, history bounds."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pitwall.registry import history as history_module
from pitwall.registry.history import ConfigHistory
from pitwall.registry.kv import KVStore
from pitwall.registry.model import ConsulError
from pitwall.storage.revstore.sqlite import SqliteRevStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def kv(tmp_path: Path) -> AsyncIterator[KVStore]:
    store = SqliteRevStore(tmp_path / "s.db", compact_interval_s=None)
    await store.start()
    delays: dict[str, float] = {}
    k = KVStore(store, ConfigHistory(store, None, keep=5), lambda key: delays.get(key, 0.0))
    k.delays = delays  # type: ignore[attr-defined]
    yield k
    await k.history.stop()
    await store.stop()


async def _settled(h: ConfigHistory) -> None:
    while h.tasks.running:
        await asyncio.sleep(0.01)


async def test_history_keeps_the_newest_per_key(kv: KVStore) -> None:
    for i in range(8):
        await kv.put("h", str(i).encode(), who="t")
    await kv.put("h2", b"other", who="t")
    await _settled(kv.history)
    recs = await kv.history.of("h")
    assert [r.new for r in recs] == [b"3", b"4", b"5", b"6", b"7"]
    assert [r.old for r in recs] == [b"2", b"3", b"4", b"5", b"6"]
    assert [r.key for r in await kv.history.of("h2")] == ["h2"]


async def test_concurrent_cas_creates_exactly_one(kv: KVStore) -> None:
    results = await asyncio.gather(*(kv.put("once", str(i).encode(), who="t", cas=0) for i in range(10)))
    assert results.count(True) == 1


async def test_concurrent_sets_lose_no_lock(kv: KVStore) -> None:
    await kv.store.put("/pitwall/consul/sessions/s1", b"{}")
    assert await kv.put("l", b"a", who="t", acquire="s1")
    await asyncio.gather(*(kv.put("l", str(i).encode(), who="t") for i in range(5)))
    e, _ = await kv.get("l")
    assert e is not None and e.session == "s1" and e.lock_index == 1  # a plain set keeps the lock


async def test_txn_errors_and_limits(kv: KVStore) -> None:
    out = await kv.txn([{"KV": {"Verb": "get", "Key": "nope"}}, {"KV": {"Verb": "unlock", "Key": "nope",
                                                                        "Session": "x"}}], who="t")
    assert out.results is None and [e["OpIndex"] for e in out.to_api()["Errors"]] == [0, 1]
    assert out.to_api()["Errors"][0]["What"] == 'key "nope" doesn\'t exist'
    with pytest.raises(ConsulError) as err:
        await kv.txn([{"Node": {}}], who="t")
    assert err.value.status == 400
    with pytest.raises(ConsulError):
        await kv.txn([{"KV": {"Verb": "set", "Key": "k", "Value": "***"}}], who="t")
    big = base64.b64encode(b"z" * (512 * 1024 + 1)).decode()
    with pytest.raises(ConsulError) as err:
        await kv.txn([{"KV": {"Verb": "set", "Key": "k", "Value": big}}], who="t")
    assert err.value.status == 413
    out = await kv.txn([{"KV": {"Verb": "frobnicate", "Key": "k"}}], who="t")
    assert out.errors and out.errors[0]["What"] == "unknown KV verb 'frobnicate'"
    assert (await kv.tree(""))[0] == []


async def test_lock_delay_and_session_release(kv: KVStore) -> None:
    await kv.store.put("/pitwall/consul/sessions/a", b"{}")
    await kv.store.put("/pitwall/consul/sessions/b", b"{}")
    assert await kv.put("d1", b"x", who="t", acquire="a")
    assert await kv.put("d2", b"y", who="t", acquire="a")
    assert sorted(await kv.release_session("a", "delete", who="t")) == ["d1", "d2"]
    assert (await kv.tree(""))[0] == []
    kv.delays["d3"] = time.time() + 30  # type: ignore[attr-defined]
    assert await kv.put("d3", b"x", who="t", acquire="b") is False
    with pytest.raises(ConsulError) as err:
        await kv.put("d4", b"x", who="t", acquire="gone")
    assert err.value.status == 500 and err.value.message == 'invalid session "gone"'


async def _records(store: SqliteRevStore, key: str) -> list[str]:
    return [kv.key for kv in (await store.range(f"/pitwall/consul/history/{key}\x01")).kvs]


async def test_history_at_its_limit_deletes_the_oldest_in_the_write_itself(kv: KVStore) -> None:
    """Once a key holds ``keep`` records, each write deletes the oldest in its own commit: one revision,
    no pruning task, no read; the records stay the newest ``keep`` through concurrent writes."""
    store = kv.store
    assert isinstance(store, SqliteRevStore)
    for i in range(7):  # passes the limit with no oldest known: one pruning read, which notes the next oldest
        await kv.put("s", str(i).encode(), who="t")
    await _settled(kv.history)
    assert len(await _records(store, "s")) == 5
    for i in range(7, 12):
        before = await store.revision()
        await kv.put("s", str(i).encode(), who="t")
        assert not kv.history.tasks.running  # nothing after the commit
        assert await store.revision() == before + 1
        assert len(await _records(store, "s")) == 5
    await asyncio.gather(*(kv.put("s", f"c{i}".encode(), who="t") for i in range(8)))
    await _settled(kv.history)
    recs = await kv.history.of("s")
    assert len(recs) == 5, kv.history._tally["s"]
    assert [r.old for r in recs[1:]] == [r.new for r in recs[:-1]]  # consecutive: the newest five
    e, _ = await kv.get("s")
    assert e is not None and recs[-1].new == e.value


async def test_history_limit_holds_over_a_restart(tmp_path: Path) -> None:
    """A new process knows no tallies: its first write of a key reads the key's records in the same
    transaction, and a lower ``keep`` than the stored records prunes them after that write."""
    path = tmp_path / "r.db"
    for keep, writes in ((8, 10), (8, 3), (3, 1), (3, 4)):
        store = SqliteRevStore(path, compact_interval_s=None)
        await store.start()
        k = KVStore(store, ConfigHistory(store, None, keep=keep))
        try:
            for i in range(writes):
                await k.put("r", f"{keep}-{i}".encode(), who="t")
            await _settled(k.history)
            recs = await k.history.of("r")
            assert len(recs) == keep
            assert recs[-1].new == f"{keep}-{writes - 1}".encode()
        finally:
            await k.history.stop()
            await store.stop()


async def test_history_limit_holds_for_keys_whose_tally_was_dropped(kv: KVStore,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Tallies are kept for the most recently written keys only; a key written again after its tally went
    is counted again in that write's transaction, and its limit still holds."""
    monkeypatch.setattr(history_module, "_TALLY_KEYS", 2)
    prune = history_module.ConfigHistory._prune

    async def late_prune(self: history_module.ConfigHistory, key: str) -> None:
        await asyncio.sleep(0.05)  # as on a loaded machine: the next writes evict the key's tally first
        await prune(self, key)
    monkeypatch.setattr(history_module.ConfigHistory, "_prune", late_prune)
    for i in range(9):
        for key in ("x", "y", "z"):  # three keys round-robin: each write finds its key's tally dropped
            await kv.put(key, f"{key}{i}".encode(), who="t")
    await _settled(kv.history)
    for key in ("x", "y", "z"):
        recs = await kv.history.of(key)
        assert [r.new for r in recs] == [f"{key}{i}".encode() for i in range(4, 9)]


async def test_sets_and_cas_planned_from_guesses_answer_as_reads_would(kv: KVStore) -> None:
    """A PUT is planned from the state this KVStore last wrote (or the key guessed absent) and the store's
    compare checks it: writes by another server (``other``) must make no answer, value or history differ."""
    other = KVStore(kv.store, kv.history)
    await kv.store.put("/pitwall/consul/sessions/s1", b"{}")
    assert await other.put("g", b"1", who="o", flags=3)  # exists; kv never saw it and guesses it absent
    assert not await kv.put("g", b"x", who="t", cas=0)  # create-only: refused, nothing written
    assert await kv.put("g", b"2", who="t")
    assert await other.put("g", b"3", who="o")  # kv's remembered g=2 is stale now
    assert await kv.put("g", b"2", who="t")  # the same value kv last wrote: still a write, over g=3
    e, _ = await kv.get("g")
    assert e is not None and e.value == b"2" and e.flags == 0
    assert not await kv.put("g", b"y", who="t", cas=e.modify_index - 1)
    assert await other.put("g", b"4", who="o", acquire="s1")
    assert not await kv.put("g", b"z", who="t", cas=e.modify_index)  # kv's index is stale
    assert await kv.put("g", b"5", who="t")  # a plain set keeps the lock kv did not see taken
    e, _ = await kv.get("g")
    assert e is not None and (e.value, e.session, e.lock_index) == (b"5", "s1", 1)
    assert await kv.put("g", b"6", who="t", cas=e.modify_index)
    assert await other.delete("g", who="o")
    assert not await kv.put("g", b"7", who="t", cas=e.modify_index + 1)  # deleted behind kv's back
    assert await kv.put("g", b"7", who="t", cas=0)
    recs = await kv.history.of("g")  # the newest 5 (keep=5), each old value the one really replaced
    assert [(r.old, r.new) for r in recs] == [(b"2", b"4"), (b"4", b"5"), (b"5", b"6"), (b"6", None), (None, b"7")]
    big = b"b" * 2048  # not remembered (too large): read again before its next write
    assert await kv.put("big", big, who="t") and await kv.put("big", big + b"!", who="t")
    assert [(r.old, r.new) for r in await kv.history.of("big")] == [(None, big), (big, big + b"!")]
    assert not await kv.put("big", b"", who="t", cas=0)
