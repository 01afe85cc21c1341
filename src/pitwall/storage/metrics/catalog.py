"""The metrics store's catalog tables in DuckDB: series, metric metadata, WAL position.

Contract: ``metrics_series`` maps each series id to its tenant and label
set (JSON pairs, ``walrec.encode_labels``); ids of series forgotten after
retention are deleted and never reused (``metrics_meta`` keeps ``next_sid``);
``metrics_metadata`` holds the
latest metadata per (tenant, metric), rewritten whole at each flush;
``metrics_meta`` keeps ``wal_replay_from``, the first WAL segment a restart
must replay. Writers take a cursor inside the caller's flush transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pitwall.core.labels import Labels
from pitwall.metrics.model import MetricMetadata
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics.walrec import decode_labels, encode_labels

__all__ = [
    "create",
    "delete_series",
    "insert_series",
    "load_metadata",
    "load_series",
    "next_sid",
    "replace_metadata",
    "replay_from",
    "set_replay_from",
]


def create(db: TelemetryDB) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS metrics_series (sid BIGINT PRIMARY KEY, tenant VARCHAR, labels VARCHAR)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS metrics_meta (key VARCHAR PRIMARY KEY, value BIGINT)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS metrics_metadata (tenant VARCHAR, metric VARCHAR, type VARCHAR, "
        "help VARCHAR, unit VARCHAR)"
    )


def load_series(db: TelemetryDB) -> list[tuple[int, str, Labels]]:
    """Every stored series as (sid, tenant, labels), by sid."""
    rows = db.execute("SELECT sid, tenant, labels FROM metrics_series ORDER BY sid").fetchall()
    return [(int(sid), tenant, decode_labels(raw)) for sid, tenant, raw in rows]


def load_metadata(db: TelemetryDB) -> list[tuple[str, MetricMetadata]]:
    return [
        (tenant, MetricMetadata(metric, typ, help_, unit))
        for tenant, metric, typ, help_, unit in db.execute("SELECT * FROM metrics_metadata").fetchall()
    ]


def next_sid(db: TelemetryDB) -> int:
    """The first series id never used: series forgotten by retention leave gaps, never reused ids."""
    return int(db.scalar("SELECT value FROM metrics_meta WHERE key = 'next_sid'") or 0)


def delete_series(db: TelemetryDB, sids: Sequence[int], next_id: int) -> None:
    """Forget series (their samples are all gone), in one transaction; the caller holds the write lock."""
    c = db.cursor()
    c.execute("BEGIN TRANSACTION")
    try:
        c.register("_gone_series", pa.table({"sid": pa.array(sids, pa.int64())}))
        c.execute("DELETE FROM metrics_series WHERE sid IN (SELECT sid FROM _gone_series)")
        c.unregister("_gone_series")
        c.execute("INSERT OR REPLACE INTO metrics_meta VALUES ('next_sid', ?)", [next_id])
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise


def replay_from(db: TelemetryDB) -> int:
    return int(db.scalar("SELECT value FROM metrics_meta WHERE key = 'wal_replay_from'") or 0)


def insert_series(db: TelemetryDB, first_sid: int, tenants: Sequence[str], labels: Sequence[Labels]) -> None:
    """Add series ``first_sid``, ``first_sid + 1``... (the flush transaction is the caller's)."""
    tbl = pa.table({
        "sid": pa.array(range(first_sid, first_sid + len(tenants)), pa.int64()),
        "tenant": list(tenants),
        "labels": [encode_labels(lbl).decode() for lbl in labels],
    })
    c = db.cursor()
    c.register("_new_series", tbl)
    c.execute("INSERT INTO metrics_series SELECT sid, tenant, labels FROM _new_series")
    c.unregister("_new_series")


def replace_metadata(db: TelemetryDB, rows: Sequence[tuple[str, MetricMetadata]]) -> None:
    c = db.cursor()
    c.execute("DELETE FROM metrics_metadata")
    if rows:
        c.executemany(
            "INSERT INTO metrics_metadata VALUES (?, ?, ?, ?, ?)",
            [(tn, m.metric, m.type, m.help, m.unit) for tn, m in rows],
        )


def set_replay_from(cur: Any, segment: int) -> None:
    cur.execute("INSERT OR REPLACE INTO metrics_meta VALUES ('wal_replay_from', ?)", [segment])
