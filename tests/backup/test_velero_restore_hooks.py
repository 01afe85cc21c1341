"""Velero's restore hooks through kubectl on a live pitwall: a Restore's ``init`` hook adds its init container
to the restored pod (it runs before the pod's containers), and its ``exec`` hooks run in order in the running
container; a failing hook is an error of the Restore, ``onError: Continue`` runs the next ones, ``Fail`` stops
the pod's remaining hooks. What the hooks did is read from the pod's hostPath volume.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pitwall.backup.restorehooks import add_init_hooks, exec_hooks
from tests.backup.test_velero import Cluster, _backup, _done, live_server, velero_cluster

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    root = tmp_path_factory.mktemp("velero-rhooks")
    with live_server(root) as srv:
        yield velero_cluster(srv, root), root


def _pod(host_dir: Path) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": "rh", "labels": {"app": "db"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "db", "image": "python:3.11", "command": [sys.executable, "-c", "import time; time.sleep(600)"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "hostPath": {"path": str(host_dir), "type": "DirectoryOrCreate"}}]}}


def _sh(script: str, **extra: Any) -> dict[str, Any]:
    return {"exec": {"container": "db", "command": ["sh", "-c", script], **extra}}


@pytest.mark.slow
def test_init_and_exec_restore_hooks(cluster: tuple[Cluster, Path]) -> None:
    c, root = cluster
    data = root / "hostdata"
    c.kubectl("create", "namespace", "rh")
    c.apply(_pod(data))
    c.wait("pod", "app", lambda o: (o.get("status") or {}).get("phase") == "Running", ns="rh")
    c.apply(_backup("rh-1", includedNamespaces=["rh"]))
    assert c.wait("backup.velero.io", "rh-1", _done)["status"]["phase"] == "Completed"
    c.kubectl("delete", "pod", "app", "-n", "rh", "--wait=true", "--timeout=60s")

    log = '>> "$PITWALL_MOUNT_DATA/log"'
    init = {"name": "prep", "image": "busybox", "command": ["sh", "-c", 'echo init > "$PITWALL_MOUNT_DATA/init"'],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    hooks = {"resources": [
        {"name": "other", "includedNamespaces": ["elsewhere"], "postHooks": [_sh(f"echo wrong {log}")]},
        {"name": "db-hooks", "includedNamespaces": ["rh"], "labelSelector": {"matchLabels": {"app": "db"}},
         "postHooks": [{"init": {"initContainers": [init]}},
                       _sh(f"echo first {log}", execTimeout="10s", waitTimeout="60s"),
                       _sh("echo broken; exit 4", onError="Continue"),
                       _sh(f"echo second {log}"),
                       _sh("exit 5"),  # onError Fail (the default): what follows does not run
                       _sh(f"echo never {log}")]}]}
    c.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "rh-r", "namespace": "velero"},
             "spec": {"backupName": "rh-1", "includedResources": ["pods"], "hooks": hooks}})
    r = c.wait("restore.velero.io", "rh-r", _done, timeout=120)
    assert r["status"]["phase"] == "PartiallyFailed", r["status"]
    assert r["status"]["errors"] == 2, r["status"]
    pod = c.get("pod", "app", "rh")
    assert [x["name"] for x in pod["spec"]["initContainers"]] == ["prep"]
    assert (data / "init").read_text() == "init\n"
    assert (data / "log").read_text() == "first\nsecond\n"
    events = c.kubectl("get", "events", "-n", "velero", "--field-selector", "involvedObject.name=rh-r",
                       "-o", "json").stdout
    assert "hook db-hooks in container db in pod rh/app failed to execute, err: command exited with 4: broken" \
        in events


def test_hook_selection_rules() -> None:
    pod = {"metadata": {"name": "p", "namespace": "b", "labels": {"tier": "x"}},
           "spec": {"containers": [{"name": "main"}], "initContainers": [{"name": "restore-wait"}, {"name": "own"}]}}
    spec = {"resources": [{"name": "h", "includedNamespaces": ["b"], "labelSelector": {"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["x", "y"]}]}, "postHooks": [
        {"init": {"initContainers": [{"name": "i", "image": "busybox", "command": ["true"]}]}},
        {"exec": {"command": ["true"]}}]},
        {"name": "no", "labelSelector": {"matchLabels": {"tier": "z"}}, "postHooks": [{"exec": {"command": ["x"]}}]}]}
    add_init_hooks(pod, spec)
    assert [x["name"] for x in pod["spec"]["initContainers"]] == ["restore-wait", "i", "own"]  # restore-wait first
    got = exec_hooks(pod, spec)
    assert [(h.name, h.container, h.command, h.on_error, h.exec_timeout_s, h.wait_timeout_s) for h in got] == [
        ("h", "main", ("true",), "Fail", 30.0, 0.0)]
    bad = {"resources": [{"postHooks": [{"init": {"initContainers": [{"name": "i", "command": ["true"]}]}}]}]}
    with pytest.raises(ValueError, match="doesn't have Command, Name or Image field"):
        add_init_hooks({"metadata": {"namespace": "b"}, "spec": {}}, bad)
    ann = {"metadata": {"namespace": "b", "annotations": {"post.hook.restore.velero.io/command": '["a", "b"]',
                                                          "post.hook.restore.velero.io/on-error": "Continue"}},
           "spec": {"containers": [{"name": "c"}]}}
    assert [(h.command, h.on_error, h.container) for h in exec_hooks(ann, spec)] == [(("a", "b"), "Continue", "c")]
