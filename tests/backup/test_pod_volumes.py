"""Pod volumes back into restored pods (Velero's file-system restore) on a live pitwall, through kubectl.

A pod writes files into its emptyDir; a Backup with ``defaultVolumesToFsBackup``
takes them; the namespace is deleted and restored, in place and mapped to
another namespace. The restored pod's own process checks, at its start, that
the file is there and exits non-zero if not (restartPolicy Never: no second
chance), so a Running pod that printed the file proves the data was in place
before the process started; the files it lists are those ``restic ls`` lists.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pitwall.backup.podvolumes import PodVolumes, add_restore_wait, fill_volumes
from pitwall.config import load_settings
from tests.backup.test_velero import PASSWORD, Cluster, _backup, _bsl, _done
from tests.conftest import LiveServer

pytestmark = [pytest.mark.timeout(300)]

# Writes the files when it is the original pod; as a restored pod (the restore's label, through the downward
# API) it requires them at its start, then lists the volume.
PROGRAM = r"""
import json, os, sys, time
vol = os.environ["PITWALL_MOUNT_DATA"]
hello = os.path.join(vol, "notes", "hello.txt")
if os.environ.get("RESTORED"):
    if not os.path.isfile(hello):
        print("MISSING " + hello, flush=True)
        sys.exit(3)
    files = sorted(os.path.relpath(os.path.join(d, f), vol) for d, _, fs in os.walk(vol) for f in fs
                   if not os.path.relpath(d, vol).startswith(".velero"))
    print("FOUND " + open(hello).read().strip(), flush=True)
    print("FILES " + json.dumps(files), flush=True)
else:
    os.makedirs(os.path.dirname(hello), exist_ok=True)
    with open(hello, "w") as f:
        f.write("hello from the writer\n")
    with open(os.path.join(vol, "blob.bin"), "wb") as f:
        f.write(os.urandom(20000))
    print("WROTE", flush=True)
