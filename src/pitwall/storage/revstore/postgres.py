"""The revisioned store on PostgreSQL, the way k3s' kine keeps the Kubernetes API there.

One table of rows, ``kine``: every change of a key is a row carrying the
revision it was made at, the key (``name``, bytea so it orders by bytes like
etcd), whether the row created or deleted the key, the key's create
revision, the revision of the change before (``prev_revision``), its lease,
version, value and the value it replaced (``old_value``). A key's state at a
revision is its newest row at or below it, unless that row is a deletion;
the current state is simply its newest row. Two small tables go with it:
``kine_meta`` (the current revision and the compaction point) and
``kine_leases`` (id, TTL, and the deadline, on the database clock).

Where this differs from kine: kine makes each row's id its revision because
the Kubernetes API server writes one key per transaction. ``RevStore``
transactions, prefix deletes and lease revocations write several keys as one
revision, so ``id`` (bigserial) orders the rows and ``revision`` is a column.

Writes: one writer task per store applies the writes queued meanwhile in one
database transaction (group commit: one WAL flush for the lot), each its own
revision inside a savepoint, so one failing write does not fail the others.
The transaction first locks the single ``kine_meta`` row (``FOR UPDATE``).
That serialises the writers of every pitwall server sharing the database, so
revisions are gapless and commit in order: a reader that sees revision R sees
everything before it. The transaction ends with ``pg_notify``, delivered to
listeners when it commits.

Watches: one follower task per store LISTENs on the channel and, on each
notification (and every ``poll_s`` in case a notification was missed or the
listening connection is being re-established), reads the rows after the last
revision it published and hands them, per revision, to the shared
``FanOut`` (bounded queues; a slow watcher catches up from the table). A
write returns after its own revision was fanned out here, as on SQLite.
Compaction deletes superseded rows below the compaction point; a watch or
read from below it raises ``Compacted`` ("too old").

Leases: deadlines live in ``kine_leases`` on the database's clock, so any
server sharing the database may expire them: every store checks each
``lease_check_s`` and revokes what is overdue (concurrent revocations of the
same lease are serialised by the meta lock; the second finds it gone).
A keepalive is one ``UPDATE``; it costs no revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
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
from ._fanout import HISTORY_PAGE_REVS, FanOut, Watcher

try:  # an optional extra: pip install 'pitwall[postgres]'
    import psycopg
    from psycopg import AsyncConnection
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]

__all__ = ["PostgresRevStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CHANNEL = "pitwall_revstore"
_MIN_TTL_S = 0.5
_SCHEMA_LOCK = 0x70697477  # advisory lock id: servers starting together create the schema once

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kine (
    id BIGSERIAL PRIMARY KEY,
    revision BIGINT NOT NULL,
    name BYTEA NOT NULL,
    created BOOLEAN NOT NULL,
    deleted BOOLEAN NOT NULL,
    create_revision BIGINT NOT NULL,
    prev_revision BIGINT NOT NULL,
    lease BIGINT NOT NULL,
    version BIGINT NOT NULL,
    value BYTEA NOT NULL,
    old_value BYTEA);
CREATE INDEX IF NOT EXISTS kine_name_id ON kine (name, id);
CREATE INDEX IF NOT EXISTS kine_revision ON kine (revision);
CREATE INDEX IF NOT EXISTS kine_lease ON kine (lease) WHERE lease <> 0;
CREATE TABLE IF NOT EXISTS kine_meta (
    id INT PRIMARY KEY CHECK (id = 1), revision BIGINT NOT NULL, compact_revision BIGINT NOT NULL);
INSERT INTO kine_meta VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS kine_leases (
    id BIGINT PRIMARY KEY, ttl DOUBLE PRECISION NOT NULL, expires_at TIMESTAMPTZ NOT NULL);
"""

_COLS = "name, value, create_revision, revision, version, lease, deleted"


def _range_where(lo: bytes, hi: bytes | None) -> tuple[str, dict[str, Any]]:
    return ("name >= %(lo)s" + ("" if hi is None else " AND name < %(hi)s")), {"lo": lo, "hi": hi}


