"""A consistent copy of a running server's data directory, for restic to back up.

What is copied how, and why it is consistent:

- The telemetry database (DuckDB) and the telemetry WALs (``wal/<pillar>/``)
  are copied together under the database's write lock, which every flush
  takes to commit: no flush can move data from a WAL into DuckDB (or move
  ``wal_replay_from``) while the copy runs. DuckDB is checkpointed first and
  its own ``.wal`` copied too (a checkpoint is skipped while a reader holds
  a transaction). Each WAL segment is copied up to the size it had under the
  lock: the recorded "WAL position". A restored server replays each WAL from
  the ``wal_replay_from`` the copied database holds; a request that was being
  appended during the copy is a torn last record, which replay drops (it was
  not yet acknowledged). Ingest is never blocked: it appends to the WAL.
- SQLite files (``state.db``, ``revstore.db``) through SQLite's online
  backup API, a transactionally consistent copy while writers go on.
- Everything else (pods' volumes, identity keys) is hard-linked into the copy
  (copied where links are not possible): no bytes are copied, and restic
  sees unchanged files as unchanged. A file that vanishes meanwhile is a
  warning in the manifest.

The manifest (``pitwall-backup.json`` at the copy's root) records all of it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitwall import __version__

if TYPE_CHECKING:
    from pitwall.storage.duckdb import TelemetryDB

__all__ = ["MANIFEST", "STAGING", "SelfCopy", "copy_data_dir", "read_manifest"]

MANIFEST = "pitwall-backup.json"
STAGING = ".backup-staging"  # inside the data dir; never itself copied
_SQLITE_MAGIC = b"SQLite format 3\x00"
# Files a running server holds that a copy must not carry: locks and SQLite's WAL/shared memory (the online
# backup API copies their content into the main file).
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".lock")
_SKIP_NAMES = frozenset({"lock", STAGING})
_CHUNK = 1 << 20


@dataclass
class SelfCopy:
    """What ``copy_data_dir`` wrote: the manifest's content."""

    created: float
    wal: dict[str, list[dict[str, int]]] = field(default_factory=dict)
    duckdb: dict[str, Any] = field(default_factory=dict)
    sqlite: list[dict[str, Any]] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    lock_held_s: float = 0.0

    def manifest(self) -> dict[str, Any]:
        return {"format": 1, "kind": "pitwall-self", "pitwall_version": __version__, "created": self.created,
                "wal": self.wal, "duckdb": self.duckdb, "sqlite": self.sqlite, "files": self.files,
                "bytes": self.bytes, "warnings": self.warnings, "lock_held_s": round(self.lock_held_s, 6)}


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


def _copy_prefix(src: Path, dst: Path, nbytes: int) -> None:
    """The first ``nbytes`` of ``src`` (a WAL segment as it was under the lock; appends after it are left out)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    left = nbytes
    with src.open("rb") as r, dst.open("wb") as w:
        while left > 0:
            chunk = r.read(min(_CHUNK, left))
            if not chunk:
                break
            w.write(chunk)
            left -= len(chunk)


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where the file system allows (no copy; restic then sees the same inode and mtime as last
    time and skips an unchanged file), else a copy. Either way the file is read live, as any file copy would."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _sqlite_backup(src: Path, dst: Path) -> dict[str, Any]:
    dst.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target, pages=1024)
            pages = int(target.execute("PRAGMA page_count").fetchone()[0])
        finally:
            target.close()
    finally:
        source.close()
    return {"file": str(src.name), "pages": pages, "bytes": dst.stat().st_size}


def _walk(root: Path, top: Path) -> Iterator[Path]:
    """Every regular file below ``root`` except what a copy must skip (see ``_SKIP_*``)."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == top:
            dirnames[:] = [d for d in dirnames if d not in _SKIP_NAMES]
        for name in filenames:
            if here == top and name in _SKIP_NAMES:
                continue
            if name.endswith(_SKIP_SUFFIXES):
                continue
            yield here / name


def _copy_telemetry(data_dir: Path, db: TelemetryDB | None, out: Path, rec: SelfCopy) -> set[Path]:
    """DuckDB and the WAL segments under the write lock; the paths handled here."""
    done: set[Path] = set()
    wal_root = data_dir / "wal"
    lock = db.lock if db is not None else None
    if lock is not None:
        lock.acquire_write()
    t0 = time.monotonic()
    try:
        if db is not None and db.path is not None and db.path.exists():
            try:
                db.execute("CHECKPOINT")
                rec.duckdb["checkpointed"] = True
            except Exception as e:  # a reader's open transaction: the .wal copy below carries the rest
                rec.duckdb["checkpointed"] = False
                rec.warnings.append(f"duckdb checkpoint skipped: {e}")
            for p in (db.path, db.path.with_name(db.path.name + ".wal")):
                if p.exists():
                    dst = out / p.relative_to(data_dir)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(p, dst)
                    rec.bytes += dst.stat().st_size
                    rec.files += 1
                    done.add(p)
            rec.duckdb["file"] = db.path.name
        if wal_root.is_dir():
            for seg in sorted(wal_root.rglob("*.wal")):
                size = seg.stat().st_size
                pillar = str(seg.parent.relative_to(wal_root))
                number = int(seg.stem) if seg.stem.isdigit() else -1
                rec.wal.setdefault(pillar, []).append({"segment": number, "bytes": size})
                _copy_prefix(seg, out / seg.relative_to(data_dir), size)
                rec.bytes += size
                rec.files += 1
                done.add(seg)
    finally:
        rec.lock_held_s = time.monotonic() - t0
        if lock is not None:
            lock.release_write()
    return done


def copy_data_dir(data_dir: Path, out: Path, db: TelemetryDB | None) -> SelfCopy:
    """Copy ``data_dir`` consistently into the empty directory ``out`` (blocking; run it in a thread)."""
    rec = SelfCopy(created=time.time())
    out.mkdir(parents=True, exist_ok=True)
    done = _copy_telemetry(data_dir, db, out, rec)
    for src in _walk(data_dir, data_dir):
        if src in done or src.name == MANIFEST:
            continue
        dst = out / src.relative_to(data_dir)
        try:
            if _is_sqlite(src):
                rec.sqlite.append(_sqlite_backup(src, dst))
            else:
                _link_or_copy(src, dst)
            rec.bytes += dst.stat().st_size
            rec.files += 1
        except FileNotFoundError:
            rec.warnings.append(f"{src.relative_to(data_dir)}: removed while copying")
        except (OSError, sqlite3.Error) as e:
            rec.warnings.append(f"{src.relative_to(data_dir)}: {e}")
    (out / MANIFEST).write_text(json.dumps(rec.manifest(), indent=2, sort_keys=True))
    return rec


def read_manifest(data_dir: Path) -> dict[str, Any] | None:
    """The manifest a restore brought back, or None when ``data_dir`` has none."""
    p = data_dir / MANIFEST
    if not p.is_file():
        return None
    doc = json.loads(p.read_text())
    return doc if isinstance(doc, dict) else None