time.sleep(600)
"""


def _writer(ns: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "writer", "namespace": ns,
                                                            "labels": {"app": "writer"}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "app", "image": "python:3.11", "command": [sys.executable, "-c", PROGRAM],
                "env": [{"name": "RESTORED", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.labels['velero.io/restore-name']"}}}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "emptyDir": {}}]}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("podvol")
    srv = LiveServer(load_settings(data_dir=root / "data", listen="127.0.0.1:0", storage={"fsync": False}))
    srv.start()
    home = root / "home"
    home.mkdir()
    c = Cluster(srv, home, root / "repos")
    c.kubectl("create", "namespace", "velero")
    c.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "velero-repo-credentials",
                                                                  "namespace": "velero"},
             "data": {"repository-password": base64.b64encode(PASSWORD.encode()).decode()}},
            _bsl("local", c.prefix))
    try:
        yield c
    finally:
        srv.stop()


def _logs(c: Cluster, ns: str, container: str = "app", want: str = "FILES", timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        p = c.kubectl("logs", "writer", "-n", ns, "-c", container, check=False)
        out = p.stdout
        if want in out or "MISSING" in out:
            return out
        time.sleep(0.3)
    raise AssertionError(f"pod {ns}/writer never printed {want}: {out!r}")


def _restored_files(c: Cluster, ns: str) -> list[str]:
    pod = c.wait("pod", "writer", lambda o: (o.get("status") or {}).get("phase") in ("Running", "Failed"), ns=ns)
    out = _logs(c, ns)
    assert "FOUND hello from the writer" in out, out  # the process saw the file at its start
    assert pod["status"]["phase"] == "Running", pod["status"]
    inits = pod["status"]["initContainerStatuses"]
    assert [s["name"] for s in inits] == ["restore-wait"]
    assert inits[0]["state"]["terminated"]["exitCode"] == 0
    line = next(x for x in out.splitlines() if x.startswith("FILES "))
    files: list[str] = json.loads(line[len("FILES "):])
    return files


def test_restored_pods_start_with_their_volume_data(cluster: Cluster) -> None:
    c = cluster
    c.kubectl("create", "namespace", "notes")
    c.apply(_writer("notes"))
    c.wait("pod", "writer", lambda o: (o.get("status") or {}).get("phase") == "Running", ns="notes")
    assert "WROTE" in _logs(c, "notes", want="WROTE")
    c.apply(_backup("notes-1", includedNamespaces=["notes"], defaultVolumesToFsBackup=True))
    b = c.wait("backup", "notes-1", _done)
    assert b["status"]["phase"] == "Completed", b["status"]
    listed = c.restic("notes", "ls", "latest").splitlines()
    in_snapshot = sorted(p[len("/volumes/writer/data/"):] for p in listed
                         if p.startswith("/volumes/writer/data/") and "." in Path(p).name)
    assert in_snapshot == ["blob.bin", "notes/hello.txt"], listed

    c.kubectl("delete", "namespace", "notes", "--timeout=90s")
    deadline = time.monotonic() + 90
    while c.kubectl("get", "namespace", "notes", check=False).returncode == 0:
        assert time.monotonic() < deadline, "namespace notes was never deleted"
        time.sleep(0.5)

    # in place: the same namespace, the original pod name
    c.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "notes-back", "namespace": "velero"},
             "spec": {"backupName": "notes-1"}})
    r = c.wait("restore", "notes-back", _done, timeout=150)
    assert r["status"]["phase"] == "Completed", (r["status"], [e["message"] for e in json.loads(c.kubectl("get", "events", "-n", "velero", "-o", "json").stdout)["items"] if e["reason"] == "ItemError"])
    assert _restored_files(c, "notes") == in_snapshot

    # mapped: the data is found by the pod's name in the backup, and lands in the new namespace's pod
    c.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "notes-copy", "namespace": "velero"},
             "spec": {"backupName": "notes-1", "namespaceMapping": {"notes": "notes-copy"}}})
    r = c.wait("restore", "notes-copy", _done, timeout=150)
    assert r["status"]["phase"] == "Completed", (r["status"], [e["message"] for e in json.loads(c.kubectl("get", "events", "-n", "velero", "-o", "json").stdout)["items"] if e["reason"] == "ItemError"])
    assert _restored_files(c, "notes-copy") == in_snapshot

    # without volumes in the restore (Velero: PVCs/PVs excluded), no data and no restore-wait: the process fails
    c.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "notes-novol", "namespace": "velero"},
             "spec": {"backupName": "notes-1", "namespaceMapping": {"notes": "notes-novol"},
                      "excludedResources": ["persistentvolumeclaims"]}})
    r = c.wait("restore", "notes-novol", _done, timeout=150)
    assert r["status"]["phase"] == "Completed", (r["status"], [e["message"] for e in json.loads(c.kubectl("get", "events", "-n", "velero", "-o", "json").stdout)["items"] if e["reason"] == "ItemError"])
    pod = c.wait("pod", "writer", lambda o: (o.get("status") or {}).get("phase") == "Failed", ns="notes-novol")
    assert "initContainerStatuses" not in pod["status"]
    assert "MISSING" in _logs(c, "notes-novol")


def test_a_failed_volume_fails_the_wait_and_never_starts_the_pod(tmp_path: Path) -> None:
    """A volume whose data cannot be written: an error per volume, and restore-wait exits non-zero with why."""
    src = tmp_path / "snap" / "volumes" / "p" / "data"
    (src / "notes").mkdir(parents=True)
    (src / "notes" / "a.txt").write_text("a")
    dst = tmp_path / "vol"
    dst.mkdir()
    (dst / "notes").write_text("a file where the snapshot has a directory")
    pod: dict[str, Any] = {"spec": {"volumes": [{"name": "data", "emptyDir": {}}]}}
    add_restore_wait(pod, ["data"], "uid-1")
    wait = pod["spec"]["initContainers"][0]
    assert wait["name"] == "restore-wait"

    errors = asyncio.run(fill_volumes(PodVolumes("ns", "p", {"data": src}), "uid-1",
                                      lambda ns, name: {"data": dst}, 5.0))
    assert len(errors) == 1 and errors[0].startswith("pod ns/p volume data: ")
    assert (dst / ".velero" / "uid-1.failed").is_file() and not (dst / ".velero" / "uid-1").exists()
    env = {**os.environ, "PITWALL_MOUNT_DATA": str(dst)}
    p = subprocess.run(wait["command"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "volume data: restore failed" in p.stderr

    # a pod that never starts here: the wait ends with an error naming the volume, after the timeout
    errors = asyncio.run(fill_volumes(PodVolumes("ns", "p", {"data": src}), "uid-2", lambda ns, name: {}, 0.3))
    assert errors == ["pod ns/p volume data: the pod did not start on this node within 0.3s; its data was not "
                      "restored"]


def test_a_pod_deleted_before_it_starts_ends_the_wait_at_once(tmp_path: Path) -> None:
    """A restored pod deleted before it ran (a user, a controller's surplus): the Restore does not wait out
    its volume timeout for a pod that will never start."""
    src = tmp_path / "snap" / "volumes" / "p" / "data"
    src.mkdir(parents=True)
    asked: list[int] = []

    async def gone() -> bool:
        asked.append(1)
        return False

    errors = asyncio.run(fill_volumes(PodVolumes("ns", "p", {"data": src}), "uid-1", lambda ns, name: {}, 120.0,
                                      gone))
    assert errors == ["pod ns/p volume data: the pod was deleted before it started; its data was not restored"]
    assert asked == [1]


def _pods(c: Cluster, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(c.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    return items


def test_a_deployments_pods_come_back_with_their_data_and_are_adopted(cluster: Cluster) -> None:
    """Velero's order (pods, then ReplicaSets, then Deployments): the restored pod, with its data, is adopted
    by the restored ReplicaSet, which then makes no new pod."""
    c = cluster
    c.kubectl("create", "namespace", "shop")
    tpl = {k: v for k, v in _writer("shop").items() if k in ("spec",)}
    tpl["metadata"] = {"labels": {"app": "web"}}
    tpl["spec"]["restartPolicy"] = "Always"
    c.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
             "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": tpl}})
    c.wait("deployment", "web", lambda o: (o.get("status") or {}).get("readyReplicas") == 1, ns="shop")
    (pod,) = _pods(c, "shop")
    name = pod["metadata"]["name"]
    deadline = time.monotonic() + 60
    while "WROTE" not in c.kubectl("logs", name, "-n", "shop", check=False).stdout:
        assert time.monotonic() < deadline, "the writer never wrote"
        time.sleep(0.3)
    c.apply(_backup("shop-1", includedNamespaces=["shop"], defaultVolumesToFsBackup=True))
    assert c.wait("backup", "shop-1", _done)["status"]["phase"] == "Completed"

    c.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "shop-copy", "namespace": "velero"},
             "spec": {"backupName": "shop-1", "namespaceMapping": {"shop": "shop-copy"}}})
    # the Restore runs restic restore and waits for the restored pod to start to fill its volume: 2-5 s on
    # 2 cores, idle to load 13; the margin is for a slower machine, not for a pod that never starts (deleted,
    # the Restore ends at once, PartiallyFailed)
    r = c.wait("restore", "shop-copy", _done, timeout=150)
    assert r["status"]["phase"] == "Completed", r["status"]
    c.wait("pod", name, lambda o: any(ref.get("kind") == "ReplicaSet"
                                      for ref in o["metadata"].get("ownerReferences") or []), ns="shop-copy")
    d = c.wait("deployment", "web", lambda o: (o.get("status") or {}).get("readyReplicas") == 1, ns="shop-copy")
    assert not d["status"].get("collisionCount"), d["status"]  # the restored ReplicaSet adopted, not a new one
    deadline = time.monotonic() + 60
    out = ""
    while "FILES" not in out and "MISSING" not in out:
        assert time.monotonic() < deadline, out
        out = c.kubectl("logs", name, "-n", "shop-copy", "-c", "app", check=False).stdout
        time.sleep(0.3)
    assert "FOUND hello from the writer" in out, out
    assert [p["metadata"]["name"] for p in _pods(c, "shop-copy")] == [name]  # adopted, not replaced
    # and never replaced meanwhile: a ReplicaSet that failed to adopt it (the kubelet wrote its status under
    # the adoption) made a second pod, then deleted one of the two as surplus, often the restored one, still
    # held by restore-wait (issue 21: the pod was gone, or the Restore waited for it to start)
    events = json.loads(c.kubectl("get", "events", "-n", "shop-copy", "-o", "json").stdout)["items"]
    assert not [e["message"] for e in events if e["reason"] in ("SuccessfulCreate", "SuccessfulDelete")]