def _bounds(key: str, prefix: bool) -> tuple[bytes, bytes | None]:
    return prefix_bounds(key) if prefix else (enc(key), enc(key) + b"\0")


def _latest_sql(where: str, at_rev: bool) -> str:
    """Each key's newest row (at or below ``%(rev)s`` when ``at_rev``) in the range, live keys only."""
    rev = " AND revision <= %(rev)s" if at_rev else ""
    return (f"SELECT {_COLS} FROM (SELECT DISTINCT ON (name) {_COLS} FROM kine "
            f"WHERE {where}{rev} ORDER BY name, id DESC) s WHERE NOT deleted")


def _kv(row: Sequence[Any]) -> KeyValue:
    return KeyValue(dec(bytes(row[0])), bytes(row[1]), row[2], row[3], row[4], row[5])


# A change row with the key's previous state (joined by prev_revision; compaction keeps it, being current).
_EVENTS_SQL = (
    "SELECT k.revision, k.name, k.value, k.create_revision, k.version, k.lease, k.deleted, "
    "p.revision, k.old_value, p.create_revision, p.version, p.lease FROM kine k "
    "LEFT JOIN kine p ON p.name = k.name AND p.revision = k.prev_revision AND NOT p.deleted "
    "WHERE k.revision >= %(first)s AND k.revision <= %(last)s{cond} ORDER BY k.id")


def _events(rows: Sequence[Sequence[Any]]) -> list[list[tuple[bytes, Event]]]:
    """Rows of ``_EVENTS_SQL`` as events grouped per revision, each with its encoded key."""
    out: list[list[tuple[bytes, Event]]] = []
    for rev, kb, value, create, version, lease, deleted, p_rev, old, p_create, p_version, p_lease in rows:
        key_b = bytes(kb)
        key = dec(key_b)
        prev = None if p_rev is None else KeyValue(key, bytes(old or b""), p_create, p_rev, p_version, p_lease)
        ev = (Event("DELETE", KeyValue(key, b"", 0, rev, 0), prev) if deleted
              else Event("PUT", KeyValue(key, bytes(value), create, rev, version, lease), prev))
        if out and out[-1][0][1].kv.mod_revision == rev:
            out[-1].append((key_b, ev))
        else:
            out.append([(key_b, ev)])
    return out


_BATCH_MAX = 1000  # writes per group commit
_Changes = list[tuple[bytes, Event]]  # a write's events, each with its encoded key
_WriteFn = Callable[["AsyncConnection[Any]", int], Awaitable[tuple[Any, _Changes]]]


def _deletions(rev: int, gone: list[KeyValue]) -> _Changes:
    return [(enc(kv.key), Event("DELETE", KeyValue(kv.key, b"", 0, rev, 0), kv)) for kv in gone]


class _Failed(Exception):
    """A single-write batch failed: roll its transaction back (the job holds the error)."""


@dataclass(eq=False)
class _Job:
    """A queued write: ``fn(conn, revision it would take)`` returns its result and its events."""

    fn: _WriteFn
    future: asyncio.Future[Any]
    result: Any = None
    error: RevStoreError | None = None
    revision: int = 0  # the revision it committed as (0: none)
    events: _Changes = field(default_factory=list)


