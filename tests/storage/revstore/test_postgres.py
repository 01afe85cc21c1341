"""What only the PostgreSQL backend has: several servers on one database, the notification
connection dropping, a restart, kill -9 of a leader, a bad DSN."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from pitwall.config import load_settings
from pitwall.core.errors import ConfigError
from pitwall.storage.revstore import Compacted, Event, RevStoreError
from pitwall.storage.revstore.postgres import PostgresRevStore

from .conftest import PostgresServer, assert_takeover_after_kill_9, free_port, start_postgres

pytestmark = pytest.mark.timeout(90)


async def _next(it: object, timeout: float = 20) -> list[Event]:
    return await asyncio.wait_for(anext(it), timeout)  # type: ignore[call-overload, no-any-return]


async def test_two_servers_see_each_others_writes(postgres_server: PostgresServer) -> None:
    """A watch on one store follows writes made through another (its own connections: another server)."""
    dsn = postgres_server.create_database()
    a, b = PostgresRevStore(dsn, compact_interval_s=None), PostgresRevStore(dsn, compact_interval_s=None)
    await a.start()
    await b.start()
    try:
        first = await a.put("/x/k", b"from a")
        watch = b.watch("/x/", start_revision=first.mod_revision, prev_kv=True)
        assert [e.kv.value for e in await _next(watch)] == [b"from a"]
        second = await a.put("/x/k", b"again from a")
        [ev] = await _next(watch)
        assert ev.kv == second and ev.prev_kv == first
        assert await b.get("/x/k") == second and await b.revision() == second.mod_revision
        await watch.aclose()  # type: ignore[attr-defined]
    finally:
        await a.stop()
        await b.stop()


async def test_watch_survives_losing_the_listen_connection(postgres_server: PostgresServer) -> None:
    """With the LISTEN session killed, events still arrive (the poll), and notifications come back."""
    dsn = postgres_server.create_database()
    writer = PostgresRevStore(dsn, compact_interval_s=None)
    reader = PostgresRevStore(dsn, compact_interval_s=None, poll_s=0.5)
    await writer.start()
    await reader.start()
    try:
        first = await writer.put("/l/k", b"first")
        watch = reader.watch("/l/", start_revision=first.mod_revision)
        assert [e.kv.value for e in await _next(watch)] == [b"first"]  # live from here on
        with psycopg.connect(dsn, autocommit=True) as admin:
            for _ in range(100):
                killed = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%%'").fetchall()
                if killed:
                    break
                await asyncio.sleep(0.1)
            assert killed, "no LISTEN session found"
        revs = []
        for i in range(5):
            revs.append((await writer.put("/l/k", str(i).encode())).mod_revision)
            await asyncio.sleep(0.2)
        got: list[int] = []
        while len(got) < 5:
            got += [e.kv.mod_revision for e in await _next(watch)]
        assert got == revs
        await watch.aclose()  # type: ignore[attr-defined]
    finally:
        await writer.stop()
        await reader.stop()


async def test_reads_survive_their_sessions_ending(postgres_server: PostgresServer) -> None:
    """Every pooled session terminated (as a database restart or an operator would): reads go on."""
    dsn = postgres_server.create_database()
    store = PostgresRevStore(dsn, compact_interval_s=None)
    await store.start()
    try:
        kv = await store.put("/s/k", b"v")
        await asyncio.gather(*(store.range("/s/") for _ in range(8)))  # every pooled connection opened
        with psycopg.connect(dsn, autocommit=True) as admin:  # blocking on purpose: no loop runs meanwhile
            ended = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
        assert len(ended) >= 4
        assert [await store.get("/s/k") for _ in range(6)] == [kv] * 6
        assert (await store.range("/s/")).kvs == [kv] and await store.revision() == kv.mod_revision
    finally:
        await store.stop()


async def test_restart_keeps_everything(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.create_database()
    s = PostgresRevStore(dsn, compact_interval_s=None)
    await s.start()
    kv = await s.put("/r/a", b"1")
    await s.put("/r/a", b"2")
    lease = await s.grant(60)
    await s.put("/r/leased", b"", lease=lease)
    await s.compact(kv.mod_revision + 1)
    await s.stop()
    s = PostgresRevStore(dsn, compact_interval_s=None)
    await s.start()
    try:
        assert (await s.get("/r/a")).value == b"2"  # type: ignore[union-attr]
        assert await s.revision() == kv.mod_revision + 2
        with pytest.raises(Compacted):
            await s.get("/r/a", revision=kv.mod_revision)
        assert await s.keepalive(lease) == 60.0  # leases live in the database
        nxt = await s.put("/r/b", b"")
        assert nxt.mod_revision == kv.mod_revision + 3
    finally:
        await s.stop()


async def test_another_server_expires_an_abandoned_lease(postgres_server: PostgresServer) -> None:
    """Deadlines are on the database clock: a surviving server deletes a dead server's keys."""
    dsn = postgres_server.create_database()
    dead, alive = PostgresRevStore(dsn, compact_interval_s=None), PostgresRevStore(dsn, compact_interval_s=None)
    await dead.start()
    await alive.start()
    try:
        lease = await dead.grant(1)
        kv = await dead.put("/e/k", b"", lease=lease)
        await dead.stop()  # no revocation; nobody renews
        watch = alive.watch("/e/", start_revision=kv.mod_revision + 1)
        [ev] = await _next(watch)
        assert ev.type == "DELETE" and ev.kv.key == "/e/k"
        await watch.aclose()  # type: ignore[attr-defined]
    finally:
        await alive.stop()


