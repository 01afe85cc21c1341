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
- Everything else (pods' volumes, identity keys) is read live: a top-level
  entry holding no database, WAL or lock file is read by restic in the data
  directory itself (named in ``SelfCopy.live``; restic stores it at the same
  place in the snapshot's tree), the rest is hard-linked into the copy
  (copied where links are not possible). No bytes are copied, and restic
  sees unchanged files as unchanged. A file that vanishes meanwhile is a
  warning in the manifest (or in restic's report).

The manifest (``pitwall-backup.json`` at the copy's root) records all of it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitwall import __version__
from pitwall.backup.checksums import CHECKSUMS

if TYPE_CHECKING:
    from pitwall.storage.duckdb import TelemetryDB

__all__ = ["MANIFEST", "STAGING", "NotSqlite", "SelfCopy", "copy_data_dir", "read_manifest"]

MANIFEST = "pitwall-backup.json"
STAGING = ".backup-staging"  # inside the data dir; never itself copied
_SQLITE_MAGIC = b"SQLite format 3\x00"
# Files a running server holds that a copy must not carry: locks and SQLite's WAL/shared memory (the online
# backup API copies their content into the main file).
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".lock")
# at the top: the server's lock, the staging directory, and the manifests a restored directory holds (a new
# backup writes its own; a link to the old checksums would be written through)
_SKIP_NAMES = frozenset({"lock", STAGING, MANIFEST, CHECKSUMS})
_CHUNK = 1 << 20
_MAX_NOT_SQLITE = 1_000_000  # files remembered between runs (~150 MB at most); beyond, each run looks again


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
    # relative paths (not in the manifest): copies, whose content is fixed, and hard links to live files
    copied: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)  # top-level names restic reads in the data directory itself

    def manifest(self) -> dict[str, Any]:
        return {"format": 1, "kind": "pitwall-self", "pitwall_version": __version__, "created": self.created,
                "wal": self.wal, "duckdb": self.duckdb, "sqlite": self.sqlite, "files": self.files,
                "bytes": self.bytes, "warnings": self.warnings, "lock_held_s": round(self.lock_held_s, 6)}


def _is_sqlite(path: str) -> bool:
    """Whether ``path`` starts with SQLite's magic (non-blocking open: a FIFO never hangs the copy)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.read(fd, len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


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


def _link_or_copy(src: str, dst: str) -> bool:
    """A hard link where the file system allows (no copy; restic then sees the same inode and mtime as last
    time and skips an unchanged file), else a copy; True when linked. Either way the file is read live, as any
    file copy would. The caller made ``dst``'s directory."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        shutil.copy2(src, dst)
        return False


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


def _entries(top: str, warnings: list[str]) -> Iterator[tuple[str, os.DirEntry[str], bool]]:
    """(directory relative to ``top``, entry, whether a copy skips it) of every non-directory below ``top``
    but the top's ``_SKIP_NAMES``. As ``os.walk``: symlinks to directories are not followed (nor listed),
    symlinks to files are. ``scandir`` entries, so the 20k-file trees of pods' volumes cost no ``Path``s."""
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            it = os.scandir(os.path.join(top, rel) if rel else top)
        except FileNotFoundError:
            continue  # removed meanwhile
        except OSError as err:
            warnings.append(f"{rel}: {err}")
            continue
        with it:
            for entry in it:
                if not rel and entry.name in _SKIP_NAMES:
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    if not entry.is_symlink():
                        stack.append(f"{rel}/{entry.name}" if rel else entry.name)
                else:
                    yield rel, entry, entry.name.endswith(_SKIP_SUFFIXES) or entry.name == MANIFEST


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
                    rec.copied.append(p.relative_to(data_dir).as_posix())
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
                rec.copied.append(seg.relative_to(data_dir).as_posix())
                done.add(seg)
    finally:
        rec.lock_held_s = time.monotonic() - t0
        if lock is not None:
            lock.release_write()
    return done


_Found = tuple[str, os.DirEntry[str], int, bool]  # directory (relative), entry, size, is an SQLite database


@dataclass
class _Group:
    """The files below one top-level entry of the data directory; ``staged`` when one of them must be copied
    or left out (a database, a WAL, a lock), so restic cannot read the entry in place."""

    files: list[_Found] = field(default_factory=list)
    staged: bool = False


NotSqlite = dict[str, tuple[int, int, int, int]]  # path: (inode, size, mtime ns, ctime ns) when last looked at


def _scan(top: str, done: set[str], rec: SelfCopy, not_sqlite: NotSqlite) -> dict[str, _Group]:
    """The files below ``top`` by top-level entry, each looked at once (size; SQLite's magic, unless
    ``not_sqlite`` holds the file unchanged since it was looked at: its inode, size, mtime and ctime the same,
    so its content is; ``not_sqlite`` is then rebuilt from what this scan saw)."""
    groups: dict[str, _Group] = {}
    seen: NotSqlite = {}
    rel_seen, group = None, _Group()
    for rel, e, skip in _entries(top, rec.warnings):
        if rel != rel_seen or not rel:  # entries come directory by directory: the group's key once per one
            group = groups.setdefault(rel.split("/", 1)[0] if rel else e.name, _Group())
            rel_seen = rel
        if skip or e.path in done:
            group.staged = True
            continue
        try:
            sqlite, size = _sqlite_look(e, not_sqlite, seen)
        except FileNotFoundError:
            rec.warnings.append(f"{rel}/{e.name}".lstrip("/") + ": removed while copying")
            continue
        except OSError as err:
            rec.warnings.append(f"{rel}/{e.name}".lstrip("/") + f": {err}")
            continue
        group.files.append((rel, e, size, sqlite))
        if sqlite:
            group.staged = True
    if len(seen) <= _MAX_NOT_SQLITE:
        not_sqlite.clear()
        not_sqlite.update(seen)
    return groups


def _sqlite_look(e: os.DirEntry[str], not_sqlite: NotSqlite, seen: NotSqlite) -> tuple[bool, int]:
    """Whether ``e`` is an SQLite database, and its size; a regular file found not to be one is remembered in
    ``seen``."""
    st = e.stat(follow_symlinks=False)
    size = st.st_size
    if e.is_symlink():  # its target may change under an unchanged link: looked at each time
        return e.is_file() and _is_sqlite(e.path), size
    if not stat.S_ISREG(st.st_mode):
        return False, size  # a FIFO, socket or device is never opened
    sig = (st.st_ino, size, st.st_mtime_ns, st.st_ctime_ns)
    if not_sqlite.get(e.path) != sig and size >= len(_SQLITE_MAGIC) and _is_sqlite(e.path):
        return True, size
    seen[e.path] = sig
    return False, size


def copy_data_dir(data_dir: Path, out: Path, db: TelemetryDB | None, not_sqlite: NotSqlite | None = None, *,
                  in_place: bool = True) -> SelfCopy:
    """Copy ``data_dir`` consistently into the empty directory ``out`` (blocking; run it in a thread).

    A top-level entry holding no database, WAL or lock is not copied at all: it is named in ``live`` for
    restic to read in place (20k hard links cost a second or more). The rest is staged in ``out``: copies,
    and hard links for the other files beside them. The result names each file as ``copied`` (its content
    is fixed) or ``linked`` (a live file, linked or read in place). ``not_sqlite``: kept by the caller from
    one run to the next, it spares unchanged files the look for SQLite's magic. ``in_place=False`` stages
    every entry (``live`` stays empty)."""
    rec = SelfCopy(created=time.time())
    out.mkdir(parents=True, exist_ok=True)
    done = {str(p) for p in _copy_telemetry(data_dir, db, out, rec)}
    groups = _scan(str(data_dir), done, rec, {} if not_sqlite is None else not_sqlite)
    for name, group in sorted(groups.items()):
        if group.staged or not in_place:
            _stage(group.files, str(out), rec)
        elif group.files:
            rec.live.append(name)
            for rel, e, size, _ in group.files:
                rec.linked.append(f"{rel}/{e.name}" if rel else e.name)
                rec.bytes += size
                rec.files += 1
    (out / MANIFEST).write_text(json.dumps(rec.manifest(), indent=2, sort_keys=True))
    return rec


def _stage(files: list[_Found], out: str, rec: SelfCopy) -> None:
    """Files of a staged entry into ``out``: SQLite databases by the online backup API, the rest linked (or
    copied where links are impossible)."""
    made: set[str] = {""}
    for rel, e, size, sqlite in files:
        rel_path = f"{rel}/{e.name}" if rel else e.name
        dst_dir = os.path.join(out, rel) if rel else out
        dst = os.path.join(dst_dir, e.name)
        try:
            if rel not in made:  # once per directory, not per file
                os.makedirs(dst_dir, exist_ok=True)
                made.add(rel)
            if sqlite:
                rec.sqlite.append(_sqlite_backup(Path(e.path), Path(dst)))
                rec.copied.append(rel_path)
                size = os.stat(dst).st_size
            elif _link_or_copy(e.path, dst):
                rec.linked.append(rel_path)  # the same inode: ``size`` holds
            else:
                rec.copied.append(rel_path)
                size = os.stat(dst).st_size
            rec.bytes += size
            rec.files += 1
        except FileNotFoundError:
            rec.warnings.append(f"{rel_path}: removed while copying")
        except (OSError, sqlite3.Error) as err:
            rec.warnings.append(f"{rel_path}: {err}")


def read_manifest(data_dir: Path) -> dict[str, Any] | None:
    """The manifest a restore brought back, or None when ``data_dir`` has none."""
    p = data_dir / MANIFEST
    if not p.is_file():
        return None
    doc = json.loads(p.read_text())
    return doc if isinstance(doc, dict) else None