class PostgresRevStore:
    """``RevStore`` on a PostgreSQL database (``dsn``: a libpq connection string or URL).

    Several pitwall servers may share one database; each sees the others'
    writes through its watches. ``pool_size`` connections serve reads and
    writes, one more listens for notifications.
    """

    name = "revstore"

    def __init__(
        self,
        dsn: str,
        *,
        compact_interval_s: float | None = DEFAULT_COMPACT_INTERVAL_S,
        watch_queue_limit: int = 1000,
        pool_size: int = 4,
        poll_s: float = 1.0,
        lease_check_s: float = 0.2,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if psycopg is None:
            raise RevStoreError("the postgres state backend needs psycopg: pip install 'pitwall[postgres]'")
        self.dsn = dsn
        self.compact_interval_s = compact_interval_s
        self.poll_s = poll_s
        self.lease_check_s = lease_check_s
        self.connect_timeout_s = connect_timeout_s
        self._pool_size = pool_size
        self._pool: asyncio.Queue[AsyncConnection[Any] | None] = asyncio.Queue()
        self._fanout = FanOut(self._read_history, watch_queue_limit)
        self._published = asyncio.Condition()
        self._kick = asyncio.Event()
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self._writer_pid = 0  # the writer connection's backend, whose notifications need no follow-up
        self._tasks = Supervisor("revstore")
        self._stopped = True

    # -- life cycle -------------------------------------------------------
    async def start(self) -> None:
        """Connect, create the tables if absent, start following, lease expiry and compaction."""
        try:
            conn = await self._connect()
        except psycopg.Error as e:
            raise RevStoreError(f"cannot connect to PostgreSQL: {e}") from e
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                await conn.execute(_SCHEMA)
            cur = await conn.execute("SELECT revision FROM kine_meta WHERE id = 1")
            row = await cur.fetchone()
            assert row is not None
        except psycopg.Error as e:
            await conn.close()
            raise RevStoreError(f"cannot create the state tables: {e}") from e
        self._pool = asyncio.Queue()
        self._pool.put_nowait(conn)
        for _ in range(self._pool_size - 1):
            self._pool.put_nowait(None)  # connected on first use
        self._fanout.start(int(row[0]))
        self._stopped = False
        self._jobs = asyncio.Queue()
        self._tasks.spawn(self._write_loop(), name="writer")
        self._tasks.spawn(self._listen(), name="listen")
        self._tasks.spawn(self._follow(), name="follow")
        self._tasks.spawn(self._expire_leases(), name="lease-expiry")
        if self.compact_interval_s:
            self._tasks.spawn(compact_periodically(self, self.compact_interval_s), name="compaction")

    async def stop(self) -> None:
        """End watches, stop the loops, close the connections."""
        if self._stopped:
            return
        self._stopped = True
        self._fanout.close()
        await self._tasks.stop()
        for _ in range(self._pool_size):
            conn = await self._pool.get()
            if conn is not None:
                await conn.close()

    async def _connect(self) -> AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s)))

    @contextlib.asynccontextmanager
    async def _conn(self, fresh: bool = False) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection (``fresh``: a new one in its place); a broken one is dropped and
        reconnected on next use; errors become RevStoreError."""
        if self._stopped:
            raise RevStoreError("the revision store is not running")
        conn = await self._pool.get()
        try:
            if fresh and conn is not None:
                await conn.close()
            if conn is None or conn.closed:
                conn = await self._connect()
            yield conn
        except psycopg.Error as e:
            if conn is not None and (conn.closed or isinstance(e, psycopg.OperationalError)):
                await conn.close()
                conn = None
            raise RevStoreError(f"PostgreSQL: {e}") from e
        finally:
            self._pool.put_nowait(conn)

    async def _read(self, fn: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run a read on a pooled connection, and once more on a fresh one if that connection's session
        had ended (the database restarted, or the session was terminated): reads are safe to repeat."""
        try:
            async with self._conn() as conn:
                return await fn(conn)
        except RevStoreError as e:
            if not isinstance(e.__cause__, psycopg.OperationalError):
                raise
        async with self._conn(fresh=True) as conn:  # the next pooled one may have lost its session too
            return await fn(conn)

    # -- reads ------------------------------------------------------------
    async def revision(self) -> int:
        """The database's current revision (every server's writes)."""
        async def fn(conn: AsyncConnection[Any]) -> int:
            cur = await conn.execute("SELECT revision FROM kine_meta WHERE id = 1")
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])
        return await self._read(fn)

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        """One key at ``revision`` (0: now)."""
        if revision == 0:
            async def fn(conn: AsyncConnection[Any]) -> KeyValue | None:
                cur = await conn.execute(
                    f"SELECT {_COLS} FROM kine WHERE name = %s ORDER BY id DESC LIMIT 1", (enc(key),))
                row = await cur.fetchone()
                return None if row is None or row[6] else _kv(row)
            return await self._read(fn)
        res = await self.range_bounds(enc(key), enc(key) + b"\0", 1, revision)
        return res.kvs[0] if res.kvs else None

    async def range(
        self, prefix: str, *, start: str | None = None, limit: int = 0, revision: int = 0
    ) -> RangeResult:
        """Keys starting with ``prefix`` from ``start``, at most ``limit``, as of ``revision``."""
        lo, hi = _bounds(prefix, True)
        if start is not None and enc(start) > lo:
            lo = enc(start)
        return await self.range_bounds(lo, hi, limit, revision)

    async def range_bounds(self, lo: bytes, hi: bytes | None, limit: int, revision: int) -> RangeResult:
        """Keys in ``[lo, hi)`` as of ``revision``, read in one snapshot with the revision itself."""
        where, p = _range_where(lo, hi)

        async def fn(conn: AsyncConnection[Any]) -> RangeResult:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur = await conn.execute("SELECT revision, compact_revision FROM kine_meta WHERE id = 1")
                meta = await cur.fetchone()
                assert meta is not None
                current, compacted = int(meta[0]), int(meta[1])
                if revision > current:
                    raise FutureRevision(f"required revision {revision} is a future revision (current {current})")
                if 0 < revision < compacted:
                    raise Compacted(revision, compacted)
                src = _latest_sql(where, revision not in (0, current))
                p["rev"] = revision
                sql = f"{src} ORDER BY name" + (" LIMIT %(limit)s" if limit > 0 else "")
                cur = await conn.execute(sql, {**p, "limit": limit})
                kvs = [_kv(r) for r in await cur.fetchall()]
                count = len(kvs)
                if limit > 0 and count == limit:
                    cur = await conn.execute(f"SELECT COUNT(*) FROM ({src}) c", p)
                    n = await cur.fetchone()
                    count = int(n[0]) if n else count
            return RangeResult(kvs, current, more=count > len(kvs), count=count)
        return await self._read(fn)

    # -- writes -----------------------------------------------------------
    async def put(self, key: str, value: bytes, *, lease: int = 0) -> KeyValue:
        """Write a key; returns its new state once committed and offered to this store's watchers."""
        r = await self.txn([], [Op.put(key, value, lease)])
        return r.results[0][0]

    async def delete(self, key: str, *, prefix: bool = False) -> list[KeyValue]:
        """Delete a key (or a prefix) as one revision; nothing deleted means no new revision."""
        r = await self.txn([], [Op.delete(key, prefix)])
        return r.results[0]

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = (), *,
                  answer_first: bool = False) -> TxnResult:
        """Under the meta row lock: compare the current state, run one branch as one revision."""
        check_txn_ops(success)
        check_txn_ops(failure)

        async def fn(conn: AsyncConnection[Any], rev: int) -> tuple[TxnResult, _Changes]:
            ok = True
            for c in compare:
                if not compare_holds(c, await self._current(conn, c.key)):
                    ok = False
                    break
            results: list[list[KeyValue]] = []
            events: _Changes = []
            for op in success if ok else failure:
                if op.kind == "put":
                    kv, prev = await self._put(conn, rev, op.key, bytes(op.value), op.lease)
                    results.append([kv])
                    events.append((enc(kv.key), Event("PUT", kv, prev)))
                elif op.kind == "delete":
                    gone = await self._delete(conn, rev, *_bounds(op.key, op.prefix))
                    results.append(gone)
                    events += _deletions(rev, gone)
                else:
                    where, p = _range_where(*_bounds(op.key, op.prefix))
                    cur = await conn.execute(_latest_sql(where, False) + " ORDER BY name", p)
                    results.append([_kv(r) for r in await cur.fetchall()])
            return TxnResult(ok, rev if events else rev - 1, results), events

        result: TxnResult = await self._submit(fn)
        return result

    # -- the writer ---------------------------------------------------------
    async def _submit(self, fn: _WriteFn) -> Any:
        """Queue a write for the writer; once it is committed, wait until it was fanned out here."""
        if self._stopped:
            raise RevStoreError("the revision store is not running")
        job = _Job(fn, asyncio.get_running_loop().create_future())
        self._jobs.put_nowait(job)
        result = await job.future
        if job.revision:
            await self._until_published(job.revision)
        return result

    async def _write_loop(self) -> None:
        """Group commit: the writes queued meanwhile go into one transaction under one meta lock,
        each its own revision (and savepoint), with one WAL flush for all."""
        conn: AsyncConnection[Any] | None = None
        batch: list[_Job] = []
        try:
            while True:
                batch = [await self._jobs.get()]
                while len(batch) < _BATCH_MAX and not self._jobs.empty():
                    batch.append(self._jobs.get_nowait())
                try:
                    if conn is None or conn.closed:
                        conn = await self._connect()
                        self._writer_pid = conn.info.backend_pid
                    await self._run_batch(conn, batch)
                except _Failed:  # its one job holds the error; the transaction was rolled back
                    pass
                except psycopg.Error as e:
                    err = RevStoreError(f"PostgreSQL: {e}")
                    for job in batch:
                        job.error, job.revision, job.events = err, 0, []
                    if conn is not None and (conn.closed or isinstance(e, psycopg.OperationalError)):
                        await conn.close()
                        conn = None
                self._publish_own(batch)
                for job in batch:
                    if job.future.done():  # the caller was cancelled; its write stands
                        continue
                    if job.error is not None:
                        job.future.set_exception(job.error)
                    else:
                        job.future.set_result(job.result)
                batch = []
        finally:
            stopped = RevStoreError("the revision store stopped")
            while not self._jobs.empty():
                batch.append(self._jobs.get_nowait())
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(stopped)
            if conn is not None:
                await conn.close()

    def _publish_own(self, batch: list[_Job]) -> None:
        """Fan a committed batch out at once when every revision before it was (the common case on a
        server that writes); otherwise the follower delivers it in order from the table."""
        mine = [j for j in batch if j.revision]
        if not mine or self._fanout.published != mine[0].revision - 1:
            self._kick.set()
            return
        for j in mine:
            self._fanout.publish(j.revision, j.events)

    async def _run_batch(self, conn: AsyncConnection[Any], batch: list[_Job]) -> None:
        async with conn.transaction():
            cur = await conn.execute("SELECT revision FROM kine_meta WHERE id = 1 FOR UPDATE")
            row = await cur.fetchone()
            assert row is not None
            start = rev = int(row[0])
            for job in batch:
                try:
                    if len(batch) == 1:  # no savepoint needed: a failure rolls back the whole transaction
                        job.result, job.events = await job.fn(conn, rev + 1)
                    else:
                        async with conn.transaction():
                            job.result, job.events = await job.fn(conn, rev + 1)
                except (RevStoreError, psycopg.Error) as e:
                    job.error = e if isinstance(e, RevStoreError) else RevStoreError(f"PostgreSQL: {e}")
                    if len(batch) == 1:
                        raise _Failed() from e
                    continue
                if job.events:
                    rev += 1
                    job.revision = rev
            if rev != start:
                await conn.execute("UPDATE kine_meta SET revision = %s WHERE id = 1 RETURNING pg_notify(%s, %s)",
                                   (rev, CHANNEL, str(rev)))

    async def _current(self, conn: AsyncConnection[Any], key: str) -> KeyValue | None:
        cur = await conn.execute(f"SELECT {_COLS} FROM kine WHERE name = %s ORDER BY id DESC LIMIT 1", (enc(key),))
        row = await cur.fetchone()
        return None if row is None or row[6] else _kv(row)

    async def _put(self, conn: AsyncConnection[Any], rev: int, key: str, value: bytes,
                   lease: int) -> tuple[KeyValue, KeyValue | None]:
        if lease:
            # Overdue counts as gone, as in etcd, even before an expiry check has revoked it.
            cur = await conn.execute(
                "SELECT 1 FROM kine_leases WHERE id = %s AND expires_at > clock_timestamp()", (lease,))
            if await cur.fetchone() is None:
                raise LeaseNotFound(f"lease {lease} not found")
        prev = await self._current(conn, key)
        create = prev.create_revision if prev else rev
        version = prev.version + 1 if prev else 1
        await conn.execute(
            "INSERT INTO kine (revision, name, created, deleted, create_revision, prev_revision, lease, version, "
            "value, old_value) VALUES (%s, %s, %s, false, %s, %s, %s, %s, %s, %s)",
            (rev, enc(key), prev is None, create, prev.mod_revision if prev else 0, lease, version, value,
             prev.value if prev else None))
        return KeyValue(key, value, create, rev, version, lease), prev

    async def _delete(self, conn: AsyncConnection[Any], rev: int, lo: bytes, hi: bytes | None) -> list[KeyValue]:
        where, p = _range_where(lo, hi)
        cur = await conn.execute(_latest_sql(where, False) + " ORDER BY name", p)
        prev = [_kv(r) for r in await cur.fetchall()]
        await self._tombstones(conn, rev, prev)
        return prev

    async def _tombstones(self, conn: AsyncConnection[Any], rev: int, prev: list[KeyValue]) -> None:
        if not prev:
            return
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO kine (revision, name, created, deleted, create_revision, prev_revision, lease, "
                "version, value, old_value) VALUES (%s, %s, false, true, %s, %s, 0, 0, '', %s)",
                [(rev, enc(kv.key), kv.create_revision, kv.mod_revision, kv.value) for kv in prev])

    async def compact(self, revision: int) -> None:
        """Forget history before ``revision``; each key's state at ``revision`` stays readable.

        Compacting at or below the current compaction point does nothing.
        """
        async def fn(conn: AsyncConnection[Any], rev: int) -> tuple[None, _Changes]:
            if revision >= rev:
                raise FutureRevision(f"required revision {revision} is a future revision")
            cur = await conn.execute("SELECT compact_revision FROM kine_meta WHERE id = 1")
            row = await cur.fetchone()
            if row is None or revision <= int(row[0]):
                return None, []
            # Keep, per key, the newest change at or below `revision` unless it is a deletion.
            await conn.execute(
                "DELETE FROM kine k WHERE k.revision < %(r)s AND (k.deleted OR k.id < ("
                "SELECT MAX(h.id) FROM kine h WHERE h.name = k.name AND h.revision <= %(r)s))", {"r": revision})
            await conn.execute("UPDATE kine_meta SET compact_revision = %s WHERE id = 1", (revision,))
            return None, []

        await self._submit(fn)

    # -- leases -------------------------------------------------------------
    async def grant(self, ttl_s: float) -> int:
        """A new lease of ``ttl_s`` seconds (at least 0.5 s); its deadline is on the database's clock."""
        ttl = max(float(ttl_s), _MIN_TTL_S)
        lease_id = secrets.randbits(62) + 1
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO kine_leases VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s))",
                (lease_id, ttl, ttl))
        return lease_id

    async def keepalive(self, lease: int) -> float:
        """Push the lease's deadline a whole TTL ahead; an overdue lease is gone, as in etcd."""
        async with self._conn() as conn:
            cur = await conn.execute(
                "UPDATE kine_leases SET expires_at = clock_timestamp() + make_interval(secs => ttl) "
                "WHERE id = %s AND expires_at > clock_timestamp() RETURNING ttl", (lease,))
            row = await cur.fetchone()
        if row is None:
            raise LeaseNotFound(f"lease {lease} not found")
        return float(row[0])

    async def revoke(self, lease: int) -> None:
        """Delete the lease and its keys, as one revision."""
        async def fn(conn: AsyncConnection[Any], rev: int) -> tuple[None, _Changes]:
            cur = await conn.execute("DELETE FROM kine_leases WHERE id = %s RETURNING id", (lease,))
            if await cur.fetchone() is None:
                raise LeaseNotFound(f"lease {lease} not found")
            # Keys whose newest row carries the lease (an older row may, with the key since re-put).
            cur = await conn.execute(
                f"SELECT {_COLS} FROM (SELECT DISTINCT ON (name) {_COLS} FROM kine WHERE name IN "
                f"(SELECT name FROM kine WHERE lease = %(l)s) ORDER BY name, id DESC) s "
                f"WHERE lease = %(l)s AND NOT deleted ORDER BY name", {"l": lease})
            prev = [_kv(r) for r in await cur.fetchall()]
            await self._tombstones(conn, rev, prev)
            return None, _deletions(rev, prev)

        await self._submit(fn)

    async def _expire_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease_check_s)
            try:
                async with self._conn() as conn:
                    cur = await conn.execute("SELECT id FROM kine_leases WHERE expires_at <= clock_timestamp()")
                    expired = [int(r[0]) for r in await cur.fetchall()]
            except RevStoreError as e:
                log.warning("lease expiry check failed", extra={"error": str(e)})
                continue
            # Together, so the revocations share a group commit; each is still its own revision.
            results = await asyncio.gather(*(self.revoke(lease) for lease in expired), return_exceptions=True)
            for lease, r in zip(expired, results, strict=True):
                # LeaseNotFound: another server revoked it first
                if isinstance(r, BaseException) and not isinstance(r, LeaseNotFound):
                    log.warning("lease revocation failed", extra={"lease": lease, "error": repr(r)})

    # -- watches ------------------------------------------------------------
    def watch(self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False) -> AsyncIterator[list[Event]]:
        """Events under ``prefix``, one list per revision, from ``start_revision`` (0: from now on)."""
        if self._stopped:
            raise RevStoreError("the revision store is not running")
        return self._fanout.watch(prefix, start_revision, prev_kv)

    async def _read_history(self, w: Watcher, first: int, last: int) -> list[list[Event]]:
        cond = " AND k.name >= %(lo)s" + ("" if w.hi is None else " AND k.name < %(hi)s")

        async def fn(conn: AsyncConnection[Any]) -> list[list[Event]]:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur = await conn.execute("SELECT compact_revision FROM kine_meta WHERE id = 1")
                row = await cur.fetchone()
                assert row is not None
                if first < int(row[0]):
                    raise Compacted(first, int(row[0]))
                cur = await conn.execute(_EVENTS_SQL.format(cond=cond),
                                         {"first": first, "last": last, "lo": w.lo, "hi": w.hi})
                rows = await cur.fetchall()
            # The rows carry each change's previous value; a watcher that did not ask for it gets none.
            return [[ev if w.prev_kv or ev.prev_kv is None else Event(ev.type, ev.kv) for _, ev in batch]
                    for batch in _events(rows)]
        return await self._read(fn)

    async def _until_published(self, rev: int) -> None:
        """Wait (bounded) until ``rev`` was fanned out here; the write is committed either way."""
        if self._fanout.published >= rev:
            return
        self._kick.set()
        async with self._published:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._published.wait_for(lambda: self._fanout.published >= rev),
                                       max(5.0, self.poll_s * 5))

    async def _follow(self) -> None:
        """Read committed revisions after the last published one and fan them out, in order."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.poll_s)
            self._kick.clear()
            try:
                await self._catch_up()
            except RevStoreError as e:
                log.warning("revstore follower read failed", extra={"error": str(e)})

    async def _catch_up(self) -> None:
        while True:
            done = self._fanout.published
            async with self._conn() as conn, conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur = await conn.execute("SELECT revision, compact_revision FROM kine_meta WHERE id = 1")
                meta = await cur.fetchone()
                assert meta is not None
                current, compacted = int(meta[0]), int(meta[1])
                if current <= done:
                    return
                if done + 1 < compacted:  # only if this server stalled for a whole compaction period
                    log.error("revstore follower fell behind compaction; live watches skip revisions",
                              extra={"published": done, "compact_revision": compacted})
                last = min(current, done + HISTORY_PAGE_REVS)
                cur = await conn.execute(_EVENTS_SQL.format(cond=""), {"first": done + 1, "last": last})
                rows = await cur.fetchall()
            for batch in _events(rows):
                rev = batch[0][1].kv.mod_revision
                if rev > self._fanout.published:  # the writer may have delivered this server's own already
                    self._fanout.publish(rev, batch)
            self._fanout.advance(last)
            async with self._published:
                self._published.notify_all()

    async def _listen(self) -> None:
        """Turn notifications into kicks of the follower; reconnect with back-off when the connection drops."""
        backoff = 0.5
        while True:
            try:
                conn = await self._connect()
                try:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    backoff = 0.5
                    self._kick.set()  # anything committed while not listening
                    async for n in conn.notifies():
                        if n.pid != self._writer_pid:  # this server's own writes are delivered already
                            self._kick.set()
                finally:
                    await conn.close()
            except psycopg.Error as e:
                log.warning("revstore LISTEN connection lost", extra={"error": str(e)})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
