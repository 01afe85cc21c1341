"""The self-backup's copy: what is copied, linked, read in place or left out; the checksums manifest built
from it; and the snapshot restic writes of it (the real restic), the same tree a fully staged copy gave."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from pitwall.backup import snapshot
from pitwall.backup.checksums import CHECKSUMS, verify_checksums, write_checksums, write_checksums_of
from pitwall.backup.restic import _backup_errors
from pitwall.backup.snapshot import MANIFEST, NotSqlite, copy_data_dir

pytestmark = pytest.mark.timeout(120)


def _sqlite(path: Path, rows: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (i INTEGER, s TEXT)")
        c.executemany("INSERT INTO t VALUES (?, ?)", [(i, "x" * 50) for i in range(rows)])
    c.close()


def _data_dir(root: Path) -> Path:
    data = root / "data"
    for i in range(30):
        p = data / "pods" / f"p{i % 3}" / f"f{i}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(100 + i))
    (data / "pods" / "p0" / "app.lock").write_text("held")  # a lock is never backed up
    (data / "identity").mkdir()
    (data / "identity" / "session.key").write_bytes(os.urandom(32))
    (data / "secrets.key").write_bytes(os.urandom(32))
    _sqlite(data / "revstore.db")
    (data / "lock").write_text("server")
    (data / MANIFEST).write_text("{}")  # a restored directory's manifests: the new run writes its own
    (data / CHECKSUMS).write_text("{}")
    (data / "wal" / "metrics").mkdir(parents=True)
    (data / "wal" / "metrics" / "00000001.wal").write_bytes(b"r" * 1000)
    os.symlink(data / "identity", data / "pods" / "p1" / "dir-link")  # not followed, as os.walk
    return data


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_live_entries_are_named_not_linked_and_databases_copied(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    out = data / ".backup-staging" / "self-x"
    rec = copy_data_dir(data, out, None)
    # pods, identity and secrets.key hold no database, WAL or lock file... but pods holds a lock: staged
    assert rec.live == ["identity", "secrets.key"]
    assert not (out / "identity").exists() and not (out / "secrets.key").exists()
    assert sorted(rec.copied) == ["revstore.db", "wal/metrics/00000001.wal"]
    assert sorted(os.listdir(out)) == [MANIFEST, "pods", "revstore.db", "wal"]
    pods = sorted(p.relative_to(out).as_posix() for p in (out / "pods").rglob("*"))
    assert "pods/p0/app.lock" not in pods and not any("dir-link" in p for p in pods)
    for i in range(30):
        rel = f"pods/p{i % 3}/f{i}.bin"
        assert os.stat(out / rel).st_ino == os.stat(data / rel).st_ino  # linked, not copied
    assert sorted(rec.linked) == sorted(["identity/session.key", "secrets.key",
                                         *(f"pods/p{i % 3}/f{i}.bin" for i in range(30))])
    assert rec.files == 30 + 2 + 1 + 1 and [s["file"] for s in rec.sqlite] == ["revstore.db"]
    with sqlite3.connect(out / "revstore.db") as c:
        assert c.execute("SELECT count(*) FROM t").fetchone() == (100,)
    c.close()
    assert os.stat(out / "revstore.db").st_nlink == 1


def test_a_database_below_an_entry_stages_that_entry(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "pods" / "a").mkdir(parents=True)
    (data / "pods" / "a" / "v.txt").write_text("volume")
    _sqlite(data / "pods" / "b" / "app.sqlite")
    (data / "other").mkdir()
    (data / "other" / "x").write_text("x")
    rec = copy_data_dir(data, tmp_path / "out", None)
    assert rec.live == ["other"] and rec.copied == ["pods/b/app.sqlite"]
    assert sorted(rec.linked) == ["other/x", "pods/a/v.txt"]
    assert os.stat(tmp_path / "out" / "pods" / "a" / "v.txt").st_ino == os.stat(data / "pods" / "a" / "v.txt").st_ino
    assert (tmp_path / "out" / "pods" / "a" / "v.txt").read_text() == "volume"


def test_manifest_lists_every_file_with_the_right_checksum(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    out = data / ".backup-staging" / "self-x"
    rec = copy_data_dir(data, out, None)
    assert write_checksums_of(out, [*rec.copied, MANIFEST], rec.linked) == 3
    doc = json.loads((out / CHECKSUMS).read_text())
    assert doc["files"] == {rel: {"sha256": _sha(out / rel), "bytes": (out / rel).stat().st_size}
                            for rel in ("revstore.db", "wal/metrics/00000001.wal", MANIFEST)}
    assert doc["linked"] == sorted(rec.linked)
    # the same as the walk over the staged tree gives for what is staged (the walk cannot see live entries)
    staged = json.loads((out / CHECKSUMS).read_text())
    write_checksums(out)
    walked = json.loads((out / CHECKSUMS).read_text())
    assert walked["files"] == staged["files"]
    assert walked["linked"] == [r for r in staged["linked"] if r.split("/")[0] not in rec.live]
    assert verify_checksums(out) == (3, [])
    assert (data / CHECKSUMS).read_text() == "{}"  # the live directory's file is never written through


def test_an_unchanged_file_is_not_opened_again_a_changed_one_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    data = tmp_path / "data"
    (data / "pods").mkdir(parents=True)
    for i in range(5):
        (data / "pods" / f"f{i}").write_bytes(os.urandom(4096))
    opened: list[str] = []
    real = snapshot._is_sqlite
    monkeypatch.setattr(snapshot, "_is_sqlite", lambda p: opened.append(p) or real(p))
    known: NotSqlite = {}
    assert copy_data_dir(data, tmp_path / "o1", None, known).live == ["pods"] and len(opened) == 5
    opened.clear()
    assert copy_data_dir(data, tmp_path / "o2", None, known).live == ["pods"] and opened == []
    (data / "pods" / "f3").unlink()
    _sqlite(data / "pods" / "f3")  # a new file (a new inode, new times) that is now a database
    rec = copy_data_dir(data, tmp_path / "o3", None, known)
    assert opened == [str(data / "pods" / "f3")] and rec.live == [] and rec.copied == ["pods/f3"]
    assert str(data / "pods" / "f4") in known and str(data / "pods" / "f3") not in known


def test_a_database_written_during_the_copy_is_copied_consistently(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _sqlite(data / "state.db", rows=2000)
    stop = threading.Event()

    def write() -> None:
        with sqlite3.connect(data / "state.db") as c:
            n = 0
            while not stop.is_set() and n < 5000:
                c.execute("INSERT INTO t VALUES (?, ?)", (n, "y" * 200))
                c.commit()
                n += 1
        c.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        rec = copy_data_dir(data, tmp_path / "out", None)
    finally:
        stop.set()
        writer.join()
    assert rec.copied == ["state.db"] and rec.warnings == []
    with sqlite3.connect(tmp_path / "out" / "state.db") as c:
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert c.execute("SELECT count(*) FROM t").fetchone()[0] >= 2000
    c.close()


def test_restic_errors_are_named() -> None:
    err = ('{"message_type":"error","error":{"Op":"lstat","Path":"/d/pods/x","Err":2},"during":"archival",'
           '"item":"/d/pods/x"}')
    got = _backup_errors('{"message_type":"summary"}\n', f"{err}\nnonexist does not exist, skipping\n")
    assert got[0].startswith("/d/pods/x: ") and '"Op": "lstat"' in got[0]
    assert got[1] == "nonexist does not exist, skipping"
    assert len(_backup_errors("", "e\n" * 30)) == 21


async def test_the_snapshot_holds_the_tree_a_staged_copy_held(tmp_path: Path) -> None:
    from pitwall.backup import RepoLocks, Restic, SelfBackup
    from pitwall.backup.stats import BackupStats

    data = _data_dir(tmp_path)
    os.unlink(data / "pods" / "p1" / "dir-link")  # restic stores a symlink read in place; the copy drops it
    for odd in ("-live", "-staged"):  # names restic must not read as flags, read in place and staged
        (data / odd).mkdir()
        (data / odd / "f").write_text(odd)
    (data / "-staged" / "x.lock").write_text("")
    sb = SelfBackup(data, None, locks=RepoLocks(), stats=BackupStats())
    restic = Restic(str(tmp_path / "repo"), "pw")
    first = await sb.run(restic)
    assert first.phase == "Completed" and first.created_repository, first.error
    (data / "identity" / "session.key").write_bytes(b"changed")
    run = await sb.run(restic)
    assert run.phase == "Completed" and not run.created_repository and run.warnings == [], run.error
    assert list(run.steps_s) == ["copy", "checksums", "upload"] and run.step == ""
    assert run.summary["files_changed"] >= 1 and run.summary["files_unmodified"] >= 30  # restic found a parent
    names = sorted(n["path"] for n in await restic.ls("latest"))
    want = sorted({"/" + p.relative_to(data).as_posix() for p in data.rglob("*")
                   if ".backup-staging" not in p.parts and p.name not in ("lock", "app.lock", "x.lock")}
                  | {"/" + MANIFEST, "/" + CHECKSUMS})
    assert names == want
    target = tmp_path / "restored"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}, "RESTIC_PASSWORD": "pw"}
    subprocess.run(["restic", "-r", str(tmp_path / "repo"), "restore", "latest", "--target", str(target)],
                   env=env, check=True, capture_output=True)
    assert verify_checksums(target) == (3, [])
    for rel in ("identity/session.key", "secrets.key", "pods/p2/f29.bin", "-live/f", "-staged/f"):
        assert _sha(target / rel) == _sha(data / rel)
    await sb.settled()
    assert os.listdir(data / ".backup-staging") == []


async def test_a_staging_directory_on_another_disk_stages_everything(tmp_path: Path) -> None:
    """``.backup-staging`` a link elsewhere: ``../../NAME`` would not reach the data directory."""
    from pitwall.backup import RepoLocks, Restic, SelfBackup
    from pitwall.backup.stats import BackupStats

    data = tmp_path / "data"
    (data / "pods" / "p").mkdir(parents=True)
    (data / "pods" / "p" / "f").write_text("volume")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", data / ".backup-staging")
    sb = SelfBackup(data, None, locks=RepoLocks(), stats=BackupStats())
    restic = Restic(str(tmp_path / "repo"), "pw")
    run = await sb.run(restic)
    assert run.phase == "Completed" and run.warnings == [], (run.error, run.warnings)
    assert {"/pods/p/f", "/" + MANIFEST} <= {n["path"] for n in await restic.ls("latest")}
