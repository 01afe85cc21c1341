"""Cluster-scoped resources in Velero Backups and Restores, through kubectl on a live pitwall, with the real
restic listing what was written.

A namespace holding a custom resource (its CRD cluster-scoped) and a ClusterRole beside it:
``includeClusterResources`` unset backs up the Namespace object and the CRD only, ``true`` the ClusterRole
too, ``false`` no cluster-scoped item; cluster items sit at Velero's ``resources/<resource>/cluster/<name>.json``
in the ``_cluster`` repository; a restore after deleting everything brings the CRD back before its custom
resource, and a second restore leaves the existing cluster objects as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pitwall.backup.velero import ClusterScope, Selection
from pitwall.backup.views import snapshot_contents
from tests.backup.test_velero import Cluster, _backup, _done, live_server, velero_cluster

pytestmark = pytest.mark.timeout(240)

CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
       "metadata": {"name": "widgets.example.com"},
       "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                    "type": "object", "properties": {"spec": {"type": "object", "properties": {
                        "size": {"type": "integer"}}}}}}}]}}
WIDGET = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "namespace": "shop"},
          "spec": {"size": 3}}
ROLE = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "shop-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("velero-cluster")
    with live_server(root) as srv:
        yield velero_cluster(srv, root)


def _snaps(b: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = json.loads(b["metadata"]["annotations"]["backup.pitwall.dev/snapshots"])
    return out


def _files(c: Cluster, repo: str, snap: str) -> set[str]:
    nodes = [json.loads(line) for line in c.restic(repo, "ls", "--json", snap).splitlines() if line.strip()]
    return {n["path"] for n in nodes if n.get("type") == "file"}


def _run_backup(c: Cluster, name: str, **spec: Any) -> dict[str, Any]:
    c.apply(_backup(name, includedNamespaces=["shop"], **spec))
    b = c.wait("backup.velero.io", name, _done)
    assert b["status"]["phase"] == "Completed", b["status"]
    return b


CRD_FILE = "/resources/customresourcedefinitions.apiextensions.k8s.io/cluster/widgets.example.com.json"
NS_FILE = "/resources/namespaces/cluster/shop.json"
ROLE_FILE = "/resources/clusterroles.rbac.authorization.k8s.io/cluster/shop-reader.json"


@pytest.mark.slow
def test_cluster_scoped_items_backed_up_and_restored_crd_first(cluster: Cluster) -> None:
    c = cluster
    c.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "web"}}},
            CRD, ROLE)
    c.kubectl("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=30s")
    c.apply(WIDGET, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "shop"},
                     "data": {"k": "v"}})

    # unset: the namespace's own Namespace object and the CRD of its custom resource, nothing else
    auto = _run_backup(c, "auto")
    snaps = _snaps(auto)
    assert set(snaps) == {"_cluster", "shop"}
    files = _files(c, "_cluster", snaps["_cluster"])
    assert {CRD_FILE, NS_FILE} <= files and ROLE_FILE not in files
    assert not any("/namespaces/cluster/" in f and f != NS_FILE for f in files)  # velero's own namespace not
    assert "/resources/widgets.example.com/namespaces/shop/w1.json" in _files(c, "shop", snaps["shop"])

    # true: every cluster-scoped resource, the ClusterRole included
    everything = _run_backup(c, "everything", includeClusterResources=True)
    files = _files(c, "_cluster", _snaps(everything)["_cluster"])
    assert {CRD_FILE, NS_FILE, ROLE_FILE} <= files
    assert "/resources/namespaces/cluster/velero.json" not in files  # Namespaces still follow the selection

    # false: no cluster-scoped item at all, and none inside the namespace's snapshot
    none = _run_backup(c, "none", includeClusterResources=False)
    assert set(_snaps(none)) == {"shop"}
    assert not any("/cluster/" in f for f in _files(c, "shop", _snaps(none)["shop"]))

    # the newer filters: only the listed cluster-scoped resources (and the Namespace objects)
    scoped = _run_backup(c, "scoped", includedClusterScopedResources=["clusterroles"])
    files = _files(c, "_cluster", _snaps(scoped)["_cluster"])
    assert ROLE_FILE in files and NS_FILE in files

    # lose it all, then restore: the CRD is served again before the Widget is created (else it would fail)
    c.kubectl("delete", "widget", "w1", "-n", "shop")
    c.kubectl("delete", "namespace", "shop", "--wait=true", "--timeout=60s")
    c.kubectl("delete", "crd", "widgets.example.com", "--wait=true", "--timeout=60s")
    c.kubectl("delete", "clusterrole", "shop-reader")
    c.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "back", "namespace": "velero"},
             "spec": {"backupName": "everything"}})
    r = c.wait("restore.velero.io", "back", _done)
    assert r["status"]["phase"] == "Completed", r["status"]
    assert not r["status"].get("errors")
    crd = c.get("crd", "widgets.example.com", "")
    widget = c.get("widget", "w1", "shop")
    assert widget["spec"] == {"size": 3}
    assert widget["metadata"]["labels"]["velero.io/restore-name"] == "back"
    assert crd["metadata"]["labels"]["velero.io/restore-name"] == "back"
    assert crd["metadata"]["creationTimestamp"] <= widget["metadata"]["creationTimestamp"]
    assert c.get("namespace", "shop", "")["metadata"]["labels"]["team"] == "web"  # as backed up
    assert c.get("clusterrole", "shop-reader", "")["rules"] == ROLE["rules"]

    # existingResourcePolicy none (the default): an existing cluster object is left as it is, with a warning
    c.kubectl("patch", "clusterrole", "shop-reader", "--type=json", "-p",
              json.dumps([{"op": "replace", "path": "/rules/0/verbs", "value": ["list"]}]))
    c.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "again", "namespace": "velero"},
             "spec": {"backupName": "everything", "includedResources": ["clusterroles"]}})
    again = c.wait("restore.velero.io", "again", _done)
    assert again["status"]["phase"] == "Completed" and again["status"]["warnings"] >= 1, again["status"]
    assert c.get("clusterrole", "shop-reader", "")["rules"][0]["verbs"] == ["list"]
    events = c.kubectl("get", "events", "-n", "velero", "--field-selector", "involvedObject.name=again",
                       "-o", "json").stdout
    assert "ClusterRole shop-reader already exists" in events
    # existingResourcePolicy update: the backed-up ClusterRole replaces the changed one
    c.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "upd", "namespace": "velero"},
             "spec": {"backupName": "everything", "includedResources": ["clusterroles"],
                      "existingResourcePolicy": "update"}})
    assert c.wait("restore.velero.io", "upd", _done)["status"]["phase"] == "Completed"
    assert c.get("clusterrole", "shop-reader", "")["rules"] == ROLE["rules"]

    # a restore of named namespaces with includeClusterResources unset leaves cluster items out (Velero)
    c.kubectl("delete", "clusterrole", "shop-reader")
    c.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "ns-only", "namespace": "velero"},
             "spec": {"backupName": "everything", "includedNamespaces": ["shop"],
                      "namespaceMapping": {"shop": "shop2"}}})
    assert c.wait("restore.velero.io", "ns-only", _done)["status"]["phase"] == "Completed"
    assert c.kubectl("get", "clusterrole", "shop-reader", check=False).returncode != 0
    assert c.get("widget", "w1", "shop2")["spec"] == {"size": 3}
    assert c.get("namespace", "shop2", "")["metadata"]["labels"]["team"] == "web"  # made from the backed-up one


def test_cluster_scope_rules() -> None:
    """Velero's decision table, without a server."""
    every, some = Selection.of({}), Selection.of({"includedNamespaces": ["shop"]})
    role = ("rbac.authorization.k8s.io", "clusterroles", "ClusterRole")
    assert ClusterScope.of({}).direct(every, *role)
    assert not ClusterScope.of({"includedNamespaces": ["shop"]}).direct(some, *role)
    assert ClusterScope.of({"includedNamespaces": ["shop"]}).direct(some, "", "namespaces", "Namespace")
    assert ClusterScope.of({"includedNamespaces": ["shop"]}).related(some, "apiextensions.k8s.io",
                                                                     "customresourcedefinitions",
                                                                     "CustomResourceDefinition")
    on = {"includedNamespaces": ["shop"], "includeClusterResources": True}
    assert ClusterScope.of(on).direct(some, *role)
    excl = Selection.of({**on, "excludedResources": ["clusterroles"]})
    assert not ClusterScope.of({**on, "excludedResources": ["clusterroles"]}).direct(excl, *role)
    off = {"includeClusterResources": False}
    assert not ClusterScope.of(off).direct(every, "", "namespaces", "Namespace")
    assert not ClusterScope.of(off).related(every, "apiextensions.k8s.io", "customresourcedefinitions",
                                            "CustomResourceDefinition")
    scoped = ClusterScope.of({"excludedClusterScopedResources": ["clusterroles"]})
    assert not scoped.direct(every, *role) and scoped.direct(every, "", "namespaces", "Namespace")
    assert ClusterScope.of({}).restores() and not ClusterScope.of({"includedNamespaces": ["a"]}).restores()
    assert not ClusterScope.of(off).restores()


def test_snapshot_contents_lists_cluster_items(tmp_path: Path) -> None:
    nodes = [{"type": "file", "path": NS_FILE}, {"type": "file", "path": ROLE_FILE},
             {"type": "file", "path": "/resources/configmaps/namespaces/shop/cfg.json"}]
    resources, _ = snapshot_contents("abcdef0123", nodes)
    assert {"namespace": "", "resource": "namespaces", "name": "shop", "snapshot": "abcdef01"} in resources
    assert {(r["namespace"], r["resource"], r["name"]) for r in resources} == {
        ("", "namespaces", "shop"), ("", "clusterroles.rbac.authorization.k8s.io", "shop-reader"),
        ("shop", "configmaps", "cfg")}
