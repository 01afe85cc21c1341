"""The backups pages over a real KubeAPI (SQLite) with Velero's and the drill's CRDs, through
``pitwall.backup.BackupReads``, on a small ASGI app; the objects carry what the backup controllers record
(status, the stats and snapshots annotations, drill history, Events). The pure view functions too."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx
import pytest
from tests.ui.app import ui_client, ui_deps

from pitwall.backup import BackupReads, RepoLocks, SelfBackup, SelfRun
from pitwall.backup.crds import restore_drill_crd, velero_crds
from pitwall.backup.stats import BackupStats
from pitwall.backup.views import snapshot_contents
from pitwall.controllers import record_event
from pitwall.kube import KubeAPI, KubeClient
from pitwall.kube.wiring import build_kube
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.ui.backups_view import backup_row, contents, drill_history, drill_row, self_run_row, until

pytestmark = pytest.mark.timeout(60)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _backup_obj(**status: Any) -> dict[str, Any]:
    return {"apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": {"name": "nightly-1", "namespace": "velero", "creationTimestamp": _iso(NOW),
                         "labels": {"velero.io/schedule-name": "nightly", "velero.io/storage-location": "local"},
                         "annotations": {"backup.pitwall.dev/stats": json.dumps(
                             {"bytes": 3 << 20, "bytesAdded": 512 << 10, "durationSeconds": 4.25}),
                             "backup.pitwall.dev/snapshots": json.dumps({"shop": "0123abcd"})}},
            "spec": {"includedNamespaces": ["shop"], "storageLocation": "local", "ttl": "2h0m0s"},
            "status": {"phase": "Completed", "startTimestamp": _iso(NOW - timedelta(minutes=5)),
                       "completionTimestamp": _iso(NOW - timedelta(minutes=4)),
                       "expiration": _iso(NOW + timedelta(hours=2)), "errors": 0, "warnings": 1,
                       "progress": {"totalItems": 3, "itemsBackedUp": 3}, **status}}


def _drill_obj() -> dict[str, Any]:
    return {"apiVersion": "pitwall.dev/v1", "kind": "RestoreDrill",
            "metadata": {"name": "nightly-drill", "namespace": "velero"},
            "spec": {"schedule": "0 3 * * *", "source": {"scheduleName": "nightly"}},
            "status": {"phase": "Idle", "lastResult": "pass", "lastRunTime": _iso(NOW - timedelta(hours=1)),
                       "durationSeconds": 12.5, "dataAgeSeconds": 3600.0, "nextRunTime": _iso(NOW + timedelta(hours=15)),
                       "history": [
                           {"time": _iso(NOW - timedelta(days=1, hours=1)), "result": "fail", "message": "checksum "
                            "mismatch: blob.bin", "durationSeconds": 9.0, "snapshot": "fffe0000", "files": 2},
                           {"time": _iso(NOW - timedelta(hours=1)), "result": "pass", "message": "",
                            "durationSeconds": 12.5, "dataAgeSeconds": 3600.0, "snapshot": "0123abcd", "files": 3}]}}


def test_rows_carry_the_recorded_figures() -> None:
    row = backup_row(_backup_obj(), NOW)
    assert (row.phase, row.size, row.added, row.duration, row.items, row.schedule, row.location) == (
        "Completed", float(3 << 20), float(512 << 10), 4.25, "3/3", "nightly", "local")
    assert (row.created, row.expires, row.snapshots) == ("5m", "2h", {"shop": "0123abcd"})
    assert until(_iso(NOW - timedelta(seconds=1)), NOW) == "expired"
    bare = backup_row({"metadata": {"name": "b", "namespace": "velero",
                                    "annotations": {"backup.pitwall.dev/stats": "not json"}}}, NOW)
    assert (bare.phase, bare.size, bare.items, bare.created) == ("New", None, "—", "—")
    held = dict(contents(_backup_obj()))
    assert held["Namespaces included"] == "shop" and held["Resources included"] == "*"
    assert held["Snapshot of shop"] == "0123abcd" and held["Items backed up"] == "3 of 3"
    d = drill_row(_drill_obj(), NOW)
    assert (d.source, d.result, d.rto, d.rpo, d.last, d.next) == ("schedule nightly", "pass", 12.5, 3600.0, "60m",
                                                                  "15h")
    hist = drill_history(_drill_obj(), NOW)
    assert [(h["result"], h["rto"], h["rpo"]) for h in hist] == [("pass", 12.5, 3600.0), ("fail", 9.0, None)]
    run = self_run_row({"repository": "/r", "phase": "Completed", "snapshot_id": "89abcdef0011", "started": 100.0,
                        "duration_s": 2.5, "files": 10, "bytes": 2048, "summary": {"data_added": 1024}}, now=160.0)
    assert (run["snapshot"], run["age"], run["size"], run["added"]) == ("89abcdef", "60s", 2048.0, 1024.0)


def test_snapshot_contents_reads_the_controllers_layout() -> None:
    nodes = [{"type": "dir", "path": "/resources"},
             {"type": "file", "path": "/resources/configmaps/namespaces/shop/settings.json", "size": 300},
             {"type": "file", "path": "/resources/pods/namespaces/shop/db-0.json", "size": 900},
             {"type": "file", "path": "/volumes/db-0/data/app.db", "size": 4096},
             {"type": "file", "path": "/volumes/db-0/data/wal/1", "size": 100},
             {"type": "file", "path": "/pitwall-sha256.json", "size": 50}]
    resources, volumes = snapshot_contents("0123abcdef", nodes)
    assert resources == [{"namespace": "shop", "resource": "configmaps", "name": "settings", "snapshot": "0123abcd"},
                         {"namespace": "shop", "resource": "pods", "name": "db-0", "snapshot": "0123abcd"}]
    assert volumes == [{"pod": "db-0", "volume": "data", "files": 2, "bytes": 4196, "snapshot": "0123abcd"}]


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    api.add_builtin_crds([*velero_crds(), restore_drill_crd()])
    await api.start()
    try:
        yield api
    finally:
        await api.stop()
        await store.stop()


def _self_backup(tmp_path: Path) -> SelfBackup:
    sb = SelfBackup(tmp_path / "data", None, locks=RepoLocks(), stats=BackupStats())
    sb.runs.append(SelfRun(repository=str(tmp_path / "repo"), started=time.time() - 90, phase="Completed",
                           snapshot_id="5e1fbac0ffee", duration_s=1.75, files=12, bytes=40960,
                           summary={"data_added": 8192}))
    sb.runs.append(SelfRun(repository="/nowhere", started=time.time() - 30, phase="Failed", reason="wrong-password",
                           error="wrong password or no key found"))
    return sb


def _client(reads: BackupReads | None) -> httpx.AsyncClient:
    return ui_client(ui_deps(backups=reads))


async def _seed(c: KubeClient) -> None:
    await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "velero"}})
    b = _backup_obj()
    status = b.pop("status")
    b = await c.create(b)
    b["status"] = status
    b = await c.update_status(b)
    await record_event(c, b, "Normal", "Completed", "velero backup velero/nightly-1: Completed, 3/3 items", "test")
    await record_event(c, b, "Warning", "ItemWarning", 'pod shop/db: volume "cache" skipped', "test")
    r = await c.create({"apiVersion": "velero.io/v1", "kind": "Restore",
                        "metadata": {"name": "nightly-1-back", "namespace": "velero"},
                        "spec": {"backupName": "nightly-1"}})
    r["status"] = {"phase": "Completed", "progress": {"totalItems": 3, "itemsRestored": 3}}
    await c.update_status(r)
    await c.create({"apiVersion": "velero.io/v1", "kind": "Schedule", "metadata": {"name": "nightly",
                                                                                  "namespace": "velero"},
                    "spec": {"schedule": "0 2 * * *", "template": {"includedNamespaces": ["shop"], "ttl": "2h0m0s"}}})
    d = _drill_obj()
    dstatus = d.pop("status")
    d = await c.create(d)
    d["status"] = dstatus
    await c.update_status(d)


async def test_pages(kube: KubeAPI, tmp_path: Path) -> None:
    await _seed(kube.client)
    reads = BackupReads(lambda: kube.client, _self_backup(tmp_path))
    async with _client(reads) as c:
        r = await c.get("/backups")
        assert r.status_code == 200
        html = r.text
        row = re.search(r'<a href="/backups/velero/nightly-1\?[^"]*">nightly-1</a>.*?</tr>', html, re.S)
        assert row is not None, html
        cells = re.findall(r'<td class="num[^"]*">([^<]*)</td>', row.group(0))
        assert cells[:6] == ["0", "1", "3.0 MiB", "512.0 KiB", "4.2s", "3/3"], cells
        assert "0 2 * * *" in html and "nightly-1-back" in html and "nightly-drill" in html
        assert "12.5s" in html and "1h 0m 0s" in html  # the drill's RTO and RPO
        assert "5e1fbac0" in html and "8.0 KiB" in html and "wrong-password: wrong password" in html

        r = await c.get("/backups/velero/nightly-1")
        assert r.status_code == 200
        html = r.text
        assert "Snapshot of shop" in html and "0123abcd" in html and "Namespaces included" in html
        assert "524288 bytes new in the repository" in html
        assert "nightly-1-back" in html and "nightly-drill" in html  # the drill names its Schedule
        assert "checksum mismatch: blob.bin" in html  # the drill's history
        log = re.search(r'data-testid="backup-log">(.*?)</pre>', html, re.S)
        assert log is not None and "level=warning reason=ItemWarning" in log.group(1)
        assert "restic snapshots by namespace" in log.group(1)

        r = await c.get("/backups/velero/restoredrills/nightly-drill")
        assert r.status_code == 200 and r.text.count('data-testid="drill-chart"') == 3
        assert 'pitwall_restore_drill_duration_seconds{drill="velero/nightly-drill"}' in unquote_plus(r.text)

        # the resources are listed from the restic snapshots: here there is no storage location to read
        frag = await c.get("/ui/fragment/backups/velero/nightly-1/resources")
        assert frag.status_code == 200 and "local&#34; not found in namespace velero" in frag.text
        assert (await c.get("/ui/fragment/backups/velero/nope/resources")).status_code == 404
        assert (await c.get("/backups/velero/nope")).status_code == 404
        assert (await c.get("/backups/velero/restoredrills/nope")).status_code == 404
        assert (await c.get("/backups?namespace=elsewhere")).text.count("No backups.") == 1


async def test_without_the_control_plane_or_the_pillar(tmp_path: Path) -> None:
    async with _client(BackupReads(lambda: None, _self_backup(tmp_path))) as c:
        r = await c.get("/backups")
        assert r.status_code == 200 and "control plane is off" in r.text and "5e1fbac0" in r.text
        assert (await c.get("/backups/velero/nightly-1")).status_code == 404
    async with _client(None) as c:
        for path in ("/backups", "/backups/velero/x", "/backups/velero/restoredrills/x"):
            r = await c.get(path)
            assert r.status_code == 200 and "is not available" in r.text, path
