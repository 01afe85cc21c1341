"""The embedded revisioned store: etcd's MVCC model on one SQLite file.

Tables (plain ``sqlite3``; see "Why not SQLAlchemy" below):

- ``kv_history``: one row per key change, with the key's create revision,
  version, lease and a tombstone flag, keyed by ``id = rev << 24 | sub``
  (``sub`` numbers the changes inside one revision): the table's own rowid
  orders it by revision, so no second b-tree is kept for that. Reads at an
  old revision and watch catch-up read it; compaction trims it. The newest
  row's revision is the store's revision: compaction never removes it.
- ``kv_current``: each live key's latest state, for fast current reads.
- ``meta``: the compaction point, and a revision written at compaction,
  which the store's revision never falls below (a commit does not write it:
  one page fewer per write).
- ``leases``: id and TTL. Deadlines live in memory only and are reset to a
  full TTL when the store opens, as etcd's lessor does on a leader change:
  a keepalive costs no disk write, and a restart does not expire leases
  whose holders had no chance to renew.

Writes go to one writer thread that applies queued writes in order, each as
its own revision inside a savepoint, and commits the batch with one fsync
(group commit; WAL, ``synchronous=FULL``): a write is acknowledged only
after its commit is durable (DESIGN.md principle 4), and concurrent writers
share fsyncs instead of queueing for them. After the commit the writer hands
the batch's events to the event loop, which fans them out to watchers before
it resolves the writers' futures, so a writer that sees its revision can
also be sure every watcher has been offered it.

Range reads and history reads run in a small reader thread pool (each thread
its own connection; WAL readers never wait for the writer). Point reads at
the current revision stay on the event loop: one primary-key lookup,
measured at a few microseconds (see docs/state-store.md).

Watchers (``_fanout.py``) each hold a bounded queue. One that falls more than
``watch_queue_limit`` revisions behind drops its queue and catches up from
history instead (etcd's "unsynced watcher"): memory stays bounded and the
client sees no gap; only if compaction overtook it does it get
``Compacted``, the "too old" answer, and must re-list.

Why not SQLAlchemy Core: every statement here is SQLite-specific (bare
columns of a MAX() aggregate, savepoints per write, WAL pragmas), the store
is the hot path under the Kubernetes API, and Core's per-statement
compilation would cost more than the statements themselves. A PostgreSQL
backend would be its own class behind the same ``RevStore`` protocol.

One process per database: an exclusive ``flock`` on ``<path>.lock`` keeps a
second server from opening it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pitwall.core.tasks import Supervisor

from . import (
    Compacted,
    Compare,
    Event,
    FutureRevision,
    KeyValue,
    LeaseNotFound,
    Op,
    RangeResult,
    RevStoreError,
    TxnResult,
)
from ._common import (
    DEFAULT_COMPACT_INTERVAL_S,
    check_txn_ops,
    compact_periodically,
    compare_holds,
    dec,
    enc,
    prefix_bounds,
)
from ._fanout import FanOut, Watcher

__all__ = ["SqliteRevStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compact_revision', 0);
CREATE TABLE IF NOT EXISTS kv_history (
    id INTEGER PRIMARY KEY, key BLOB NOT NULL, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
    version INTEGER NOT NULL, lease INTEGER NOT NULL, deleted INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS kv_history_key ON kv_history (key, id);
CREATE TABLE IF NOT EXISTS kv_current (
    key BLOB PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL,
    version INTEGER NOT NULL, lease INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS kv_current_lease ON kv_current (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL);
"""

