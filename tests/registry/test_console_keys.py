"""The config page's key listing (``ConfigConsole.keys``) on a SQLite RevStore, without HTTP: one level
under a prefix, as Consul's ``?keys&separator=/`` cuts it, read without the folders' contents."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pitwall.registry.console import MAX_KEYS, ConfigConsole, KeyRow
from pitwall.registry.history import ConfigHistory
from pitwall.registry.kv import KVStore
from pitwall.storage.revstore import RangeResult
from pitwall.storage.revstore.sqlite import SqliteRevStore

pytestmark = pytest.mark.timeout(60)


class CountingStore(SqliteRevStore):
    """Counts the keys each range read returns."""

    read = 0

    async def range(self, prefix: str, **kw: Any) -> RangeResult:
        res = await super().range(prefix, **kw)
        self.read += len(res.kvs)
        return res


@pytest.fixture
async def kv(tmp_path: Path) -> AsyncIterator[KVStore]:
    store = CountingStore(tmp_path / "s.db", compact_interval_s=None)
    await store.start()
    k = KVStore(store, ConfigHistory(store, None, keep=5))
    yield k
    await k.history.stop()
    await store.stop()


async def _put_all(kv: KVStore, values: dict[str, bytes]) -> None:
    items = sorted(values.items())
    for i in range(0, len(items), 64):  # a transaction holds at most 64 operations
        out = await kv.txn([{"KV": {"Verb": "set", "Key": k, "Value": base64.b64encode(v).decode()}}
                            for k, v in items[i:i + 64]], who="t")
        assert out.errors is None, out.errors
    while kv.history.tasks.running:  # the history's pruning reads after each commit: not the console's reads
        await asyncio.sleep(0.01)


async def test_one_level_folders_first(kv: KVStore) -> None:
    await _put_all(kv, {"a": b"1", "app": b"22", "app/": b"", "app/x": b"333", "app/y/z": b"", "b/1": b"",
                        "b/2/x": b"", "c/": b"", "e": b"55555"})
    console = ConfigConsole(kv, kv.history, None)
    entries = {e.key: e for e in (await kv.tree(""))[0]}

    def key(k: str) -> KeyRow:
        return KeyRow(k, False, len(entries[k].value), entries[k].modify_index)

    assert await console.keys("") == [KeyRow("app/", True), KeyRow("b/", True), KeyRow("c/", True),
                                      key("a"), key("app"), key("e")]
    # the key named by the prefix itself is no row (Consul's folder key "app/"), its folders and keys are
    assert await console.keys("app/") == [KeyRow("app/y/", True), key("app/x")]
    assert await console.keys("app") == [KeyRow("app/", True)]
    assert await console.keys("nothing/") == []


async def test_a_tree_larger_than_the_limit_reads_only_the_page(kv: KVStore) -> None:
    """40 folders of 60 keys and 2,050 keys beside them: the page lists the first MAX_KEYS names in key
    order (the folders, then keys), as the separator listing does, and the folders' contents are not read."""
    values = {f"big/f{i:02}/k{j:02}": b"x" for i in range(40) for j in range(60)}
    values |= {f"big/k{i:04}": b"v" * (i % 7) for i in range(2050)}
    await _put_all(kv, values)
    console = ConfigConsole(kv, kv.history, None)
    listing, _ = await kv.keys("big/", "/")
    assert len(listing) == 40 + 2050
    store = kv.store
    assert isinstance(store, CountingStore)
    store.read = 0
    rows = await console.keys("big/")
    assert len(rows) == MAX_KEYS
    assert [r.key for r in rows] == listing[:MAX_KEYS]  # the folders come first in key order here too
    assert all(r.folder for r in rows[:40]) and not any(r.folder for r in rows[40:])
    assert rows[41] == KeyRow("big/k0001", False, 1, rows[41].modify_index) and rows[41].modify_index > 0
    assert store.read <= MAX_KEYS + 2 * 40  # about one key per folder, never the 2,400 inside them
