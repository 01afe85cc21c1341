"""The scheduled self-backup (``backup.self``): a live server backing itself up on ``@every 2s`` with
``keep_last: 2``, read back with the real restic; leader gating; config and password errors naming the key."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from pitwall.backup.selfbackup import RepoLocks, SelfBackup
from pitwall.backup.selfschedule import SelfSchedule
from pitwall.backup.settings import SelfBackupSettings
from pitwall.backup.stats import BackupStats
from pitwall.config import load_settings
from pitwall.core.errors import ConfigError
from pitwall.storage.revstore.election import Election
from tests.conftest import LiveServer

pytestmark = pytest.mark.timeout(180)
PASSWORD = "self-schedule-password"


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[LiveServer, Path]]:
    pw = tmp_path / "password"
    pw.write_text(PASSWORD + "\n")
    repo = tmp_path / "repo"
    srv = LiveServer(load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                                   backup={"self": {"schedule": "@every 2s", "repository": str(repo),
                                                    "password_file": str(pw), "keep_last": 2}}))
    srv.start()
    try:
        yield srv, repo
    finally:
        srv.stop()


def _restic(repo: Path, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env["RESTIC_PASSWORD"] = PASSWORD
    out = subprocess.run(["restic", "-r", str(repo), "--json", *args], capture_output=True, text=True, env=env,
                         timeout=60, check=True).stdout
    return json.loads(out)


@pytest.mark.slow
def test_scheduled_runs_make_snapshots_and_retention_keeps_the_last(server: tuple[LiveServer, Path]) -> None:
    srv, repo = server
    deadline = time.monotonic() + 150
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = httpx.get(srv.url + "/api/backup/v1/self/runs", timeout=10).json()["runs"]
        if sum(r["phase"] == "Completed" for r in runs) >= 3:
            break
        time.sleep(0.5)
    done = [r for r in runs if r["phase"] == "Completed"]
    assert len(done) >= 3, runs
    assert all(r["trigger"] == "schedule" for r in runs)
    assert not [r for r in runs if r["phase"] == "Failed"], runs
    # the first two runs removed nothing; from the third on, keep_last 2 forgets the oldest
    assert done[0]["retention"] == {"policy": ["--keep-last=2"], "removed": []}
    assert done[2]["retention"]["removed"] and done[2]["retention"]["policy"] == ["--keep-last=2"]
    snaps = _restic(repo, "snapshots", "--tag", "pitwall-self")
    # a fourth run may have finished since the list was read: still exactly keep_last kept
    assert len(snaps) == 2, snaps
    latest = httpx.get(srv.url + "/api/backup/v1/self/runs", timeout=10).json()["runs"]
    kept = {r["snapshot_id"] for r in latest if r["phase"] == "Completed"}
    assert {s["short_id"] for s in snaps} <= kept
    assert {s["short_id"] for s in snaps}.isdisjoint(set(done[2]["retention"]["removed"]) | {done[0]["snapshot_id"]})
    metrics = httpx.get(srv.url + "/metrics", timeout=10).text
    assert f'pitwall_backup_last_success_timestamp_seconds{{kind="self",name="pitwall",repository="{repo}"}}' \
        in metrics
    changes = httpx.get(srv.url + "/pagerduty/change_events", timeout=10).json()["change_events"]
    assert sum(c["summary"].startswith(f"pitwall self-backup to {repo}: snapshot ") for c in changes) >= 3


class _Leader:
    """An election whose outcome the test sets."""

    def __init__(self) -> None:
        self.is_leader = False


async def test_only_the_leader_runs_and_a_missing_password_file_fails_the_run(tmp_path: Path) -> None:
    pw = tmp_path / "password"
    pw.write_text("x\n")
    settings = SelfBackupSettings(schedule="@every 1s", repository=str(tmp_path / "repo"), password_file=pw)
    pw.unlink()  # gone after the settings were read: each run reads it
    backup = SelfBackup(tmp_path / "data", None, locks=RepoLocks(), stats=BackupStats())
    leader = _Leader()
    sched = SelfSchedule(backup, settings, election=cast(Election, leader))
    await sched.start()
    try:
        await asyncio.sleep(2.5)  # two due times passed while not leading
        assert backup.runs == []
        leader.is_leader = True
        for _ in range(100):
            if backup.runs:
                break
            await asyncio.sleep(0.1)
        run = backup.runs[0]
        assert run.phase == "Failed" and run.reason == "password" and run.trigger == "schedule"
        assert run.error.startswith("backup.self.password_file: ") and str(pw) in run.error
        # the interval gauge for the shipped "no successful backup within twice the schedule" rule
        assert ("pitwall_backup_schedule_interval_seconds", {"kind": "self", "name": "pitwall"}, 1.0) \
            in backup.stats.gauges()
    finally:
        await sched.stop()
    assert backup.stats.gauges() == []


@pytest.mark.parametrize(("doc", "message"), [
    ({"schedule": "61 * * * *"}, "backup.self.schedule: "),
    ({"schedule": "@every 1x"}, "backup.self.schedule: failed to parse duration @every 1x"),
    ({"password_file": "/nonexistent/pw"}, "backup.self.password_file: no such file: /nonexistent/pw"),
    ({"keep_last": 0}, "backup.self.keep_last: "),
    ({"keep_dayly": 3}, "backup.self.keep_dayly: "),
])
def test_config_errors_name_the_key(tmp_path: Path, doc: dict[str, Any], message: str) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    base = {"schedule": "@daily", "repository": str(tmp_path / "repo"), "password_file": str(pw), **doc}
    with pytest.raises(ConfigError) as e:
        load_settings(data_dir=tmp_path / "data", backup={"self": base})
    assert message in str(e.value)
