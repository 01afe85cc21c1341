"""RestoreDrills on a live pitwall through kubectl, against real restic repositories.

A drill of pitwall's own self-backup passes (restic check, sha256 manifest,
expect checks, a verify command run in the restored directory) and
``kubectl get restoredrills`` shows Phase/Last result/RTO/RPO; a drill of a
Velero Backup passes; one damaged pack, a file whose content differs from
the backup's manifest, an unmet expectation and a failing verify command
each fail the drill with a message saying which. The shipped alert rules'
expressions are evaluated against the series those drills wrote (and
against remote-written backup series): each fires when its condition holds
and not otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cramjam
import httpx
import pytest
import yaml

from pitwall.backup.alerts import RULES, SOURCE
from pitwall.metrics.ingest import prompb
from tests.backup.test_velero import Cluster, _backup, _done, live_server, velero_cluster

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

DRILL_PW = "drill-password"
AT_START: dict[str, set[str]] = {}  # rule files the server had before any Schedule or drill existed


def _restic(repo: Path, *args: str, pw: str = DRILL_PW) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env["RESTIC_PASSWORD"] = pw
    return subprocess.run(["restic", "-r", str(repo), *args], capture_output=True, text=True, env=env,
                          timeout=120, check=True).stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("drill")
    with live_server(root) as srv:
        groups = httpx.get(srv.url + "/api/v1/rules", timeout=30).json()["data"]["groups"]
        AT_START["files"] = {g["file"] for g in groups}
        c = velero_cluster(srv, root)
        c.kubectl("create", "namespace", "drills")
        c.kubectl("-n", "drills", "create", "secret", "generic", "repo-pw", f"--from-literal=password={DRILL_PW}")
        yield c


def _drill(name: str, source: dict[str, Any], ns: str = "drills", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "pitwall.dev/v1", "kind": "RestoreDrill", "metadata": {"name": name, "namespace": ns},
            "spec": {"schedule": "0 3 * * *", "source": source, **spec}}


def _repo_source(repo: Path) -> dict[str, Any]:
    return {"repository": str(repo), "passwordSecretRef": {"name": "repo-pw", "key": "password"}}


def _ran(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("lastResult") in ("pass", "fail")


def _query(c: Cluster, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(c.srv.url + "/api/v1/query", params={"query": expr}, timeout=30).json()
    assert r["status"] == "success", r
    out: list[dict[str, Any]] = r["data"]["result"]
    return out


def _wait_series(c: Cluster, expr: str, pred: Any, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    got: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        got = _query(c, expr)
        if pred(got):
            return got
        time.sleep(0.5)
    raise AssertionError(f"{expr}: {got}")


def _source_dir(tmp: Path, *, lie: bool = False) -> Path:
    """A directory with a SQLite database and a checksum manifest (a wrong one with ``lie``)."""
    src = tmp / "src"
    src.mkdir()
    with sqlite3.connect(src / "app.db") as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
        db.executemany("INSERT INTO orders (item) VALUES (?)", [(f"item-{i}",) for i in range(25)])
    db.close()
    (src / "blob.bin").write_bytes(os.urandom(300 << 10))
    files = {}
    for p in sorted(src.iterdir()):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        files[p.name] = {"sha256": ("0" * 64 if lie and p.name == "blob.bin" else digest),
                         "bytes": p.stat().st_size}
    (src / "pitwall-sha256.json").write_text(json.dumps({"format": 1, "algorithm": "sha256", "files": files}))
    return src


def _repo_with(tmp: Path, *, lie: bool = False) -> Path:
    repo = tmp / "repo"
    src = _source_dir(tmp, lie=lie)
    _restic(repo, "init")
    subprocess.run(["restic", "-r", str(repo), "backup", "."], cwd=src, capture_output=True, check=True,
                   env={**{k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")},
                        "RESTIC_PASSWORD": DRILL_PW}, timeout=120)
    return repo


def test_self_backup_drill_passes_with_columns_and_metrics(cluster: Cluster, tmp_path: Path) -> None:
    repo = tmp_path / "self"
    r = httpx.post(cluster.srv.url + "/api/backup/v1/self", json={"repository": str(repo), "password": DRILL_PW},
                   timeout=300)
    assert r.status_code == 200, r.text
    snap = r.json()["snapshot_id"]
    assert "pitwall-sha256.json" in _restic(repo, "ls", snap)  # the manifest is written at backup time
    cluster.kubectl("get", "crd", "restoredrills.pitwall.dev")
    verify = [sys.executable, "-c",
              "import os, pathlib, sys; r = os.environ['PITWALL_RESTORE_DIR']; "
              "sys.exit(0 if pathlib.Path('pitwall-backup.json').is_file() and os.getcwd() == r else 3)"]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(_drill(
        "self", _repo_source(repo), expect={"minFiles": 3, "paths": ["pitwall-backup.json"],
                                    "sqlite": [{"path": "revstore.db", "table": "kv_current", "minRows": 1}]},
        verify={"command": verify, "timeout": "2m"})))
    d = cluster.wait("restoredrill", "self", _ran, ns="drills", timeout=180)
    st = d["status"]
    assert st["lastResult"] == "pass", st
    assert st["phase"] == "Idle" and st["snapshot"] == snap[:8]
    assert st["durationSeconds"] > 0 and 0 <= st["dataAgeSeconds"] < 600
    assert len(st["history"]) == 1 and st["history"][0]["files"] >= 3
    assert "nextRunTime" in st and st["nextRunTime"].endswith("03:00:00Z")
    out = cluster.kubectl("get", "restoredrills", "-n", "drills").stdout
    assert re.match(r"NAME\s+PHASE\s+LAST RESULT\s+RTO\s+RPO\s+AGE", out), out
    assert re.search(r"^self\s+Idle\s+pass\s+[\d.]+\s+[\d.]+\s+\S+", out, re.M), out
    scratch = cluster.srv.settings.data_dir / ".backup-staging"
    assert not any(p.name.startswith("drill-") for p in scratch.glob("*")), "scratch directory left behind"
    events = cluster.kubectl("get", "events", "-n", "drills", "-o", "json").stdout
    assert "DrillPassed" in events
    got = _wait_series(cluster, 'pitwall_restore_drill_success{drill="drills/self"}', lambda g: len(g) == 1)
    assert got[0]["value"][1] == "1"
    dur = _query(cluster, 'pitwall_restore_drill_duration_seconds{drill="drills/self"}')
    assert float(dur[0]["value"][1]) == pytest.approx(st["durationSeconds"], abs=0.01)


def test_velero_backup_drill_passes(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", "shop")
    cluster.kubectl("-n", "shop", "create", "configmap", "prices", "--from-literal=apple=3")
    cluster.apply(_backup("shop-1", includedNamespaces=["shop"]))
    b = cluster.wait("backup", "shop-1", _done)
    assert b["status"]["phase"] == "Completed", b["status"]
    cluster.apply(_drill("shop", {"backupName": "shop-1"}, ns="velero",
                         expect={"paths": ["shop/resources/configmaps/namespaces/shop/prices.json"]}))
    d = cluster.wait("restoredrill", "shop", _ran, ns="velero", timeout=120)
    assert d["status"]["lastResult"] == "pass", d["status"]
    cluster.apply(_drill("nobackup", {"backupName": "absent"}, ns="velero"))
    d = cluster.wait("restoredrill", "nobackup", _ran, ns="velero")
    assert d["status"]["lastResult"] == "fail" and "velero/absent not found" in d["status"]["message"]


def test_a_damaged_pack_fails_the_drill_clearly(cluster: Cluster, tmp_path: Path) -> None:
    repo = _repo_with(tmp_path)
    pack = max((p for p in (repo / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(raw))
    cluster.apply(_drill("damaged", _repo_source(repo)))
    d = cluster.wait("restoredrill", "damaged", _ran, ns="drills", timeout=120)
    st = d["status"]
    assert st["lastResult"] == "fail", st
    assert f"repository {repo} failed restic check --read-data-subset=100%" in st["message"], st["message"]
    assert "DrillFailed" in cluster.kubectl("get", "events", "-n", "drills", "-o", "json").stdout
    got = _wait_series(cluster, 'pitwall_restore_drill_success{drill="drills/damaged"}', lambda g: len(g) == 1)
    assert got[0]["value"][1] == "0"


def test_content_expectations_and_verify_failures(cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    good, lying = _repo_with(tmp_path / "a"), _repo_with(tmp_path / "b", lie=True)
    cases = {
        "lying": (_repo_source(lying), {}, "1 of 2 restored files do not match the backup's checksums: "
                                           "blob.bin: sha256 differs"),
        "rows-ok": (_repo_source(good), {"expect": {"sqlite": [{"path": "app.db", "table": "orders",
                                                                "minRows": 25}]}}, None),
        "rows-short": (_repo_source(good), {"expect": {"sqlite": [{"path": "app.db", "table": "orders",
                                                                   "minRows": 26}]}},
                       "expect.sqlite: app.db table orders has 25 rows, at least 26 expected"),
        "path-missing": (_repo_source(good), {"expect": {"paths": ["nope.txt"]}},
                         "expect.paths: nope.txt is not in the restored backup"),
        "verify-fails": (_repo_source(good), {"verify": {"command": [sys.executable, "-c",
                                                                     "print('orders table empty'); exit(4)"]}},
                         "exited 4: orders table empty"),
    }
    for name, (src, spec, _) in cases.items():
        cluster.apply(_drill(name, src, **spec))
    for name, (_, _, want) in cases.items():
        st = cluster.wait("restoredrill", name, _ran, ns="drills", timeout=120)["status"]
        if want is None:
            assert st["lastResult"] == "pass", (name, st)
        else:
            assert st["lastResult"] == "fail" and want in st["message"], (name, st)
    cluster.apply(_drill("bad-cron", _repo_source(good), schedule="61 * * * *"))
    st = cluster.wait("restoredrill", "bad-cron", lambda o: (o.get("status") or {}).get("phase") == "Invalid",
                      ns="drills")["status"]
    assert "invalid schedule" in st["message"]
    bad = cluster.kubectl("apply", "-f", "-", check=False, stdin=json.dumps(
        {**_drill("x", _repo_source(good)), "spec": {"source": {"repository": "/r"}}}))
    assert bad.returncode != 0 and "schedule" in bad.stderr  # the CRD's schema: schedule is required


def _write(c: Cluster, series: list[tuple[dict[str, str], float]]) -> None:
    w = prompb.WriteRequest()
    now = int(time.time() * 1000)
    for labels, value in series:
        ts = w.timeseries.add()
        for k, v in sorted(labels.items()):
            lb = ts.labels.add()
            lb.name, lb.value = k, v
        s = ts.samples.add()
        s.timestamp, s.value = now, value
    r = httpx.post(c.srv.url + "/api/v1/write", content=bytes(cramjam.snappy.compress_raw(w.SerializeToString())),
                   timeout=30)
    assert r.status_code == 204, r.text


def _rule_exprs() -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in yaml.safe_load(RULES)["groups"] for r in g["rules"]}


def test_shipped_rules_are_loaded_and_fire_only_when_their_condition_holds(cluster: Cluster) -> None:
    groups = httpx.get(cluster.srv.url + "/api/v1/rules", timeout=30).json()["data"]["groups"]
    assert SOURCE not in AT_START["files"]  # loaded once there is a Schedule or a drill to watch
    shipped = {r["name"] for g in groups if g["file"] == SOURCE for r in g["rules"]}
    assert shipped == set(_rule_exprs())
    exprs = _rule_exprs()
    # Series the drills above wrote: the damaged one failed, the self-backup one passed.
    _wait_series(cluster, "pitwall_restore_drill_success", lambda g: len(g) >= 3)
    fired = {s["metric"]["drill"] for s in _query(cluster, exprs["RestoreDrillFailed"])}
    assert "drills/damaged" in fired and "drills/self" not in fired and "drills/rows-ok" not in fired
    repos = {s["metric"]["repository"]: s["value"][1] for s in _query(cluster, "pitwall_backup_repository_check_success")}
    fired = {s["metric"]["repository"] for s in _query(cluster, exprs["BackupRepositoryCheckFailed"])}
    assert fired == {r for r, v in repos.items() if v == "0"} and fired and len(repos) > len(fired)
    # Schedules: "late" last succeeded 3 intervals ago, "fresh" half an interval ago, "never" was created 3
    # intervals ago and never succeeded, "new" was created half an interval ago.
    now = time.time()
    v = {"kind": "velero"}
    _write(cluster, [
        ({"__name__": "pitwall_backup_schedule_interval_seconds", **v, "name": n}, 3600.0)
        for n in ("t/late", "t/fresh", "t/never", "t/new")] + [
        ({"__name__": "pitwall_backup_schedule_created_timestamp_seconds", **v, "name": n}, now - age)
        for n, age in (("t/late", 99999), ("t/fresh", 99999), ("t/never", 3 * 3600), ("t/new", 1800))] + [
        ({"__name__": "pitwall_backup_last_success_timestamp_seconds", **v, "name": "t/late", "repository": "r"},
         now - 3 * 3600),
        ({"__name__": "pitwall_backup_last_success_timestamp_seconds", **v, "name": "t/fresh", "repository": "r"},
         now - 1800)])
    fired = {s["metric"]["name"] for s in _query(cluster, exprs["BackupScheduleMissed"])}
    assert fired == {"t/late", "t/never"}


def _pitwall(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pitwall.cli.main", "backup", *args, "--server", c.srv.url],
                          capture_output=True, text=True, timeout=120, env=c.env)


def test_backup_list_describe_and_logs(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", "cli")
    cluster.kubectl("-n", "cli", "create", "configmap", "settings", "--from-literal=mode=fast")
    cluster.apply(_backup("cli-1", includedNamespaces=["cli"], ttl="2h0m0s"))
    b = cluster.wait("backup", "cli-1", _done)
    assert b["status"]["phase"] == "Completed", b["status"]
    cluster.apply(_drill("cli-drill", {"backupName": "cli-1"}, ns="velero"))
    cluster.wait("restoredrill", "cli-drill", _ran, ns="velero", timeout=120)
    cluster.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "cli-back",
                                                                                "namespace": "velero"},
                   "spec": {"backupName": "cli-1", "namespaceMapping": {"cli": "cli-copy"}}})
    cluster.wait("restore", "cli-back", _done)

    out = _pitwall(cluster, "list")
    assert out.returncode == 0, out.stderr
    head, *rows = out.stdout.splitlines()
    assert re.match(r"NAMESPACE\s+NAME\s+STATUS\s+ERRORS\s+WARNINGS\s+CREATED\s+EXPIRES\s+STORAGE LOCATION\s+SELECTOR",
                    head), head
    row = next(r for r in rows if re.match(r"velero\s+cli-1\s", r))
    assert re.search(r"Completed\s+0\s+0\s+\S+\s+1[01]\dm\s+local\s+<none>", row), row
    wide = _pitwall(cluster, "list", "-n", "velero", "-o", "wide").stdout
    assert re.search(r"SIZE\s+ADDED\s+DURATION\s+SCHEDULE\s+SNAPSHOTS\s+AGE", wide), wide
    stats = json.loads(b["metadata"]["annotations"]["backup.pitwall.dev/stats"])
    assert stats["bytes"] > 0 and stats["bytesAdded"] > 0 and stats["durationSeconds"] > 0
    assert re.search(rf"velero\s+cli-1\s.*\s{stats['bytes'] / (1 << 20):.2f}MiB\s+{stats['bytesAdded'] / (1 << 20):.2f}MiB"
                     rf"\s+{stats['durationSeconds']:.1f}s\s", wide), wide
    js = json.loads(_pitwall(cluster, "list", "-n", "velero", "-o", "json").stdout)
    assert "cli-1" in {b["metadata"]["name"] for b in js} and all(b["kind"] == "Backup" for b in js)
    assert _pitwall(cluster, "list", "-n", "nothing-here").stderr.strip() == "no backups found"

    desc = _pitwall(cluster, "describe", "cli-1")
    assert desc.returncode == 0, desc.stderr
    text = desc.stdout
    snap = json.loads(b["metadata"]["annotations"]["backup.pitwall.dev/snapshots"])["cli"]
    for want in ("Name:         cli-1", "Phase:  Completed", "Included:  cli", "Storage Location:  local",
                 "TTL:  2h0m0s", f"cli:  {snap}", "cli-back  (Completed)", "cli-drill:  pass, RTO",
                 "Normal  Completed", f"Bytes added:  {stats['bytesAdded']} (deduplicated)"):
        assert want in text, (want, text)
    y = yaml.safe_load(_pitwall(cluster, "describe", "cli-1", "-o", "yaml").stdout)
    assert y["backup"]["metadata"]["name"] == "cli-1" and [r["metadata"]["name"] for r in y["restores"]] == ["cli-back"]

    logs = _pitwall(cluster, "logs", "cli-1")
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    # the ConfigMap and, cluster-scoped, the namespace's own Namespace object
    assert any('level=info reason=Completed msg="velero backup velero/cli-1: Completed, 2/2 items"' in x
               for x in lines), lines
    assert lines[-1].startswith('time="') and f'{snap}' in lines[-1]

    missing = _pitwall(cluster, "describe", "nope")
    assert missing.returncode == 1 and "backup velero/nope not found" in missing.stderr
    bad = _pitwall(cluster, "list", "-o", "xml")
    assert bad.returncode == 2 and "--output must be one of" in bad.stderr


def test_backup_check_on_the_server_records_the_repository_metric(cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    good, bad = _repo_with(tmp_path / "a"), _repo_with(tmp_path / "b")
    pack = max((p for p in (bad / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 3] ^= 0x55
    pack.chmod(0o644)
    pack.write_bytes(bytes(raw))
    env = {**{k: v for k, v in cluster.env.items() if not k.startswith("RESTIC_")}, "RESTIC_PASSWORD": DRILL_PW}

    def check(repo: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pitwall.cli.main", "backup", "check", "--repo", str(repo),
                               "--read-data", "--on-server", "--server", cluster.srv.url],
                              capture_output=True, text=True, timeout=120, env=env)

    ok, damaged = check(good), check(bad)
    assert ok.returncode == 0 and "no errors were found" in ok.stdout, ok.stderr
    assert damaged.returncode == 1 and "pitwall backup check: restic check exited" in damaged.stderr
    got = _wait_series(cluster, "pitwall_backup_repository_check_success",
                       lambda g: {str(good), str(bad)} <= {s["metric"]["repository"] for s in g})
    values = {s["metric"]["repository"]: s["value"][1] for s in got}
    assert values[str(good)] == "1" and values[str(bad)] == "0"
    r = httpx.post(cluster.srv.url + "/api/backup/v1/check", timeout=30,
                   json={"repository": str(good), "password": DRILL_PW, "readDataSubset": "1; rm -rf /"})
    assert r.status_code == 400 and "readDataSubset" in r.text


def test_schedule_interval_series_and_a_drill_of_its_latest_backup(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", "nightly-ns")
    cluster.kubectl("-n", "nightly-ns", "create", "configmap", "menu", "--from-literal=soup=yes")
    cluster.apply({"apiVersion": "velero.io/v1", "kind": "Schedule", "metadata": {"name": "nightly",
                                                                                 "namespace": "velero"},
                   "spec": {"schedule": "0 3 * * *", "template": {"includedNamespaces": ["nightly-ns"],
                                                                     "storageLocation": "local"}}})
    deadline = time.monotonic() + 120
    done: list[dict[str, Any]] = []
    while not done and time.monotonic() < deadline:
        items = json.loads(cluster.kubectl("get", "backups", "-n", "velero", "-l", "velero.io/schedule-name=nightly",
                                           "-o", "json").stdout)["items"]
        done = [b for b in items if (b.get("status") or {}).get("phase") == "Completed"]
        time.sleep(0.5)
    assert done, "the schedule's first backup never completed"
    got = _wait_series(cluster, 'pitwall_backup_schedule_interval_seconds{name="velero/nightly"}',
                       lambda g: len(g) == 1)
    assert got[0]["value"][1] == "86400" and got[0]["metric"]["kind"] == "velero"
    _wait_series(cluster, 'pitwall_backup_last_success_timestamp_seconds{name="velero/nightly"}',
                 lambda g: len(g) == 1)
    assert "velero/nightly" not in {s["metric"]["name"] for s in _query(cluster, _rule_exprs()["BackupScheduleMissed"])}
    cluster.apply(_drill("nightly-drill", {"scheduleName": "nightly"}, ns="velero",
                         expect={"paths": ["nightly-ns/resources/configmaps/namespaces/nightly-ns/menu.json"]}))
    st = cluster.wait("restoredrill", "nightly-drill", _ran, ns="velero", timeout=120)["status"]
    snaps = json.loads(done[0]["metadata"]["annotations"]["backup.pitwall.dev/snapshots"])
    assert set(snaps) == {"_cluster", "nightly-ns"}  # the namespace's objects and its Namespace object
    assert st["lastResult"] == "pass" and st["snapshot"] == ",".join(s[:8] for _, s in sorted(snaps.items())), st
