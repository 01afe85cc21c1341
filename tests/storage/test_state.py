"""The SQLite state store: silences, notification log and the pending-notification queue."""

from __future__ import annotations

from pathlib import Path

from pitwall.storage.state import NflogRow, SilenceRow, StateStore, sqlite_url


def test_rows_survive_reopen(tmp_path: Path) -> None:
    s = StateStore(sqlite_url(tmp_path))
    s.put_silence(SilenceRow("s1", {"id": "s1", "comment": "x"}, ends_at=100.0, updated_at=1.0))
    s.put_silence(SilenceRow("s1", {"id": "s1", "comment": "y"}, ends_at=200.0, updated_at=2.0))
    s.put_nflog(NflogRow("r/webhook/0", "{}:{}", 5.0, [1, 2], [3], expires_at=50.0))
    s.close()
    s = StateStore(sqlite_url(tmp_path))
    try:
        (sil,) = s.load_silences()
        assert sil.doc == {"id": "s1", "comment": "y"} and sil.ends_at == 200.0
        assert s.load_nflog() == [NflogRow("r/webhook/0", "{}:{}", 5.0, [1, 2], [3], 50.0)]
        assert s.delete_silences_ended_before(300.0) == 1 and s.load_silences() == []
        assert s.delete_nflog_expired(60.0) == 1
    finally:
        s.close()


def test_pending_queue_replaces_per_group_and_guards_by_seq(tmp_path: Path) -> None:
    s = StateStore(sqlite_url(tmp_path))
    try:
        id1, seq1 = s.put_pending("r/webhook/0", "g1", {"n": 1}, now=10.0)
        id2, seq2 = s.put_pending("r/webhook/0", "g1", {"n": 2}, now=11.0)
        assert (id2, seq2) == (id1, seq1 + 1)
        other, _ = s.put_pending("r/webhook/0", "g2", {"n": 3}, now=12.0)
        assert [r.payload for r in s.list_pending()] == [{"n": 2}, {"n": 3}]
        # A stale delivery (older seq) must not delete the newer notification.
        assert not s.delete_pending(id1, seq1)
        s.reschedule_pending(id1, seq2, attempts=1, next_attempt=99.0, error="boom")
        row = s.list_pending()[0]
        assert (row.attempts, row.next_attempt, row.last_error) == (1, 99.0, "boom")
        assert s.delete_pending(id1, seq2)
        s.drop_pending(other)
        assert s.count_pending() == 0
    finally:
        s.close()


def test_migrations_bring_every_database_to_the_declared_schema(tmp_path: Path) -> None:
    """A new database and one made by create_all before migrations existed end with the same tables,
    each stamped at the newest revision; reopening is a no-op."""
    from sqlalchemy import create_engine, inspect, text

    from pitwall.storage.state import metadata, migrate, silences

    fresh = StateStore(f"sqlite:///{tmp_path / 'fresh.db'}")
    old_engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    silences.metadata.create_all(old_engine, tables=[silences])  # an old database: one table, no version
    with old_engine.begin() as c:
        c.execute(text("INSERT INTO silences VALUES ('default', 's1', '{}', 1.0, 1.0)"))
    migrate(old_engine)
    migrate(old_engine)  # idempotent
    for engine in (fresh.engine, old_engine):
        insp = inspect(engine)
        assert set(metadata.tables) <= set(insp.get_table_names())
        for name, table in metadata.tables.items():
            assert {c["name"] for c in insp.get_columns(name)} == set(table.columns.keys()), name
        with engine.connect() as c:
            assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    with old_engine.connect() as c:
        assert c.execute(text("SELECT id FROM silences")).scalar() == "s1"  # kept
    fresh.close()
    old_engine.dispose()


def test_an_empty_database_gets_the_schema_the_migrations_build(tmp_path: Path) -> None:
    """``migrate`` creates an empty database from the declared tables and stamps it without Alembic; running
    Alembic's migrations on another empty database gives the same tables, indexes and version rows."""
    import sqlite3

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from pitwall.storage import state

    def schema(path: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
        with sqlite3.connect(path) as db:
            ddl = [(t, n, " ".join((sql or "").split()))
                   for t, n, sql in db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")]
            versions = [r[0] for r in db.execute("SELECT version_num FROM alembic_version ORDER BY 1")]
        return ddl, versions

    direct = create_engine(f"sqlite:///{tmp_path / 'direct.db'}")
    state.migrate(direct)
    direct.dispose()
    by_alembic = create_engine(f"sqlite:///{tmp_path / 'alembic.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(state.__file__).parent / "migrations"))
    with by_alembic.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    by_alembic.dispose()
    ddl, versions = schema(tmp_path / "direct.db")
    assert {name for kind, name, _ in ddl if kind == "table"} == {*state.metadata.tables, "alembic_version"}
    assert versions == sorted(state.migration_heads())
    assert (ddl, versions) == schema(tmp_path / "alembic.db")
