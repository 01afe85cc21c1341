"""The control-plane state store: SQLAlchemy Core 2 on SQLite (PostgreSQL later).

Holds what must survive a restart but is not telemetry: Alertmanager-style
silences, the notification log (what was sent to whom, for deduplication),
notifications still waiting to be delivered and dashboards saved from the UI.
Every table is declared here, in one schema, and created or changed only by
the Alembic migrations in ``storage/migrations`` (a new table or column is a
new revision there), which ``StateStore`` applies when it opens (an empty
database gets the declared tables and the newest revision directly, as
Alembic's cookbook builds one from scratch). Rows are plain values (JSON
documents where the shape belongs to the pillar), so this module imports no
pillar. Every row carries a tenant id (``default`` for now).
"""

from __future__ import annotations

import ast
import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    text,
    update,
)

__all__ = ["NflogRow", "PendingRow", "SilenceRow", "StateStore", "migrate", "migration_heads", "sqlite_url", "ui_dashboards"]

DEFAULT_TENANT = "default"

metadata = MetaData()

silences = Table(
    "silences", metadata,
    Column("tenant", String(150), primary_key=True, default=DEFAULT_TENANT),
    Column("id", String(64), primary_key=True),
    Column("doc", Text, nullable=False),  # the silence as JSON (matchers, times, author, comment)
    Column("ends_at", Float, nullable=False),  # unix seconds, for retention
    Column("updated_at", Float, nullable=False),
)

