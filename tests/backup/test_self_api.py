"""The self-backup admin API and the CLI's bad input: wrong password, unreachable repository, no password,
a restore onto a non-empty directory, a damaged repository, a stale lock of a crashed restic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pitwall.backup import Restic, ResticError
from pitwall.backup.selfbackup import with_stale_lock_retry

pytestmark = pytest.mark.timeout(120)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env.update(extra)
    return env


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pitwall.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=120)


async def test_backup_self_api_completes_then_refuses_a_wrong_password(client: httpx.AsyncClient,
                                                                         tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    r = await client.post("/api/backup/v1/self", json={"repository": repo, "password": "right"})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["phase"] == "Completed" and run["created_repository"] and run["snapshot_id"]
    snaps = await Restic(repo, "right").snapshots(tags=["pitwall-self"])
    assert [s["short_id"] for s in snaps] == [run["snapshot_id"]]

    r = await client.post("/api/backup/v1/self", json={"repository": repo, "password": "wrong"})
    assert r.status_code == 403
    assert r.json()["phase"] == "Failed" and r.json()["reason"] == "wrong-password"
    assert "wrong password" in r.json()["error"]
    assert len(await Restic(repo, "right").snapshots()) == 1  # nothing half-written

    runs = (await client.get("/api/backup/v1/self/runs")).json()["runs"]
    assert [x["phase"] for x in runs] == ["Completed", "Failed"]
    metrics = (await client.get("/metrics")).text
    assert f'pitwall_backup_last_success_timestamp_seconds{{kind="self",name="pitwall",repository="{repo}"}}' \
        in metrics
    assert "pitwall_backup_bytes_added{" in metrics and "pitwall_backup_duration_seconds{" in metrics
    # the same figures are series in the metric store, for PromQL and alert rules
    q = await client.get("/api/v1/query", params={"query": "pitwall_backup_bytes_added"})
    assert float(q.json()["data"]["result"][0]["value"][1]) == run["summary"]["data_added"]


async def test_restore_self_draws_its_progress(client: httpx.AsyncClient, tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    r = await client.post("/api/backup/v1/self", json={"repository": repo, "password": "pw"})
    assert r.status_code == 200, r.text
    got = _cli("restore", "self", "--from", repo, "--data-dir", str(tmp_path / "back"), "--progress",
               env=_env(RESTIC_PASSWORD="pw"))
    assert got.returncode == 0, got.stderr
    frames = [f.strip() for f in got.stderr.split("\r") if f.strip()]
    assert frames and all("restoring" in f for f in frames), got.stderr
    assert "100% restoring" in frames[-1]  # the last poll sees every byte of the snapshot's restore size
    assert "restored snapshot" in got.stdout
    quiet = _cli("restore", "self", "--from", repo, "--data-dir", str(tmp_path / "again"),
                 env=_env(RESTIC_PASSWORD="pw"))
    assert quiet.returncode == 0 and "restoring" not in quiet.stderr  # not a terminal: no bar


async def test_unreachable_repository_and_bad_requests(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/backup/v1/self", json={"repository": "rest:http://127.0.0.1:1/", "password": "x"})
    assert r.status_code == 502
    assert r.json()["reason"] == "unreachable" and "connection refused" in r.json()["error"]
    r = await client.post("/api/backup/v1/self", json={"repository": "/tmp/x"})
    assert r.status_code == 400 and "password" in r.text
    r = await client.post("/api/backup/v1/self", content=b"{not json")
    assert r.status_code == 400
    r = await client.post("/api/backup/v1/self", content=b"x" * (64 << 10))
    assert r.status_code == 413


def test_cli_needs_a_password_and_restores_only_into_an_empty_directory(tmp_path: Path) -> None:
    got = _cli("backup", "self", "--to", str(tmp_path / "r"), env=_env())
    assert got.returncode == 2 and "RESTIC_PASSWORD" in got.stderr
    subprocess.run(["restic", "-r", str(tmp_path / "r"), "init"], env=_env(RESTIC_PASSWORD="pw"), check=True,
                   capture_output=True)
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    got = _cli("restore", "self", "--from", str(tmp_path / "r"), "--data-dir", str(target),
               env=_env(RESTIC_PASSWORD="pw"))
    assert got.returncode == 1 and "not empty" in got.stderr
    assert (target / "keep.txt").read_text() == "mine"
    got = _cli("restore", "self", "--from", str(tmp_path / "r"), "--data-dir", str(tmp_path / "fresh"),
               env=_env(RESTIC_PASSWORD="pw"))
    assert got.returncode == 1 and "no pitwall-self snapshot" in got.stderr


def test_backup_check_finds_a_corrupted_pack(tmp_path: Path) -> None:
    repo, src = tmp_path / "r", tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(256 << 10))
    env = _env(RESTIC_PASSWORD="pw")
    subprocess.run(["restic", "-r", str(repo), "init"], env=env, check=True, capture_output=True)
    subprocess.run(["restic", "-r", str(repo), "backup", str(src)], env=env, check=True, capture_output=True)
    pw_file = tmp_path / "pw"
    pw_file.write_text("pw\n")
    ok = _cli("backup", "check", "--repo", str(repo), "--read-data", env=_env(RESTIC_PASSWORD_FILE=str(pw_file)))
    assert ok.returncode == 0, ok.stderr
    assert "no errors were found" in ok.stdout
    pack = max((p for p in (repo / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(raw))
    bad = _cli("backup", "check", "--repo", str(repo), "--read-data", env=env)
    assert bad.returncode == 1
    assert "pitwall backup check:" in bad.stderr


async def test_a_stale_lock_of_a_crashed_restic_is_removed_with_a_note(tmp_path: Path) -> None:
    repo = str(tmp_path / "r")
    restic = Restic(repo, "pw")
    await restic.init()
    # restic reading a backup from stdin holds its lock; kill -9 leaves the lock behind (restic#2736)
    crashed = subprocess.Popen(["restic", "-r", repo, "backup", "--stdin"], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(RESTIC_PASSWORD="pw"))
    try:
        for _ in range(200):
            if await restic.locks():
                break
            time.sleep(0.05)
    finally:
        os.kill(crashed.pid, signal.SIGKILL)
        crashed.wait()
        assert crashed.stdin is not None
        crashed.stdin.close()
    assert len(await restic.locks()) == 1
    with pytest.raises(ResticError) as e:
        await restic.forget(["latest"])
    assert e.value.reason == "locked"
    notes: list[str] = []
    await with_stale_lock_retry(restic, lambda: restic.run("forget", "--keep-last", "1", json_out=False), notes)
    assert notes and "removed 1 stale restic lock" in notes[0]
    assert await restic.locks() == []


async def test_state_outside_the_data_directory_is_named_in_every_run(tmp_path: Path) -> None:
    from pitwall.backup import RepoLocks, SelfBackup
    from pitwall.backup.stats import BackupStats

    data = tmp_path / "data"
    (data / "pods" / "p1").mkdir(parents=True)
    (data / "pods" / "p1" / "f.txt").write_text("kept")
    sb = SelfBackup(data, None, locks=RepoLocks(), stats=BackupStats(), outside=["state store on etcd"])
    run = await sb.run(Restic(str(tmp_path / "r"), "pw"))
    assert run.phase == "Completed"
    assert run.warnings == ["state store on etcd is outside the data directory and not in this backup"]
    names = {n["path"] for n in await Restic(str(tmp_path / "r"), "pw").ls("latest")}
    assert {"/pods/p1/f.txt", "/pitwall-backup.json"} <= names
    await sb.settled()  # the staging copy is removed off the run's critical path
    assert not (data / ".backup-staging").exists() or not any((data / ".backup-staging").iterdir())
