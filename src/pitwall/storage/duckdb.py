"""The embedded telemetry database: one DuckDB file shared by the pillars."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb


class RWLock:
    """Many readers or one writer; queries read while a flush commit writes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1

    def try_acquire_read(self) -> bool:
        """``acquire_read`` when no writer holds the lock; False at once instead of waiting for one."""
        with self._cond:
            if self._writer:
                return False
            self._readers += 1
            return True

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


class TelemetryDB:
    """Owns the DuckDB connection; hands each thread its own cursor."""

    def __init__(self, path: Path | None, *, memory_limit: str = "1GB", threads: int = 2) -> None:
        self.path = path
        target = str(path) if path is not None else ":memory:"
        self._con = duckdb.connect(target, config={"memory_limit": memory_limit, "threads": threads})
        self._local = threading.local()
        self.lock = RWLock()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cur = cur
        return cur

    def execute(self, sql: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        return self.cursor().execute(sql, params)

    def scalar(self, sql: str, params: Any = None) -> Any:
        """The first column of the first row, or None; the result is read to its end
        (an unfinished result blocks the next ``register`` on this thread's cursor)."""
        rows = self.cursor().execute(sql, params).fetchall()
        return rows[0][0] if rows else None

    def close(self) -> None:
        self._con.close()