async def test_a_bad_dsn_is_a_clear_error() -> None:
    store = PostgresRevStore(f"postgresql://nobody@127.0.0.1:{free_port()}/none", connect_timeout_s=2)
    with pytest.raises(RevStoreError, match="cannot connect to PostgreSQL"):
        await store.start()


@pytest.mark.timeout(120)
async def test_failover_after_kill_9(postgres_server: PostgresServer) -> None:
    """A leader process on PostgreSQL is killed with SIGKILL; the survivor takes over once its lease expires."""
    dsn = postgres_server.create_database()
    store = PostgresRevStore(dsn, compact_interval_s=None)
    await store.start()
    try:
        await assert_takeover_after_kill_9(store, "postgres", dsn, ttl_s=3.0)
    finally:
        await store.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_database_restart_under_writes_and_a_watch() -> None:
    """PostgreSQL restarts: calls fail while it is down, then work again on new connections, and the
    watch goes on after the last revision it delivered, with no gap."""
    server = await asyncio.to_thread(start_postgres)
    store = PostgresRevStore(server.dsn(), compact_interval_s=None, poll_s=0.5, connect_timeout_s=2)
    try:
        await store.start()
        first = await store.put("/d/k", b"0")
        watch = store.watch("/d/", start_revision=first.mod_revision)
        seen = [e.kv.mod_revision for e in await _next(watch)]
        await asyncio.to_thread(server.stop_server)
        with pytest.raises(RevStoreError):
            await store.put("/d/k", b"down")
        await asyncio.to_thread(server.run_server)
        # A read is repeated once on a fresh connection when its pooled one's session is gone.
        assert [(await store.get("/d/k")).value for _ in range(5)] == [b"0"] * 5  # type: ignore[union-attr]
        written = [first.mod_revision]
        for i in range(1, 4):
            for _attempt in range(20):  # each pooled connection finds out once that its session is gone
                try:
                    written.append((await store.put("/d/k", str(i).encode())).mod_revision)
                    break
                except RevStoreError:
                    await asyncio.sleep(0.1)
        assert len(written) == 4 and written == list(range(first.mod_revision, first.mod_revision + 4))
        while len(seen) < 4:
            seen += [e.kv.mod_revision for e in await _next(watch, 30)]
        assert seen == written
        await watch.aclose()  # type: ignore[attr-defined]
    finally:
        await store.stop()
        server.stop()


def test_the_postgres_backend_needs_a_dsn(tmp_path: Path) -> None:
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text("state:\n  backend: postgres\n")
    with pytest.raises(ConfigError, match=r"state\.dsn"):
        load_settings(cfg)
    cfg.write_text("state:\n  backend: postgres\n  dsn: postgresql://pitwall@db/pitwall\n")
    assert load_settings(cfg).state.dsn == "postgresql://pitwall@db/pitwall"