nflog = Table(
    "nflog", metadata,
    Column("tenant", String(150), primary_key=True, default=DEFAULT_TENANT),
    Column("receiver", String(512), primary_key=True),  # receiver name/integration/index
    Column("group_key", Text, primary_key=True),
    Column("timestamp", Float, nullable=False),
    Column("firing", Text, nullable=False),  # JSON list of alert hashes
    Column("resolved", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
)

pending = Table(
    "pending_notifications", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(150), nullable=False, default=DEFAULT_TENANT),
    Column("receiver", String(512), nullable=False),
    Column("group_key", Text, nullable=False),
    Column("seq", Integer, nullable=False, default=0),  # bumped when a newer notification replaces it
    Column("payload", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_error", Text, nullable=False, default=""),
    UniqueConstraint("tenant", "receiver", "group_key", name="pending_one_per_group"),
)

# Dashboards saved from the web UI (provisioned YAML files live on disk instead).
ui_dashboards = Table(
    "ui_dashboards", metadata,
    Column("tenant", String(150), primary_key=True),
    Column("uid", String(128), primary_key=True),
    Column("yaml", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)


# Alembic's own version table, as its ``MigrationContext`` declares it (kept out of ``metadata``).
_alembic_version = Table(
    "alembic_version", MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema (``storage/migrations``, Alembic), creating it if empty.

    Neither a database already at the newest revision nor an empty one imports Alembic (and Mako,
    ~140 modules and 11 MiB of RSS for the process's life): the first is left alone, the second gets
    the declared tables and is stamped at the newest revision, which is what the migrations build
    (``tests/storage/test_state.py`` compares the two schemas). Only an older database runs them.
    """
    if _at_head(engine) or _create_if_empty(engine):
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@functools.cache
def migration_heads() -> frozenset[str]:
    """The head revisions of ``storage/migrations/versions``, read from the scripts' ``revision`` and
    ``down_revision`` assignments as Alembic reads them (a revision no other one revises)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for script in (Path(__file__).parent / "migrations" / "versions").glob("*.py"):
        for node in ast.parse(script.read_text(encoding="utf-8")).body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)):
                continue
            name, value = node.targets[0].id, node.value
            if name == "revision":
                revisions.add(ast.literal_eval(value))
            elif name == "down_revision":
                down = ast.literal_eval(value)
                revised.update([down] if isinstance(down, str) else down or ())
    return frozenset(revisions - revised)


def _create_if_empty(engine: Engine) -> bool:
    """Create the declared schema stamped at the newest revision if the database has no table at all."""
    with engine.begin() as conn:
        if inspect(conn).get_table_names():
            return False
        metadata.create_all(conn)
        _alembic_version.create(conn)
        conn.execute(insert(_alembic_version), [{"version_num": head} for head in sorted(migration_heads())])
    return True


def _at_head(engine: Engine) -> bool:
    """Whether the database's ``alembic_version`` rows are exactly the migrations' heads."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        stamped = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
    return stamped == migration_heads()


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'state.db'}"


@dataclass(frozen=True)
class SilenceRow:
    id: str
    doc: dict[str, Any]
    ends_at: float
    updated_at: float


@dataclass(frozen=True)
class NflogRow:
    receiver: str
    group_key: str
    timestamp: float
    firing: list[int]
    resolved: list[int]
    expires_at: float


@dataclass(frozen=True)
class PendingRow:
    id: int
    receiver: str
    group_key: str
    seq: int
    payload: dict[str, Any]
    attempts: int
    next_attempt: float
    created_at: float
    last_error: str


class StateStore:
    """Small synchronous transactions; callers run them off the event loop when they may block."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- silences ---------------------------------------------------------
    def put_silence(self, row: SilenceRow, tenant: str = DEFAULT_TENANT) -> None:
        with self._tx() as c:
            c.execute(delete(silences).where(silences.c.tenant == tenant, silences.c.id == row.id))
            c.execute(insert(silences).values(tenant=tenant, id=row.id, doc=json.dumps(row.doc),
                                              ends_at=row.ends_at, updated_at=row.updated_at))

    def load_silences(self, tenant: str = DEFAULT_TENANT) -> list[SilenceRow]:
        with self._tx() as c:
            rows = c.execute(select(silences).where(silences.c.tenant == tenant)).all()
        return [SilenceRow(r.id, json.loads(r.doc), r.ends_at, r.updated_at) for r in rows]

    def delete_silences_ended_before(self, t: float, tenant: str = DEFAULT_TENANT) -> int:
        with self._tx() as c:
            res = c.execute(delete(silences).where(silences.c.tenant == tenant, silences.c.ends_at < t))
        return int(res.rowcount or 0)

    # -- notification log -------------------------------------------------
    def put_nflog(self, row: NflogRow, tenant: str = DEFAULT_TENANT) -> None:
        with self._tx() as c:
            c.execute(delete(nflog).where(nflog.c.tenant == tenant, nflog.c.receiver == row.receiver,
                                          nflog.c.group_key == row.group_key))
            c.execute(insert(nflog).values(tenant=tenant, receiver=row.receiver, group_key=row.group_key,
                                           timestamp=row.timestamp, firing=json.dumps(row.firing),
                                           resolved=json.dumps(row.resolved), expires_at=row.expires_at))

    def load_nflog(self, tenant: str = DEFAULT_TENANT) -> list[NflogRow]:
        with self._tx() as c:
            rows = c.execute(select(nflog).where(nflog.c.tenant == tenant)).all()
        return [NflogRow(r.receiver, r.group_key, r.timestamp, json.loads(r.firing), json.loads(r.resolved),
                         r.expires_at) for r in rows]

    def delete_nflog_expired(self, now: float, tenant: str = DEFAULT_TENANT) -> int:
        with self._tx() as c:
            res = c.execute(delete(nflog).where(nflog.c.tenant == tenant, nflog.c.expires_at < now))
        return int(res.rowcount or 0)

    # -- pending notifications --------------------------------------------
    def put_pending(self, receiver: str, group_key: str, payload: dict[str, Any], now: float,
                    tenant: str = DEFAULT_TENANT) -> tuple[int, int]:
        """Queue a notification, replacing an undelivered older one for the same group and receiver."""
        doc = json.dumps(payload)
        with self._tx() as c:
            old = c.execute(select(pending.c.id, pending.c.seq, pending.c.attempts).where(
                pending.c.tenant == tenant, pending.c.receiver == receiver,
                pending.c.group_key == group_key)).first()
            if old is None:
                res = c.execute(insert(pending).values(
                    tenant=tenant, receiver=receiver, group_key=group_key, seq=0, payload=doc, attempts=0,
                    next_attempt=now, created_at=now, last_error=""))
                assert res.inserted_primary_key is not None
                return int(res.inserted_primary_key[0]), 0
            seq = int(old.seq) + 1
            # A newer notification is due now; attempts carry over so backoff stays honest.
            c.execute(update(pending).where(pending.c.id == old.id).values(
                seq=seq, payload=doc, next_attempt=now))
            return int(old.id), seq

    def list_pending(self, tenant: str = DEFAULT_TENANT) -> list[PendingRow]:
        with self._tx() as c:
            rows = c.execute(select(pending).where(pending.c.tenant == tenant).order_by(pending.c.id)).all()
        return [PendingRow(r.id, r.receiver, r.group_key, r.seq, json.loads(r.payload), r.attempts,
                           r.next_attempt, r.created_at, r.last_error) for r in rows]

    def get_pending(self, id_: int) -> PendingRow | None:
        with self._tx() as c:
            r = c.execute(select(pending).where(pending.c.id == id_)).first()
        if r is None:
            return None
        return PendingRow(r.id, r.receiver, r.group_key, r.seq, json.loads(r.payload), r.attempts, r.next_attempt,
                          r.created_at, r.last_error)

    def count_pending(self, tenant: str = DEFAULT_TENANT) -> int:
        with self._tx() as c:
            return len(c.execute(select(pending.c.id).where(pending.c.tenant == tenant)).all())

    def delete_pending(self, id_: int, seq: int) -> bool:
        """Remove a delivered notification unless a newer one replaced it meanwhile."""
        with self._tx() as c:
            res = c.execute(delete(pending).where(pending.c.id == id_, pending.c.seq == seq))
        return bool(res.rowcount)

    def drop_pending(self, id_: int) -> None:
        with self._tx() as c:
            c.execute(delete(pending).where(pending.c.id == id_))

    def reschedule_pending(self, id_: int, seq: int, attempts: int, next_attempt: float, error: str) -> None:
        with self._tx() as c:
            c.execute(update(pending).where(pending.c.id == id_, pending.c.seq == seq).values(
                attempts=attempts, next_attempt=next_attempt, last_error=error[:2000]))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run beside the writer; FULL makes each commit durable before it returns.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