# Stores made before 2026-12-07 key their history by ``(rev, sub)``: moved to the ``id`` key when opened.
SUB_BITS = 24  # a revision changes at most 2**24 keys; revisions go up to 2**39
_MAX_SUB = 1 << SUB_BITS
_MIGRATE_HISTORY = f"""
ALTER TABLE kv_history RENAME TO kv_history_old;
DROP INDEX IF EXISTS kv_history_key;
CREATE TABLE kv_history (
    id INTEGER PRIMARY KEY, key BLOB NOT NULL, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
    version INTEGER NOT NULL, lease INTEGER NOT NULL, deleted INTEGER NOT NULL);
INSERT INTO kv_history SELECT (rev << {SUB_BITS}) | sub, key, value, create_rev, version, lease, deleted
    FROM kv_history_old ORDER BY rev, sub;
DROP TABLE kv_history_old;
CREATE INDEX kv_history_key ON kv_history (key, id);
"""
# The store's revision, inside a reader's snapshot: the newest history row's, never below meta's.
_REVISION = (f"SELECT MAX(COALESCE((SELECT MAX(id) FROM kv_history) >> {SUB_BITS}, 0), "
             "(SELECT value FROM meta WHERE name = 'revision'))")
_KV_COLS = "key, value, create_rev, mod_rev, version, lease"
_INSERT_NEW = "INSERT INTO kv_current VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING"
_UPSERT = ("INSERT INTO kv_current VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
           "value = excluded.value, mod_rev = excluded.mod_rev, version = excluded.version, lease = excluded.lease")
_BATCH_MAX = 1000  # writes per group commit
_LEASE_CHECK_S = 0.1
_MIN_TTL_S = 0.5


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives power loss, not only a crash
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """A store whose history is keyed by ``(rev, sub)`` gets the ``id`` key, in one transaction."""
    cols = [r[1] for r in conn.execute("PRAGMA table_info(kv_history)")]
    if "sub" not in cols:
        return
    log.info("revstore: moving the history to its new key (once)")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stmt in _MIGRATE_HISTORY.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _resume(jobs: Sequence[_Job]) -> None:
    for job in jobs:
        if job.future.done():  # the caller was cancelled; its write still happened
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result)


def _kv(row: Sequence[Any]) -> KeyValue:
    return KeyValue(dec(row[0]), bytes(row[1]), row[2], row[3], row[4], row[5])


def _range_sql(cond: str, hi: bytes | None) -> str:
    return cond + ("" if hi is None else " AND key < :hi")


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None
    events: list[tuple[bytes, Event]] = field(default_factory=list)
    answer_first: bool = False  # resumed before the watchers are offered its events (``txn``'s hint)


