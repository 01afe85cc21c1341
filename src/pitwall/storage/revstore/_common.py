"""Pieces both backends share: key encoding, compare evaluation, the compaction policy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from . import Compare, KeyValue, Op, RevStore, RevStoreError, prefix_end

log = logging.getLogger(__name__)

# etcd's default for `--auto-compaction-mode=periodic`-like behaviour of
# kube-apiserver: compact every 5 minutes to the revision seen 5 minutes ago.
DEFAULT_COMPACT_INTERVAL_S = 300.0


def enc(key: str) -> bytes:
    """A key as the bytes both backends order by (UTF-8; ``prefix_end``'s odd bytes survive)."""
    return key.encode("utf-8", "surrogateescape")


def dec(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def prefix_bounds(prefix: str) -> tuple[bytes, bytes | None]:
    """``[lo, hi)`` of the keys starting with ``prefix``; ``hi`` None means "no upper bound"."""
    if prefix == "":
        return b"", None
    return enc(prefix), enc(prefix_end(prefix))


def compare_holds(c: Compare, kv: KeyValue | None) -> bool:
    """etcd's rule: a missing key has version/create/mod 0, and a value compare on it is false."""
    if c.target == "value":
        if kv is None:
            return False
        if not isinstance(c.value, bytes | bytearray):
            raise RevStoreError(f"value compare on {c.key!r} needs bytes, got {type(c.value).__name__}")
        actual_b, want_b = kv.value, bytes(c.value)
        return _cmp(c.op, actual_b, want_b)
    if not isinstance(c.value, int) or isinstance(c.value, bool):
        raise RevStoreError(f"{c.target} compare on {c.key!r} needs an int, got {type(c.value).__name__}")
    actual = 0 if kv is None else {
        "version": kv.version, "create": kv.create_revision, "mod": kv.mod_revision,
    }[c.target]
    return _cmp(c.op, actual, c.value)


def _cmp(op: str, a: bytes | int, b: bytes | int) -> bool:
    if op == "=":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b  # type: ignore[operator]
    if op == ">":
        return a > b  # type: ignore[operator]
    raise RevStoreError(f"unknown compare operator {op!r}")


def check_txn_ops(ops: Sequence[Op]) -> None:
    """Refuse what etcd refuses: two writes to one key in a transaction branch."""
    puts: set[str] = set()
    deletes: list[Op] = []
    for op in ops:
        if op.kind == "put":
            if op.key in puts:
                raise RevStoreError(f"duplicate key given in txn request: {op.key!r}")
            puts.add(op.key)
        elif op.kind == "delete":
            deletes.append(op)
        elif op.kind != "get":
            raise RevStoreError(f"unknown txn operation {op.kind!r}")
    for d in deletes:
        for k in puts:
            if k == d.key or (d.prefix and k.startswith(d.key)):
                raise RevStoreError(f"duplicate key given in txn request: {k!r}")


async def compact_periodically(store: RevStore, interval_s: float) -> None:
    """kube-apiserver's policy: every ``interval_s``, compact to the revision seen one interval ago.

    So at least ``interval_s`` of history stays watchable, and history stays
    bounded by the write rate times two intervals.
    """
    previous = await store.revision()
    while True:
        await asyncio.sleep(interval_s)
        current = await store.revision()
        if previous > 0:
            try:
                await store.compact(previous)
            except RevStoreError as e:  # e.g. a peer server compacted further already
                log.info("revstore compaction skipped", extra={"revision": previous, "error": str(e)})
        previous = current
