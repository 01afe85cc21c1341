"""Velero's kinds on a live pitwall through kubectl, with the real restic reading the repositories.

The docs' sample objects validate against the vendored CRDs and round-trip;
a Backup of a namespace with a running pod (its pre hook writes a dump into
the pod's emptyDir, inside the pod's environment) lands in restic as Velero's
layout; restores map namespaces and never overwrite; failing and hanging
hooks, a wrong password and a missing location give clear phases; a Schedule
makes Backups; ttl expiry forgets the snapshots.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pitwall.config import load_settings
from tests.conftest import SHARED, LiveServer

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

VELERO = SHARED / "conformance" / "wave2" / "velero"
API_TYPES = VELERO / "site" / "content" / "docs" / "main" / "api-types"
PASSWORD = "velero-test-password"


class Cluster:
    def __init__(self, srv: LiveServer, home: Path, prefix: Path) -> None:
        self.srv, self.home, self.prefix = srv, home, prefix
        cfg = home / "kubeconfig"
        cfg.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "p",
            "clusters": [{"name": "p", "cluster": {"server": srv.url}}], "users": [{"name": "p", "user": {}}],
            "contexts": [{"name": "p", "context": {"cluster": "p", "user": "p", "namespace": "default"}}]}))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        self.env.update(KUBECONFIG=str(cfg), HOME=str(home))

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["kubectl", f"--cache-dir={self.home / 'kcache'}", *args], input=stdin,
                           capture_output=True, text=True, env=self.env, timeout=60)
        if check:
            assert p.returncode == 0, f"kubectl {args}: {p.stderr}"
        return p

    def apply(self, *docs: dict[str, Any]) -> None:
        for d in docs:  # one by one: a v1 List makes kubectl validate through /openapi/v2 protobuf (not served)
            self.kubectl("apply", "-f", "-", stdin=json.dumps(d))

    def get(self, kind: str, name: str, ns: str = "velero") -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.kubectl("get", kind, name, "-n", ns, "-o", "json").stdout)
        return out

    def wait(self, kind: str, name: str, pred: Callable[[dict[str, Any]], bool], ns: str = "velero",
             timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        obj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            p = self.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
            if p.returncode == 0:
                obj = json.loads(p.stdout)
                if pred(obj):
                    return obj
            time.sleep(0.3)
        raise AssertionError(f"{kind} {ns}/{name} never matched; last: {json.dumps(obj.get('status'))}")

    def restic(self, ns: str, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        env["RESTIC_PASSWORD"] = PASSWORD
        return subprocess.run(["restic", "-r", str(self.prefix / ns), *args], capture_output=True, text=True,
                              env=env, timeout=60, check=True).stdout


def _done(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("phase") in ("Completed", "PartiallyFailed", "Failed", "FailedValidation")


def _bsl(name: str, prefix: Path | str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
            "metadata": {"name": name, "namespace": "velero"},
            "spec": {"provider": "restic", "objectStorage": {"bucket": "unused"},
                     "config": {"resticRepoPrefix": str(prefix)}, **spec}}


def _backup(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "velero.io/v1", "kind": "Backup", "metadata": {"name": name, "namespace": "velero"},
            "spec": {"storageLocation": "local", **spec}}


def _pod(name: str, ns: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "db"}, "annotations": annotations},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "db", "image": "python:3.11", "command": [sys.executable, "-c", "import time; time.sleep(600)"],
                "env": [{"name": "DB_NAME", "value": "shop"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "emptyDir": {}}]}}


def velero_cluster(srv: LiveServer, root: Path) -> Cluster:
    """kubectl against ``srv`` (its home in ``root/home``) with namespace velero, the repository password's
    Secret and the BackupStorageLocation ``local`` (restic repositories under ``root/repos``)."""
    home = root / "home"
    home.mkdir()
    c = Cluster(srv, home, root / "repos")
    c.kubectl("create", "namespace", "velero")
    c.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "velero-repo-credentials",
                                                                  "namespace": "velero"},
             "data": {"repository-password": base64.b64encode(PASSWORD.encode()).decode()}},
            _bsl("local", c.prefix))
    return c


@contextmanager
def live_server(root: Path) -> Iterator[LiveServer]:
    """A live pitwall with its data in ``root/data``, stopped on exit."""
    srv = LiveServer(load_settings(data_dir=root / "data", listen="127.0.0.1:0", storage={"fsync": False}))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("velero")
    with live_server(root) as srv:
        yield velero_cluster(srv, root)


_SCOPED = ("excludedClusterScopedResources", "includedClusterScopedResources", "excludedNamespaceScopedResources",
           "includedNamespaceScopedResources")


def _drop_nulls(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _drop_nulls(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_drop_nulls(v) for v in x]
    return x


def _samples() -> list[dict[str, Any]]:
    out = []
    for page in sorted(API_TYPES.glob("*.md")):
        for block in page.read_text().split("```yaml")[1:]:
            for doc in yaml.safe_load_all(block.split("```")[0]):
                if isinstance(doc, dict) and doc.get("apiVersion") == "velero.io/v1":
                    out.append(doc)
    return out


def test_crds_are_served_and_the_docs_samples_round_trip(cluster: Cluster) -> None:
    crds = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    for name in ("backups", "restores", "schedules", "backupstoragelocations"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{name}.velero.io" in crds
    if not API_TYPES.is_dir():
        pytest.skip(f"../shared is not beside the repo ({API_TYPES})")
    samples = _samples()
    assert {s["kind"] for s in samples} == {"Backup", "Restore", "Schedule", "BackupStorageLocation"}
    for i, doc in enumerate(samples):
        doc = {k: v for k, v in doc.items() if k != "status"}  # status is the controllers' to write
        doc = json.loads(json.dumps(doc))
        doc["metadata"] = {"name": f"sample-{i}", "namespace": "samples"}
        if doc["kind"] == "Schedule":
            doc["spec"]["paused"] = True  # validated and stored; not run
        ns_exists = cluster.kubectl("get", "namespace", "samples", check=False).returncode == 0
        if not ns_exists:
            cluster.kubectl("create", "namespace", "samples")
        spec = doc["spec"].get("template", doc["spec"])
        wrong = sorted(k for k in _SCOPED if spec.get(k) == {})
        if wrong:
            # The docs write these four as {} but the CRD (and so a real API server) wants arrays: refused,
            # each named, then accepted as [].
            p = cluster.kubectl("create", "-f", "-", stdin=json.dumps(doc), check=False)
            assert p.returncode != 0 and all(f"{k} in body must be of type array" in p.stderr for k in wrong)
            for k in wrong:
                spec[k] = []
        cluster.kubectl("create", "-f", "-", stdin=json.dumps(doc))
        got = cluster.get(doc["kind"].lower() + ".velero.io", f"sample-{i}", "samples")
        assert _drop_nulls(got["spec"]) == _drop_nulls(doc["spec"]), doc["kind"]
    # a wrong field type is refused by the CRD's schema
    bad = _backup("bad-ttl", ttl=5)
    p = cluster.kubectl("create", "-f", "-", stdin=json.dumps(bad), check=False)
    assert p.returncode != 0 and "ttl" in p.stderr


def test_backup_with_hooks_and_volumes_then_restores(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", "shop")
    cluster.kubectl("create", "configmap", "settings", "-n", "shop", "--from-literal=color=blue")
    cluster.kubectl("create", "secret", "generic", "creds", "-n", "shop", "--from-literal=pw=x")
    hook = json.dumps(["sh", "-c", 'echo "dump of $DB_NAME" > "$PITWALL_MOUNT_DATA/dump.sql"; echo pre >> '
                             '"$PITWALL_MOUNT_DATA/order"'])
    post = json.dumps(["sh", "-c", 'echo post >> "$PITWALL_MOUNT_DATA/order"'])
    cluster.apply(_pod("db", "shop", {"pre.hook.backup.velero.io/command": hook,
                                      "post.hook.backup.velero.io/command": post}))
    cluster.wait("pod", "db", lambda o: (o.get("status") or {}).get("phase") == "Running", ns="shop")

    cluster.apply(_backup("shop-1", includedNamespaces=["shop"], defaultVolumesToFsBackup=True))
    b = cluster.wait("backup", "shop-1", _done)
    st = b["status"]
    assert st["phase"] == "Completed", st
    assert st["errors"] == 0 and st["progress"]["itemsBackedUp"] == st["progress"]["totalItems"] >= 3
    assert st["expiration"] > st["startTimestamp"]  # default ttl 720h
    snaps = json.loads(cluster.restic("shop", "snapshots", "--json"))
    assert len(snaps) == 1
    assert set(snaps[0]["tags"]) == {"velero.io/backup=shop-1", "velero.io/storage-location=local",
                                     "velero.io/namespace=shop"}
    listed = cluster.restic("shop", "ls", "latest").splitlines()
    assert "/resources/configmaps/namespaces/shop/settings.json" in listed
    assert "/resources/secrets/namespaces/shop/creds.json" in listed
    assert "/resources/pods/namespaces/shop/db.json" in listed
    assert "/volumes/db/data/dump.sql" in listed  # the pre hook ran before the volume was read
    dump = cluster.restic("shop", "dump", "latest", "/volumes/db/data/dump.sql")
    assert dump == "dump of shop\n"  # in the pod's environment (its env var, its volume)
    assert cluster.restic("shop", "dump", "latest", "/volumes/db/data/order") == "pre\n"

    # a restore into a mapped namespace brings the objects back there
    cluster.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "r1", "namespace": "velero"},
                   "spec": {"backupName": "shop-1", "includedResources": ["configmaps", "secrets"],
                            "namespaceMapping": {"shop": "shop-copy"}}})
    r = cluster.wait("restore", "r1", _done)
    assert r["status"]["phase"] == "Completed", r["status"]
    cm = cluster.get("configmap", "settings", "shop-copy")
    assert cm["data"] == {"color": "blue"} and cm["metadata"]["labels"]["velero.io/restore-name"] == "r1"
    assert cluster.kubectl("get", "pod", "db", "-n", "shop-copy", check=False).returncode != 0  # not included

    # onto existing objects: left alone (none), then updated (update)
    cluster.kubectl("patch", "configmap", "settings", "-n", "shop", "--type=merge", "-p", '{"data":{"color":"red"}}')
    cluster.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "r2", "namespace": "velero"},
                   "spec": {"backupName": "shop-1", "includedResources": ["configmaps"]}})
    r = cluster.wait("restore", "r2", _done)
    assert r["status"]["phase"] == "Completed" and r["status"]["warnings"] >= 1
    assert cluster.get("configmap", "settings", "shop")["data"] == {"color": "red"}
    cluster.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "r3", "namespace": "velero"},
                   "spec": {"backupName": "shop-1", "includedResources": ["configmaps"],
                            "existingResourcePolicy": "update"}})
    r = cluster.wait("restore", "r3", _done)
    assert r["status"]["phase"] == "Completed", r["status"]
    assert cluster.get("configmap", "settings", "shop")["data"] == {"color": "blue"}

    # each backup and restore is a change event; the figures are metrics
    changes = httpx.get(cluster.srv.url + "/pagerduty/change_events", timeout=10).json()["change_events"]
    summaries = [c["summary"] for c in changes]
    assert any(x.startswith("velero backup velero/shop-1: Completed") for x in summaries), summaries
    assert any(x.startswith("velero restore velero/r1 from backup shop-1: Completed") for x in summaries)
    metrics = httpx.get(cluster.srv.url + "/metrics", timeout=10).text
    assert 'pitwall_backup_last_success_timestamp_seconds{kind="velero",name="velero/shop-1",repository="local"}' \
        in metrics


def test_failing_and_hanging_hooks(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", "hooks")
    cluster.apply(_pod("bad", "hooks", {"pre.hook.backup.velero.io/command": '["sh", "-c", "echo no disk; exit 3"]'}),
                  _pod("slow", "hooks", {"pre.hook.backup.velero.io/command": '["sleep", "30"]',
                                         "pre.hook.backup.velero.io/timeout": "1s",
                                         "pre.hook.backup.velero.io/on-error": "Continue"}))
    for name in ("bad", "slow"):
        cluster.wait("pod", name, lambda o: (o.get("status") or {}).get("phase") == "Running", ns="hooks")
    cluster.apply(_backup("hooks-1", includedNamespaces=["hooks"], includedResources=["pods"]))
    b = cluster.wait("backup", "hooks-1", _done)
    assert b["status"]["phase"] == "PartiallyFailed"
    assert b["status"]["errors"] == 1 and b["status"]["warnings"] == 1
    events = [e["message"] for e in json.loads(cluster.kubectl("get", "events", "-n", "velero", "-o",
                                                               "json").stdout)["items"]
              if e["involvedObject"]["name"] == "hooks-1"]
    assert any("hooks/bad failed: command exited with 3: no disk" in m for m in events), events
    assert any("hooks/slow failed: hook timed out after 1s" in m for m in events), events
    listed = cluster.restic("hooks", "ls", "latest").splitlines()
    assert "/resources/pods/namespaces/hooks/slow.json" in listed  # Continue: backed up anyway
    assert "/resources/pods/namespaces/hooks/bad.json" not in listed  # Fail: left out


def test_locations_are_validated(cluster: Cluster) -> None:
    def validated(o: dict[str, Any]) -> bool:
        return bool((o.get("status") or {}).get("lastValidationTime"))

    ok = cluster.wait("backupstoragelocations.velero.io", "local", validated)
    assert ok["status"]["phase"] == "Available" and ok["status"]["accessMode"] == "ReadWrite"
    cluster.apply({**_bsl("s3", cluster.prefix), "spec": {"provider": "aws", "objectStorage": {"bucket": "b"}}})
    bad = cluster.wait("backupstoragelocations.velero.io", "s3", validated)
    assert bad["status"]["phase"] == "Unavailable" and "provider 'aws' is not supported" in bad["status"]["message"]


def test_wrong_password_and_missing_location_fail_clearly(cluster: Cluster, tmp_path: Path) -> None:
    cluster.apply(_backup("no-bsl", storageLocation="nowhere"))
    b = cluster.wait("backup", "no-bsl", _done)
    assert b["status"]["phase"] == "Failed" and "nowhere" in b["status"]["failureReason"]
    # a repository made with another password below a second location's prefix
    other = tmp_path / "other"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    subprocess.run(["restic", "-r", str(other / "default"), "init"], env={**env, "RESTIC_PASSWORD": "different"},
                   check=True, capture_output=True)
    cluster.kubectl("create", "configmap", "x", "-n", "default", "--from-literal=a=b")
    cluster.apply(_bsl("other", other), _backup("wrong-pw", storageLocation="other", includedNamespaces=["default"]))
    b = cluster.wait("backup", "wrong-pw", _done)
    assert b["status"]["phase"] == "Failed" and "wrong password" in b["status"]["failureReason"]
    cluster.apply(_bsl("down", "rest:http://127.0.0.1:1"),
                  _backup("down-1", storageLocation="down", includedNamespaces=["default"]))
    b = cluster.wait("backup", "down-1", _done)
    assert b["status"]["phase"] == "Failed" and "connection refused" in b["status"]["failureReason"]
    cluster.apply(_bsl("ro", cluster.prefix, accessMode="ReadOnly"),
                  _backup("ro-1", storageLocation="ro", includedNamespaces=["default"]))
    b = cluster.wait("backup", "ro-1", _done)
    assert b["status"]["phase"] == "Failed" and "read-only" in b["status"]["failureReason"]


def test_schedule_makes_backups_and_ttl_expires_them(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", "sched")
    cluster.kubectl("create", "configmap", "c", "-n", "sched", "--from-literal=a=1")
    cluster.apply({"apiVersion": "velero.io/v1", "kind": "Schedule", "metadata": {"name": "nightly",
                                                                                  "namespace": "velero"},
                   "spec": {"schedule": "0 3 * * *", "template": {"includedNamespaces": ["sched"],
                                                                   "storageLocation": "local", "ttl": "2h0m0s"}}})
    s = cluster.wait("schedules.velero.io", "nightly", lambda o: bool((o.get("status") or {}).get("lastBackup")))
    assert s["status"]["phase"] == "Enabled"
    names = cluster.kubectl("get", "backups", "-n", "velero", "-l", "velero.io/schedule-name=nightly", "-o",
                            "name").stdout.split()
    assert len(names) == 1  # the first at once; the next at 03:00
    name = names[0].split("/")[1]
    b = cluster.wait("backup", name, _done)
    assert b["status"]["phase"] == "Completed", b["status"]
    start, expiration = (datetime.fromisoformat(b["status"][k].replace("Z", "+00:00"))
                         for k in ("startTimestamp", "expiration"))
    assert expiration - start == timedelta(hours=2)
    snap = json.loads(cluster.restic("sched", "snapshots", "--json"))
    assert [t for t in snap[0]["tags"] if t.startswith("velero.io/backup=")] == [f"velero.io/backup={name}"]
    # a restore by schedule name takes its latest backup
    cluster.kubectl("delete", "configmap", "c", "-n", "sched")
    cluster.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "rs", "namespace": "velero"},
                   "spec": {"scheduleName": "nightly"}})
    assert cluster.wait("restore", "rs", _done)["status"]["phase"] == "Completed"
    assert cluster.get("configmap", "c", "sched")["data"] == {"a": "1"}
    # at its expiration the snapshot is forgotten and the Backup deleted (moved to now rather than waiting 2h)
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.kubectl("patch", "backups.velero.io", name, "-n", "velero", "--type=merge", "-p",
                    json.dumps({"status": {"expiration": past}}))
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", "backup", name, "-n", "velero", check=False).returncode == 0:
        assert time.monotonic() < deadline, "backup never expired"
        time.sleep(0.5)
    assert json.loads(cluster.restic("sched", "snapshots", "--json")) == []