class SqliteRevStore:
    """``RevStore`` on an embedded SQLite file (the default backend).

    ``compact_interval_s``: every interval, compact to the revision seen one
    interval ago (kube-apiserver's policy; None disables it).
    ``watch_queue_limit``: revisions a watcher may have queued before it is
    switched to catching up from history.
    """

    name = "revstore"

    def __init__(
        self,
        path: Path,
        *,
        compact_interval_s: float | None = DEFAULT_COMPACT_INTERVAL_S,
        watch_queue_limit: int = 1000,
        readers: int = 2,
    ) -> None:
        self.path = Path(path)
        self.compact_interval_s = compact_interval_s
        self.watch_queue_limit = watch_queue_limit
        self._n_readers = readers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock_fd: int | None = None
        self._wconn: sqlite3.Connection | None = None  # the writer thread's
        self._lconn: sqlite3.Connection | None = None  # the event loop's, for point reads
        self._rconns: list[sqlite3.Connection] = []
        self._rlocal = threading.local()
        self._readers: ThreadPoolExecutor | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._w_rev = 0  # the writer thread's revision (committed or inside its open batch)
        self._rev = 0  # highest revision committed and fanned out (event loop side)
        self._compact_rev = 0
        self._deadlines: dict[int, float] = {}  # lease -> monotonic deadline
        self._ttls: dict[int, float] = {}
        self._fanout = FanOut(self._read_history, watch_queue_limit)
        self._tasks = Supervisor("revstore")
        self._stopped = True

    # -- life cycle -------------------------------------------------------
    async def start(self) -> None:
        """Open (creating) the database, take the lock, start the writer and the lease/compaction loops."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open)
        self._fanout.start(self._rev)
        self._stopped = False
        self._writer = threading.Thread(target=self._write_loop, name="revstore-writer", daemon=True)
        self._writer.start()
        self._tasks.spawn(self._expire_leases(), name="lease-expiry")
        if self.compact_interval_s:
            self._tasks.spawn(compact_periodically(self, self.compact_interval_s), name="compaction")

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RevStoreError(f"{self.path} is in use by another process") from None
        self._lock_fd = fd
        self._wconn = _connect(self.path)
        _migrate(self._wconn)
        self._wconn.executescript(_SCHEMA)
        self._w_rev = self._rev = int(self._wconn.execute(_REVISION).fetchone()[0])
        self._compact_rev = int(self._wconn.execute(
            "SELECT value FROM meta WHERE name = 'compact_revision'").fetchone()[0])
        now = time.monotonic()
        for lease_id, ttl in self._wconn.execute("SELECT id, ttl FROM leases").fetchall():
            self._ttls[lease_id] = ttl
            self._deadlines[lease_id] = now + ttl
        self._lconn = _connect(self.path)
        self._readers = ThreadPoolExecutor(self._n_readers, thread_name_prefix="revstore-reader")

    async def stop(self) -> None:
        """End watches, stop the loops and the writer (finishing queued writes), close the database."""
        if self._stopped:
            return
        self._stopped = True
        self._fanout.close()
        await self._tasks.stop()
        self._jobs.put(None)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.join)
        if self._readers is not None:
            self._readers.shutdown(wait=True)
        for c in [self._wconn, self._lconn, *self._rconns]:
            if c is not None:
                c.close()
        self._rconns.clear()
        self._wconn = self._lconn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _check_open(self) -> None:
        if self._stopped:
            raise RevStoreError("the revision store is not running")

    # -- reads ------------------------------------------------------------
    async def revision(self) -> int:
        """The newest committed revision (every write acknowledged so far is at or below it)."""
        return self._rev

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        """One key at ``revision`` (0: now); a current read is one lookup, done on the event loop."""
        self._check_open()
        if revision == 0:
            assert self._lconn is not None
            row = self._lconn.execute(f"SELECT {_KV_COLS} FROM kv_current WHERE key = ?", (enc(key),)).fetchone()
            return None if row is None else _kv(row)
        res = await self._read(self._r_range, enc(key), enc(key) + b"\0", 1, revision)
        return res.kvs[0] if res.kvs else None

    async def range(
        self, prefix: str, *, start: str | None = None, limit: int = 0, revision: int = 0
    ) -> RangeResult:
        """Keys starting with ``prefix`` from ``start``, at most ``limit``, as of ``revision``."""
        self._check_open()
        lo, hi = prefix_bounds(prefix)
        if start is not None and enc(start) > lo:
            lo = enc(start)
        return await self._read(self._r_range, lo, hi, limit, revision)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None and self._readers is not None
        return await self._loop.run_in_executor(self._readers, fn, *args)

    def _rconn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._rlocal, "conn", None)
        if conn is None:
            conn = self._rlocal.conn = _connect(self.path)
            self._rconns.append(conn)
        return conn

    def _r_range(self, lo: bytes, hi: bytes | None, limit: int, revision: int) -> RangeResult:
        conn = self._rconn()
        conn.execute("BEGIN")  # one snapshot for the revision and the rows
        try:
            current = conn.execute(_REVISION).fetchone()[0]
            compacted = conn.execute("SELECT value FROM meta WHERE name = 'compact_revision'").fetchone()[0]
            p: dict[str, Any] = {"lo": lo, "hi": hi, "below": (revision + 1) << SUB_BITS}
            if revision == 0 or revision == current:
                where = _range_sql("key >= :lo", hi)
                src = f"SELECT {_KV_COLS} FROM kv_current WHERE {where}"
            else:
                if revision > current:
                    raise FutureRevision(f"required revision {revision} is a future revision (current {current})")
                if revision < compacted:
                    raise Compacted(revision, compacted)
                where = _range_sql("key >= :lo", hi) + " AND id < :below"
                # SQLite takes the bare columns from the row holding MAX(id): each key's state at the revision.
                src = (f"SELECT key, value, create_rev, last >> {SUB_BITS}, version, lease FROM ("
                       f"SELECT key, value, create_rev, MAX(id) AS last, version, lease, deleted "
                       f"FROM kv_history WHERE {where} GROUP BY key) WHERE deleted = 0")
            sql = f"{src} ORDER BY key" + (" LIMIT :limit" if limit > 0 else "")
            kvs = [_kv(r) for r in conn.execute(sql, {**p, "limit": limit})]
            count = len(kvs)
            if limit > 0 and count == limit:
                count = conn.execute(f"SELECT COUNT(*) FROM ({src})", p).fetchone()[0]
        finally:
            conn.execute("COMMIT")
        return RangeResult(kvs, current, more=count > len(kvs), count=count)

    # -- writes -------------------------------------------------------------
    async def put(self, key: str, value: bytes, *, lease: int = 0) -> KeyValue:
        """Write a key; returns its new state once the write is durable."""
        def fn(conn: sqlite3.Connection) -> tuple[KeyValue, list[tuple[bytes, Event]]]:
            rev = self._w_rev + 1
            kv, ev = self._w_put(conn, rev, 0, key, bytes(value), lease)
            self._w_rev = rev
            return kv, [ev]
        result: KeyValue = await self._submit(fn)
        return result

    async def delete(self, key: str, *, prefix: bool = False) -> list[KeyValue]:
        """Delete a key (or a prefix) as one revision; nothing deleted means no new revision."""
        def fn(conn: sqlite3.Connection) -> tuple[list[KeyValue], list[tuple[bytes, Event]]]:
            rev = self._w_rev + 1
            prev, events = self._w_delete(conn, rev, 0, key, prefix)
            if prev:
                self._w_rev = rev
            return prev, events
        result: list[KeyValue] = await self._submit(fn)
        return result

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = (), *,
                  answer_first: bool = False) -> TxnResult:
        """Compare against the current state, then run one branch; all its writes share one revision."""
        check_txn_ops(success)
        check_txn_ops(failure)

        def fn(conn: sqlite3.Connection) -> tuple[TxnResult, list[tuple[bytes, Event]]]:
            known: dict[bytes, KeyValue | None] = {}  # what the compares read, for the puts of the same keys
            ok = all(compare_holds(c, self._w_compared(conn, enc(c.key), known)) for c in compare)
            rev = self._w_rev + 1
            sub = 0
            results: list[list[KeyValue]] = []
            events: list[tuple[bytes, Event]] = []
            for op in success if ok else failure:
                if op.kind == "put":
                    kv, ev = self._w_put(conn, rev, sub, op.key, bytes(op.value), op.lease, known)
                    results.append([kv])
                    events.append(ev)
                    sub += 1
                elif op.kind == "delete":
                    prev, evs = self._w_delete(conn, rev, sub, op.key, op.prefix)
                    results.append(prev)
                    events.extend(evs)
                    sub += len(evs)
                else:
                    lo, hi = (enc(op.key), enc(op.key) + b"\0") if not op.prefix else prefix_bounds(op.key)
                    where = _range_sql("key >= :lo", hi)
                    rows = conn.execute(f"SELECT {_KV_COLS} FROM kv_current WHERE {where} ORDER BY key",
                                        {"lo": lo, "hi": hi})
                    results.append([_kv(r) for r in rows])
            if events:
                self._w_rev = rev
            return TxnResult(ok, self._w_rev, results), events
        result: TxnResult = await self._submit(fn, answer_first)
        return result

    # Lease TTLs are floats here; etcd rounds up to whole seconds (its minimum is larger).
    async def grant(self, ttl_s: float) -> int:
        """A new lease of ``ttl_s`` seconds (at least 0.5 s); durable before it is returned."""
        ttl = max(float(ttl_s), _MIN_TTL_S)
        lease_id = secrets.randbits(62) + 1  # random like etcd's, so ids never repeat across restarts

        def fn(conn: sqlite3.Connection) -> tuple[int, list[tuple[bytes, Event]]]:
            conn.execute("INSERT INTO leases (id, ttl) VALUES (?, ?)", (lease_id, ttl))
            return lease_id, []
        await self._submit(fn)
        self._ttls[lease_id] = ttl
        self._deadlines[lease_id] = time.monotonic() + ttl
        return lease_id

    async def keepalive(self, lease: int) -> float:
        """Push the lease's deadline a whole TTL ahead (memory only, like etcd)."""
        self._check_open()
        ttl = self._ttls.get(lease)
        if ttl is None or lease not in self._deadlines:
            raise LeaseNotFound(f"lease {lease} not found")
        self._deadlines[lease] = time.monotonic() + ttl
        return ttl

    async def revoke(self, lease: int) -> None:
        """Delete the lease and its keys, as one revision."""
        def fn(conn: sqlite3.Connection) -> tuple[None, list[tuple[bytes, Event]]]:
            if conn.execute("DELETE FROM leases WHERE id = ?", (lease,)).rowcount == 0:
                raise LeaseNotFound(f"lease {lease} not found")
            rev = self._w_rev + 1
            keys = [r[0] for r in conn.execute("SELECT key FROM kv_current WHERE lease = ? ORDER BY key", (lease,))]
            events: list[tuple[bytes, Event]] = []
            for k in keys:
                _, evs = self._w_delete(conn, rev, len(events), dec(k), False)
                events.extend(evs)
            if events:
                self._w_rev = rev
            return None, events
        try:
            await self._submit(fn)
        finally:
            self._deadlines.pop(lease, None)
            self._ttls.pop(lease, None)

    async def _expire_leases(self) -> None:
        while True:
            await asyncio.sleep(_LEASE_CHECK_S)
            now = time.monotonic()
            expired = [lease for lease, d in self._deadlines.items() if d <= now]
            # Together, so the revocations share group commits; each is still its own revision.
            for r in await asyncio.gather(*(self.revoke(lease) for lease in expired), return_exceptions=True):
                if isinstance(r, BaseException) and not isinstance(r, LeaseNotFound):
                    log.warning("lease revocation failed", extra={"error": repr(r)})

    async def compact(self, revision: int) -> None:
        """Forget history before ``revision``; each key's state at ``revision`` stays readable.

        Compacting at or below the current compaction point does nothing.
        """
        def fn(conn: sqlite3.Connection) -> tuple[None, list[tuple[bytes, Event]]]:
            if revision > self._w_rev:
                raise FutureRevision(f"required revision {revision} is a future revision")
            if revision <= self._compact_rev:
                return None, []
            # Keep, per key, the newest change at or below `revision` unless it is a deletion (a key
            # changes at most once per revision, so its ids order its changes as revisions do).
            conn.execute(
                "DELETE FROM kv_history WHERE id < :r AND (deleted = 1 OR id < ("
                "SELECT MAX(h.id) FROM kv_history h WHERE h.key = kv_history.key AND h.id < :below))",
                {"r": revision << SUB_BITS, "below": (revision + 1) << SUB_BITS})
            conn.execute("UPDATE meta SET value = ? WHERE name = 'compact_revision'", (revision,))
            conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (self._w_rev,))
            self._compact_rev = revision
            return None, []
        await self._submit(fn)

    async def backup(self, dest: Path) -> int:
        """A consistent copy of the database at ``dest`` (SQLite's online backup), taken while
        writes go on; returns the revision it holds. For ``pitwall backup self``."""
        self._check_open()

        def copy() -> int:
            dest.parent.mkdir(parents=True, exist_ok=True)
            target = sqlite3.connect(dest)
            try:
                self._rconn().backup(target)
                return int(target.execute(_REVISION).fetchone()[0])
            finally:
                target.close()
        return await self._read(copy)

    # -- the writer thread ----------------------------------------------------
    async def _submit(self, fn: Callable[[sqlite3.Connection], Any], answer_first: bool = False) -> Any:
        self._check_open()
        assert self._loop is not None
        job = _Job(fn, self._loop.create_future(), answer_first=answer_first)
        self._jobs.put(job)
        return await job.future

    def _write_loop(self) -> None:
        conn = self._wconn
        assert conn is not None and self._loop is not None
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < _BATCH_MAX:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(conn, batch)
            if stop:
                return

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        assert self._loop is not None
        start_rev, start_compact = self._w_rev, self._compact_rev
        alone = len(batch) == 1  # no savepoint: a failure rolls the whole transaction back
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                before = self._w_rev, self._compact_rev
                if not alone:
                    conn.execute("SAVEPOINT job")
                try:
                    job.result, job.events = job.fn(conn)
                except Exception as e:  # this write only; the rest of the batch goes on
                    conn.execute("ROLLBACK" if alone else "ROLLBACK TO job")
                    self._w_rev, self._compact_rev = before
                    job.error = e
                    job.events = []
                if not alone:
                    conn.execute("RELEASE job")
            if conn.in_transaction:  # (not when a lone write failed: rolled back, nothing to commit)
                conn.execute("COMMIT")
        except Exception as e:
            log.error("revstore commit failed", exc_info=e)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._w_rev, self._compact_rev = start_rev, start_compact
            err = RevStoreError(f"write failed: {e}")
            for job in batch:
                job.error, job.events = err, []
        self._loop.call_soon_threadsafe(self._deliver, batch, self._w_rev)

    def _w_current(self, conn: sqlite3.Connection, key: bytes) -> KeyValue | None:
        row = conn.execute(f"SELECT {_KV_COLS} FROM kv_current WHERE key = ?", (key,)).fetchone()
        return None if row is None else _kv(row)

    def _w_compared(self, conn: sqlite3.Connection, key: bytes, known: dict[bytes, KeyValue | None]) -> KeyValue | None:
        if key not in known:
            known[key] = self._w_current(conn, key)
        return known[key]

    def _w_put(self, conn: sqlite3.Connection, rev: int, sub: int, key: str, value: bytes,
               lease: int, known: dict[bytes, KeyValue | None] | None = None) -> tuple[KeyValue, tuple[bytes, Event]]:
        """Write one key at ``rev``; ``known``: keys whose current state the transaction has read already.

        A key not read yet is first inserted as new, which fails only if it exists (then it is read and
        updated): the history records and change events written beside a Consul or Kubernetes write are
        always new keys, so this saves them a read each (every statement is a GIL release in this thread)."""
        kb = enc(key)
        if lease and conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is None:
            raise LeaseNotFound(f"lease {lease} not found")
        if known is not None and kb in known:
            prev = known.pop(kb)  # popped: the key changes now (a transaction writes a key at most once)
            pending = True
        else:
            inserted = conn.execute(_INSERT_NEW, (kb, value, rev, rev, 1, lease)).rowcount == 1
            prev = None if inserted else self._w_current(conn, kb)
            pending = not inserted
        create = prev.create_revision if prev else rev
        version = prev.version + 1 if prev else 1
        if pending:
            conn.execute(_UPSERT, (kb, value, create, rev, version, lease))
        conn.execute("INSERT INTO kv_history VALUES (?, ?, ?, ?, ?, ?, 0)",
                     (rev << SUB_BITS | sub, kb, value, create, version, lease))
        kv = KeyValue(key, value, create, rev, version, lease)
        return kv, (kb, Event("PUT", kv, prev))

    def _w_delete(self, conn: sqlite3.Connection, rev: int, sub: int, key: str,
                  prefix: bool) -> tuple[list[KeyValue], list[tuple[bytes, Event]]]:
        lo, hi = prefix_bounds(key) if prefix else (enc(key), enc(key) + b"\0")
        where = _range_sql("key >= :lo", hi)
        p = {"lo": lo, "hi": hi}
        prev = [_kv(r) for r in conn.execute(f"SELECT {_KV_COLS} FROM kv_current WHERE {where} ORDER BY key", p)]
        if not prev:
            return [], []
        if sub + len(prev) > _MAX_SUB:
            raise RevStoreError(f"a revision changes at most {_MAX_SUB} keys; this one would change "
                                f"{sub + len(prev)}")
        conn.execute(f"DELETE FROM kv_current WHERE {where}", p)
        base = rev << SUB_BITS | sub
        conn.executemany("INSERT INTO kv_history VALUES (?, ?, x'', 0, 0, 0, 1)",
                         [(base + i, enc(kv.key)) for i, kv in enumerate(prev)])
        events = [(enc(kv.key), Event("DELETE", KeyValue(kv.key, b"", 0, rev, 0), kv)) for kv in prev]
        return prev, events

    # -- fan-out (event loop) -------------------------------------------------
    def _deliver(self, batch: list[_Job], rev: int) -> None:
        """Offer the batch's events to the watchers, then resume the writers: a writer that sees its revision
        knows every watcher was offered it. An ``answer_first`` writer is resumed first (its task runs before
        the watchers' tasks): it answers sooner, and it reads nothing through a watch."""
        self._rev = max(self._rev, rev)
        if any(job.answer_first for job in batch):
            _resume([job for job in batch if job.answer_first])
        by_rev: dict[int, list[tuple[bytes, Event]]] = {}
        for job in batch:
            for kb, ev in job.events:
                by_rev.setdefault(ev.kv.mod_revision, []).append((kb, ev))
        for r in sorted(by_rev):
            self._fanout.publish(r, by_rev[r])
        self._fanout.advance(rev)
        _resume([job for job in batch if not job.answer_first])

    def watch(self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False) -> AsyncIterator[list[Event]]:
        """Events under ``prefix``, one list per revision, from ``start_revision`` (0: from now on)."""
        self._check_open()
        return self._fanout.watch(prefix, start_revision, prev_kv)

    async def _read_history(self, w: Watcher, first: int, last: int) -> list[list[Event]]:
        return await self._read(self._r_history, w, first, last)

    def _r_history(self, w: Watcher, first: int, last: int) -> list[list[Event]]:
        conn = self._rconn()
        conn.execute("BEGIN")
        try:
            compacted = conn.execute("SELECT value FROM meta WHERE name = 'compact_revision'").fetchone()[0]
            if first < compacted:
                raise Compacted(first, compacted)
            where = _range_sql("key >= :lo", w.hi)
            rows = conn.execute(
                f"SELECT id >> {SUB_BITS}, key, value, create_rev, version, lease, deleted FROM kv_history "
                f"WHERE id >= :first AND id < :below AND {where} ORDER BY id",
                {"first": first << SUB_BITS, "below": (last + 1) << SUB_BITS, "lo": w.lo, "hi": w.hi}).fetchall()
            out: list[list[Event]] = []
            for rev, kb, value, create, version, lease, deleted in rows:
                prev: KeyValue | None = None
                if w.prev_kv:
                    p = conn.execute(
                        f"SELECT key, value, create_rev, id >> {SUB_BITS}, version, lease, deleted FROM kv_history "
                        "WHERE key = ? AND id < ? ORDER BY id DESC LIMIT 1", (kb, rev << SUB_BITS)).fetchone()
                    prev = _kv(p) if p is not None and not p[6] else None
                key = dec(kb)
                ev = (Event("DELETE", KeyValue(key, b"", 0, rev, 0), prev) if deleted
                      else Event("PUT", KeyValue(key, bytes(value), create, rev, version, lease), prev))
                if out and out[-1][0].kv.mod_revision == rev:
                    out[-1].append(ev)
                else:
                    out.append([ev])
            return out
        finally:
            conn.execute("COMMIT")
