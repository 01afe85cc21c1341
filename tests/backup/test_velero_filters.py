"""Velero's newer resource filters, ``orLabelSelectors``, ``orderedResources`` and restore order, through
kubectl on a live pitwall, each asserted on what the real restic lists in the snapshots pitwall wrote.

Two namespaces (``fa``, ``fb``) hold ConfigMaps (labelled by tier) and Secrets. The namespace-scoped filters
take or leave resources (globs too), ``orLabelSelectors`` backs up the union of its selectors, a Backup mixing
old and new filter styles (or both selector styles) is ``FailedValidation`` with Velero's message and writes
nothing, ``orderedResources`` puts the named items first in the snapshot's item list, a Schedule's template
carries the filters, and a restore of both namespaces creates every Secret before any ConfigMap (Velero's one
priority order across namespaces, not namespace by namespace).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from pitwall.backup.velero import (
    BOTH_SELECTORS,
    OLD_AND_NEW_FILTERS,
    ClusterScope,
    Selection,
    restore_order,
    sort_by_order,
    validate_backup,
)
from tests.backup.test_velero import Cluster, _backup, _done, live_server, velero_cluster

pytestmark = pytest.mark.timeout(300)

TIERS = {"c1": "web", "c2": "db", "c3": "cache"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("velero-filters")
    with live_server(root) as srv:
        c = velero_cluster(srv, root)
        for ns in ("fa", "fb"):
            c.kubectl("create", "namespace", ns)
            for name, tier in TIERS.items():
                c.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                    "name": name, "namespace": ns, "labels": {"tier": tier}}, "data": {"v": f"{ns}-{name}"}})
            c.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1", "namespace": ns},
                     "stringData": {"pw": ns}})
        yield c


def _snaps(b: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = json.loads(b["metadata"]["annotations"]["backup.pitwall.dev/snapshots"])
    return out


def _files(c: Cluster, repo: str, snap: str) -> set[str]:
    nodes = [json.loads(line) for line in c.restic(repo, "ls", "--json", snap).splitlines() if line.strip()]
    return {n["path"] for n in nodes if n.get("type") == "file" and n["path"].startswith("/resources/")}


def _run(c: Cluster, name: str, **spec: Any) -> dict[str, Any]:
    c.apply(_backup(name, **spec))
    return c.wait("backup.velero.io", name, _done)


def _completed(c: Cluster, name: str, **spec: Any) -> dict[str, Any]:
    b = _run(c, name, **spec)
    assert b["status"]["phase"] == "Completed", b["status"]
    return b


def _tagged(c: Cluster, repo: str, backup: str) -> list[Any]:
    snaps: list[Any] = json.loads(c.restic(repo, "snapshots", "--json", "--tag", f"velero.io/backup={backup}"))
    return snaps


@pytest.mark.slow
def test_namespace_scoped_filters(cluster: Cluster) -> None:
    c = cluster
    only = _completed(c, "ns-only-cm", includedNamespaces=["fa"], includedNamespaceScopedResources=["configmaps"])
    snaps = _snaps(only)
    assert set(snaps) == {"fa", "_cluster"}
    files = _files(c, "fa", snaps["fa"])
    assert {f"/resources/configmaps/namespaces/fa/{n}.json" for n in TIERS} <= files
    assert not any(f.startswith("/resources/secrets/") for f in files)
    # not a full-cluster backup and no cluster-scoped resource named: the Namespace object alone
    assert _files(c, "_cluster", snaps["_cluster"]) == {"/resources/namespaces/cluster/fa.json"}

    # excluded wins; everything else is taken (by glob too)
    excl = _completed(c, "ns-no-secrets", includedNamespaces=["fa"], excludedNamespaceScopedResources=["secrets"])
    files = _files(c, "fa", _snaps(excl)["fa"])
    assert "/resources/configmaps/namespaces/fa/c1.json" in files
    assert not any(f.startswith("/resources/secrets/") for f in files)
    glob = _completed(c, "ns-glob", includedNamespaces=["fa"], includedNamespaceScopedResources=["sec*"])
    files = _files(c, "fa", _snaps(glob)["fa"])
    assert "/resources/secrets/namespaces/fa/s1.json" in files
    assert not any(f.startswith("/resources/configmaps/") for f in files)

    # with the cluster-scoped pair: both applied together
    both = _completed(c, "ns-both", includedNamespaces=["fa"], includedNamespaceScopedResources=["secrets"],
                      includedClusterScopedResources=["namespaces"])
    assert _files(c, "fa", _snaps(both)["fa"]) == {"/resources/secrets/namespaces/fa/s1.json"}


@pytest.mark.slow
def test_old_and_new_filters_together_fail_validation(cluster: Cluster) -> None:
    c = cluster
    bad = _run(c, "mixed", includedNamespaces=["fa"], includedResources=["configmaps"],
               excludedNamespaceScopedResources=["secrets"])
    assert bad["status"]["phase"] == "FailedValidation"
    assert bad["status"]["validationErrors"] == [OLD_AND_NEW_FILTERS]
    assert "snapshots" not in json.dumps(bad["metadata"].get("annotations") or {})
    assert _tagged(c, "fa", "mixed") == []  # nothing written
    star = _run(c, "bad-star", includedNamespaceScopedResources=["*", "configmaps"])
    assert star["status"]["phase"] == "FailedValidation"
    assert star["status"]["validationErrors"] == [
        "Invalid namespace-scoped included/excluded resource lists: includes list must either contain '*' only, "
        "or a non-empty list of items"]


@pytest.mark.slow
def test_or_label_selectors(cluster: Cluster) -> None:
    c = cluster
    ors = [{"matchLabels": {"tier": "web"}}, {"matchExpressions": [{"key": "tier", "operator": "In",
                                                                    "values": ["db"]}]}]
    b = _completed(c, "or-sel", includedNamespaces=["fa", "fb"], orLabelSelectors=ors)
    snaps = _snaps(b)
    for ns in ("fa", "fb"):
        files = _files(c, ns, snaps[ns])
        assert {f"/resources/configmaps/namespaces/{ns}/c1.json", f"/resources/configmaps/namespaces/{ns}/c2.json"} \
            <= files
        assert f"/resources/configmaps/namespaces/{ns}/c3.json" not in files
        assert not any(f.startswith("/resources/secrets/") for f in files)  # unlabelled: no selector takes it
    assert b["status"]["progress"]["itemsBackedUp"] == b["status"]["progress"]["totalItems"]

    both = _run(c, "both-sel", includedNamespaces=["fa"], orLabelSelectors=ors,
                labelSelector={"matchLabels": {"tier": "web"}})
    assert both["status"]["phase"] == "FailedValidation"
    assert both["status"]["validationErrors"] == [BOTH_SELECTORS]
    assert _tagged(c, "fa", "both-sel") == []


@pytest.mark.slow
def test_ordered_resources(cluster: Cluster) -> None:
    c = cluster
    b = _completed(c, "ordered", includedNamespaces=["fa"], includedNamespaceScopedResources=["configmaps"],
                   orderedResources={"configmaps": "fa/c3,fa/missing,fa/c1"})
    results = json.loads(c.restic("fa", "dump", _snaps(b)["fa"], "/pitwall-results.json"))
    named = [i.rsplit("/", 1)[1] for i in results["items"] if i.startswith("resources/configmaps/")]
    assert named[:2] == ["c3.json", "c1.json"]  # the named ones first, in that order
    present = c.kubectl("get", "configmaps", "-n", "fa", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert sorted(named) == sorted(f"{n}.json" for n in present)  # and every other one after them


@pytest.mark.slow
def test_schedule_template_carries_the_filters(cluster: Cluster) -> None:
    c = cluster
    c.apply({"apiVersion": "velero.io/v1", "kind": "Schedule", "metadata": {"name": "secrets-only", "namespace": "velero"},
             "spec": {"schedule": "0 3 * * *", "template": {"storageLocation": "local", "includedNamespaces": ["fb"],
                                                            "includedNamespaceScopedResources": ["secrets"]}}})
    c.wait("schedule.velero.io", "secrets-only", lambda o: bool((o.get("status") or {}).get("lastBackup")))
    names = c.kubectl("get", "backup.velero.io", "-n", "velero", "-l", "velero.io/schedule-name=secrets-only", "-o",
                      "jsonpath={.items[*].metadata.name}").stdout.split()
    assert len(names) == 1
    b = c.wait("backup.velero.io", names[0], _done)
    assert b["status"]["phase"] == "Completed", b["status"]
    assert b["spec"]["includedNamespaceScopedResources"] == ["secrets"]
    assert _files(c, "fb", _snaps(b)["fb"]) == {"/resources/secrets/namespaces/fb/s1.json"}


@pytest.mark.slow
def test_restore_follows_one_priority_order_across_namespaces(cluster: Cluster) -> None:
    c = cluster
    _completed(c, "two-ns", includedNamespaces=["fa", "fb"], includedNamespaceScopedResources=["configmaps",
                                                                                               "secrets"])
    for ns in ("fa", "fb"):
        c.kubectl("delete", "configmap", "c1", "c2", "c3", "-n", ns)
        c.kubectl("delete", "secret", "s1", "-n", ns)
    c.apply({"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "two", "namespace": "velero"},
             "spec": {"backupName": "two-ns"}})
    r = c.wait("restore.velero.io", "two", _done)
    assert r["status"]["phase"] == "Completed", r["status"]

    def rv(kind: str, name: str, ns: str) -> int:
        obj = c.get(kind, name, ns)
        assert obj["metadata"]["labels"]["velero.io/restore-name"] == "two"
        return int(obj["metadata"]["resourceVersion"])

    secrets = [rv("secret", "s1", ns) for ns in ("fa", "fb")]
    configmaps = [rv("configmap", n, ns) for ns in ("fa", "fb") for n in TIERS]
    # Velero: secrets before configmaps, each across every namespace (namespace by namespace would put fa's
    # configmaps before fb's secret)
    assert max(secrets) < min(configmaps), (secrets, configmaps)
    assert c.get("configmap", "c3", "fb")["data"] == {"v": "fb-c3"}


def test_validation_messages() -> None:
    assert validate_backup({"includedResources": ["pods"], "includedClusterScopedResources": ["nodes"]}) == [
        OLD_AND_NEW_FILTERS]
    assert validate_backup({"includeClusterResources": False, "excludedNamespaceScopedResources": ["pods"]}) == [
        OLD_AND_NEW_FILTERS]
    assert validate_backup({"includedNamespaceScopedResources": ["pods"]}) == []
    assert validate_backup({"orLabelSelectors": [{"matchLabels": {"a": "b"}}], "labelSelector": {}}) == [
        BOTH_SELECTORS]
    assert validate_backup({"excludedNamespaceScopedResources": ["*"], "includedNamespaceScopedResources": ["x"]}) \
        == ["Invalid namespace-scoped included/excluded resource lists: when exclude is '*', include cannot have value"]
    assert validate_backup({"excludedResources": ["*"]}) == [
        "Invalid included/excluded resource lists: excludes list cannot contain '*'"]
    assert validate_backup({"includedClusterScopedResources": ["nodes"], "excludedClusterScopedResources": ["nodes"]}) \
        == ["Invalid cluster-scoped included/excluded resource lists: excludes list cannot contain an item in the "
            "includes list: nodes"]
    assert validate_backup({"includedNamespaces": ["a"], "excludedNamespaces": ["a"]}) == [
        "Invalid included/excluded namespace lists: excludes list cannot contain an item in the includes list: a"]


def test_scoped_selection_rules() -> None:
    cm = ("", "configmaps", "ConfigMap", ("cm",))
    assert Selection.of({"includedNamespaceScopedResources": ["cm"]}).namespaced(*cm)  # short names resolve
    assert not Selection.of({"includedNamespaceScopedResources": ["secrets"]}).namespaced(*cm)
    assert not Selection.of({"excludedNamespaceScopedResources": ["*"]}).namespaced(*cm)
    assert Selection.of({"excludedNamespaceScopedResources": ["secrets"]}).namespaced(*cm)
    assert Selection.of({"includedNamespaceScopedResources": ["deployments.apps"]}).namespaced(
        "apps", "deployments", "Deployment")
    role = ("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", ())
    # a full-cluster backup takes every cluster-scoped resource unless the namespaced filter narrows it
    every = {"excludedNamespaceScopedResources": []}
    assert ClusterScope.of(every).direct(Selection.of(every), *role)
    narrowed = {"includedNamespaceScopedResources": ["configmaps"]}
    assert not ClusterScope.of(narrowed).direct(Selection.of(narrowed), *role)
    assert ClusterScope.of(narrowed).direct(Selection.of(narrowed), "", "namespaces", "Namespace")
    star = {"includedNamespaceScopedResources": ["*"]}
    assert ClusterScope.of(star).direct(Selection.of(star), *role)


def test_ordering_helpers() -> None:
    items = [{"metadata": {"name": n, "namespace": "a"}} for n in ("x", "y", "z")]
    got = sort_by_order(items, ["a/z", "a/nope", "a/x"])
    assert [o["metadata"]["name"] for o in got] == ["z", "x", "y"]
    assert restore_order(["zeta.example.com", "configmaps", "secrets", "pods", "namespaces",
                          "clusters.cluster.x-k8s.io", "customresourcedefinitions.apiextensions.k8s.io",
                          "roles.rbac.authorization.k8s.io", "deployments.apps"]) == [
        "customresourcedefinitions.apiextensions.k8s.io", "namespaces", "roles.rbac.authorization.k8s.io",
        "secrets", "configmaps", "pods", "deployments.apps", "zeta.example.com", "clusters.cluster.x-k8s.io"]
