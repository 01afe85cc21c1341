"""The revisioned key-value store under the whole control plane (etcd's model).

Every write gets the next global revision; each key keeps the revision that
created it, the one that last modified it and its version (writes since
creation). Reads take a key, or a prefix with a limit and a resume key; a
transaction compares keys (version, create/mod revision, value) and then runs
one list of operations or the other, atomically, as one revision; leases
expire keys; a watch replays every event after a revision, in order, then
follows new ones. Kubernetes objects (``/registry/<resource>/<ns>/<name>``),
Consul KV, incidents and pipeline runs are all keys here.

Three backends implement ``RevStore`` and pass one shared test suite:
``sqlite.SqliteRevStore`` (embedded, the default), ``etcd.EtcdRevStore``
(a real etcd v3 cluster) and ``postgres.PostgresRevStore`` (a PostgreSQL
database, kine-style). Keys are ``str``, values ``bytes``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "Compacted",
    "Compare",
    "Event",
    "KeyValue",
    "LeaseNotFound",
    "Op",
    "RangeResult",
    "RevStore",
    "RevStoreError",
    "TxnResult",
    "prefix_end",
]


class RevStoreError(Exception):
    """Base of the store's errors."""


class Compacted(RevStoreError):
    """A watch or read asked for a revision older than the compaction point.

    Kubernetes answers this as 410 Gone ("too old resource version").
    """

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(
            f"required revision {requested} has been compacted (compacted up to {compact_revision})"
        )
        self.requested = requested
        self.compact_revision = compact_revision


class FutureRevision(RevStoreError):
    """A read asked for a revision newer than the store's current one."""


class LeaseNotFound(RevStoreError):
    """The lease does not exist (never granted, revoked or expired)."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key's state at a revision."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """A change seen by a watch.

    For ``DELETE``, ``kv`` holds the key with an empty value and
    ``mod_revision`` set to the deleting revision (as etcd reports it);
    ``prev_kv`` is the key's state before the change, when there was one.
    """

    type: Literal["PUT", "DELETE"]
    kv: KeyValue
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction on a key's current state.

    ``target`` is ``version``, ``create`` (create revision), ``mod`` (mod
    revision) or ``value``. A missing key has version, create and mod 0 and
    no value (a value compare on a missing key is false, as in etcd).
    """

    key: str
    target: Literal["version", "create", "mod", "value"]
    op: Literal["=", "!=", "<", ">"]
    value: int | bytes


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a transaction: ``put``, ``delete`` (key, or prefix) or ``get``."""

    kind: Literal["put", "delete", "get"]
    key: str
    value: bytes = b""
    lease: int = 0
    prefix: bool = False  # delete/get every key starting with ``key``

    @staticmethod
    def put(key: str, value: bytes, lease: int = 0) -> Op:
        return Op("put", key, value, lease)

    @staticmethod
    def delete(key: str, prefix: bool = False) -> Op:
        return Op("delete", key, prefix=prefix)

    @staticmethod
    def get(key: str, prefix: bool = False) -> Op:
        return Op("get", key, prefix=prefix)


@dataclass(frozen=True, slots=True)
class RangeResult:
    """Keys of a range read in key order, the store's revision, and whether more follow."""

    kvs: list[KeyValue]
    revision: int
    more: bool = False
    count: int = 0  # keys in the whole range (before the limit)


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Which branch ran, the revision after it, and per operation: the keys a ``get``
    returned, the previous values a ``delete`` removed, or the key a ``put`` wrote."""

    succeeded: bool
    revision: int
    results: list[list[KeyValue]] = field(default_factory=list)


def prefix_end(prefix: str) -> str:
    """The smallest key greater than every key starting with ``prefix`` (etcd's range_end)."""
    b = bytearray(prefix.encode())
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return b.decode("utf-8", errors="surrogateescape")
        b.pop()
    return "\0"  # every key


class RevStore(Protocol):
    """What every backend offers; all methods are safe to call concurrently."""

    async def start(self) -> None:
        """Open the store (create tables, connect)."""
        ...

    async def stop(self) -> None:
        """Close it; watches end."""
        ...

    async def revision(self) -> int:
        """The store's current revision (0 when nothing was ever written)."""
        ...

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        """One key at ``revision`` (0: now)."""
        ...

    async def range(
        self, prefix: str, *, start: str | None = None, limit: int = 0, revision: int = 0
    ) -> RangeResult:
        """Keys starting with ``prefix`` in key order, from ``start`` (inclusive) when
        given, at most ``limit`` (0: all), as of ``revision`` (0: now).

        Raises ``Compacted`` for a revision below the compaction point and
        ``FutureRevision`` for one above the current revision.
        """
        ...

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> KeyValue:
        """Write a key unconditionally; returns its new state."""
        ...

    async def delete(self, key: str, *, prefix: bool = False) -> list[KeyValue]:
        """Delete a key (or every key with the prefix); returns what was deleted."""
        ...

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = (), *,
                  answer_first: bool = False) -> TxnResult:
        """If every compare holds, run ``success``, else ``failure``; one revision for all writes.

        ``answer_first``: a hint that the caller reads nothing through this store's watches right after the
        write (its readers read the store, or follow a watch, as a Consul KV write's do), so a backend that
        fans events out in process may resume the caller before its watchers; ignored by the others."""
        ...

    async def grant(self, ttl_s: float) -> int:
        """A new lease living ``ttl_s`` seconds unless kept alive; returns its id."""
        ...

    async def keepalive(self, lease: int) -> float:
        """Renew a lease for its whole TTL; returns the TTL. Raises ``LeaseNotFound``."""
        ...

    async def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys (as one revision)."""
        ...

    def watch(self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False) -> AsyncIterator[list[Event]]:
        """Events on keys starting with ``prefix``, batched per revision, in order.

        ``start_revision`` 0 means "from now on"; otherwise every event at or
        after it is delivered first (``Compacted`` if it is below the
        compaction point). The iterator ends when the store stops.
        """
        ...

    async def compact(self, revision: int) -> None:
        """Forget history before ``revision`` (current values are kept)."""
        ...
