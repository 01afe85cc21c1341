"""Kubernetes RBAC on pitwall's Kubernetes API, through kubectl: Roles, ClusterRoles (aggregated too),
RoleBindings and ClusterRoleBindings decide requests and ``kubectl auth can-i`` as kube-apiserver does."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from pitwall.kube.rbac import Attributes, request_info, resource_rule_allows
from tests.identity.conftest import Pitwall

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ADMIN, ALICE, BOB, VIEWER = "admin-token-00000000", "alice-token-00000000", "bob-token-0000000000", "view-token-000000000"
TOKENS = [
    {"token": ADMIN, "name": "operator", "scopes": ["admin"]},
    {"token": ALICE, "name": "alice", "scopes": []},
    {"token": BOB, "name": "bob", "scopes": []},
    {"token": VIEWER, "name": "grafana", "scopes": ["read"]},
]
POLICY = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
     "metadata": {"name": "pod-reader", "namespace": "default"},
     "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
               {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["one"], "verbs": ["get"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "alice-reads-pods", "namespace": "default"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "deploy-lister"},
     "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate-to-lister": "true"}}]},
     "rules": []},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "deploy-lister-piece", "labels": {"example.com/aggregate-to-lister": "true"}},
     "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]},
               {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["get"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "bob-lists-deployments"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "deploy-lister"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pitwall]:
    p = Pitwall(tmp_path_factory.mktemp("rbac"), {"auth_tokens": TOKENS})
    try:
        admin = p.kubectl_as(ADMIN, "operator")
        for obj in POLICY:
            r = admin("apply", "-f", "-", stdin=json.dumps(obj))
            assert r.returncode == 0, r.stderr
        for name in ("one", "two"):
            r = admin("create", "configmap", name, "--from-literal=k=v")
            assert r.returncode == 0, r.stderr
        yield p
    finally:
        p.stop()


def _can(kubectl: object, *args: str) -> str:
    r = kubectl("auth", "can-i", *args)  # type: ignore[operator]
    assert r.returncode in (0, 1), r.stderr
    return str(r.stdout.strip())


def test_rolebinding_allows_what_the_role_says(server: Pitwall) -> None:
    alice = server.kubectl_as(ALICE, "alice")
    assert _can(alice, "list", "pods") == "yes"
    assert _can(alice, "get", "pods", "--subresource=log") == "yes"
    assert _can(alice, "list", "pods", "-n", "kube-system") == "no"
    assert _can(alice, "create", "pods") == "no"
    assert _can(alice, "get", "configmap/one") == "yes"
    assert _can(alice, "get", "configmap/two") == "no"
    assert alice("get", "pods").returncode == 0
    assert alice("get", "configmap", "one").returncode == 0


def test_refusals_are_kube_apiservers(server: Pitwall) -> None:
    alice = server.kubectl_as(ALICE, "alice")
    r = alice("get", "pods", "-n", "kube-system")
    assert r.returncode == 1
    assert r.stderr.strip() == ('Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource '
                                '"pods" in API group "" in the namespace "kube-system"')
    r = alice("get", "configmap", "two")
    assert r.stderr.strip() == ('Error from server (Forbidden): configmaps "two" is forbidden: User "alice" cannot get '
                                'resource "configmaps" in API group "" in the namespace "default"')
    r = alice("get", "deployments")
    assert 'deployments.apps is forbidden: User "alice" cannot list resource "deployments" in API group "apps"' \
        in r.stderr


def test_aggregated_clusterrole_and_clusterrolebinding(server: Pitwall) -> None:
    bob = server.kubectl_as(BOB, "bob")
    assert _can(bob, "list", "deployments.apps") == "yes"
    assert _can(bob, "list", "deployments.apps", "-n", "kube-system") == "yes"  # a cluster binding: every namespace
    assert _can(bob, "get", "deployments.apps", "--subresource=scale") == "yes"  # "*/scale"
    assert _can(bob, "delete", "deployments.apps") == "no"
    assert _can(bob, "list", "pods") == "no"
    assert _can(bob, "get", "/healthz") == "yes"  # system:public-info-viewer, for every authenticated user
    assert _can(bob, "get", "/custom") == "no"
    listed = bob("auth", "can-i", "--list")
    assert listed.returncode == 0 and "deployments.apps" in listed.stdout and "selfsubjectaccessreviews" in listed.stdout


def test_pitwall_roles_stay_in_force(server: Pitwall) -> None:
    admin = server.kubectl_as(ADMIN, "operator")
    assert _can(admin, "*", "*") == "yes"
    who = admin("auth", "whoami", "-o", "json")
    assert who.returncode == 0 and "system:masters" in json.loads(who.stdout)["status"]["userInfo"]["groups"]
    viewer = server.kubectl_as(VIEWER, "grafana")
    assert _can(viewer, "list", "secrets", "-n", "kube-system") == "yes"
    assert _can(viewer, "create", "configmaps") == "no"
    r = viewer("create", "configmap", "x")
    assert 'configmaps is forbidden: User "grafana" cannot create resource "configmaps"' in r.stderr


def test_a_new_binding_takes_effect_at_once(server: Pitwall) -> None:
    admin, bob = server.kubectl_as(ADMIN, "operator"), server.kubectl_as(BOB, "bob")
    assert _can(bob, "create", "configmaps", "-n", "kube-public") == "no"
    r = admin("create", "rolebinding", "bob-edits", "--clusterrole=edit", "--user=bob", "-n", "kube-public")
    assert r.returncode == 0, r.stderr
    assert _can(bob, "create", "configmaps", "-n", "kube-public") == "yes"
    assert bob("create", "configmap", "made-by-bob", "-n", "kube-public").returncode == 0
    r = admin("delete", "rolebinding", "bob-edits", "-n", "kube-public")
    assert r.returncode == 0
    assert _can(bob, "create", "configmaps", "-n", "kube-public") == "no"
    # kubectl's generators send Roles and bindings as protobuf
    r = admin("create", "role", "cm-maker", "--verb=create", "--resource=configmaps", "-n", "kube-node-lease")
    assert r.returncode == 0, r.stderr
    r = admin("create", "rolebinding", "bob-makes", "--role=cm-maker", "--user=bob", "-n", "kube-node-lease")
    assert r.returncode == 0, r.stderr
    assert _can(bob, "create", "configmaps", "-n", "kube-node-lease") == "yes"
    assert _can(bob, "delete", "configmaps", "-n", "kube-node-lease") == "no"
    r = admin("patch", "rolebinding", "bob-makes", "-n", "kube-node-lease", "--type=merge",
              "-p", '{"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"}}')
    assert r.returncode == 1 and "cannot change roleRef" in r.stderr


# ---------------------------------------------------------------- the attributes, as RequestInfoFactory


@pytest.mark.parametrize(("method", "path", "query", "want"), [
    ("GET", "/api/v1/namespaces/default/pods", {}, ("list", "", "default", "pods", "", "")),
    ("GET", "/api/v1/namespaces/default/pods", {"watch": "true"}, ("watch", "", "default", "pods", "", "")),
    ("GET", "/api/v1/namespaces/default/pods/web/log", {}, ("get", "", "default", "pods", "log", "web")),
    ("DELETE", "/apis/apps/v1/namespaces/a/deployments", {}, ("deletecollection", "apps", "a", "deployments", "", "")),
    ("PATCH", "/apis/apps/v1/namespaces/a/deployments/d/scale", {}, ("patch", "apps", "a", "deployments", "scale", "d")),
    ("GET", "/api/v1/namespaces/team", {}, ("get", "", "team", "namespaces", "", "team")),
    ("PUT", "/api/v1/namespaces/team/finalize", {}, ("update", "", "team", "namespaces", "finalize", "team")),
    ("GET", "/api/v1/nodes", {}, ("list", "", "", "nodes", "", "")),
    ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {},
     ("create", "authorization.k8s.io", "", "selfsubjectaccessreviews", "", "")),
])
def test_request_info(method: str, path: str, query: dict[str, str], want: tuple[str, ...]) -> None:
    a = request_info(method, path, query)
    assert a.resource_request
    assert (a.verb, a.api_group, a.namespace, a.resource, a.subresource, a.name) == want


def test_discovery_is_non_resource() -> None:
    for path in ("/api", "/api/v1", "/apis", "/apis/apps/v1", "/openapi/v2", "/version"):
        a = request_info("GET", path, {})
        assert not a.resource_request and a.verb == "get" and a.path == path


def test_resource_rule_matching() -> None:
    a = Attributes("get", True, "", "apps", "v1", "x", "deployments", "scale", "d")
    assert resource_rule_allows({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments/scale"]}, a)
    assert resource_rule_allows({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/scale"]}, a)
    assert not resource_rule_allows({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"]}, a)
    assert not resource_rule_allows({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}, a)
    assert not resource_rule_allows({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "resourceNames": ["e"]}, a)
    b = Attributes("list", True, "", "", "v1", "x", "pods")
    assert not resource_rule_allows({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"],
                                     "resourceNames": ["p"]}, b)  # names never match a collection


def test_no_escalation_through_roles_and_bindings(server: Pitwall) -> None:
    """A user who may write Roles and RoleBindings grants only what it holds, unless it may escalate or bind."""
    admin, bob = server.kubectl_as(ADMIN, "operator"), server.kubectl_as(BOB, "bob")
    binder = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
              "metadata": {"name": "binder", "namespace": "default"},
              "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
                         "verbs": ["create", "get", "list"]},
                        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}
    assert admin("apply", "-f", "-", stdin=json.dumps(binder)).returncode == 0
    assert admin("create", "rolebinding", "bob-binds", "--role=binder", "--user=bob").returncode == 0
    r = bob("create", "rolebinding", "grab", "--clusterrole=cluster-admin", "--user=bob")
    assert r.returncode == 1
    assert ('rolebindings.rbac.authorization.k8s.io "grab" is forbidden: user "bob" (groups=["system:authenticated"]) '
            "is attempting to grant RBAC permissions not currently held") in r.stderr
    r = bob("create", "role", "wider", "--verb=delete", "--resource=pods")
    assert r.returncode == 1 and "not currently held" in r.stderr and 'Verbs:["delete"]' in r.stderr
    assert bob("create", "role", "narrow", "--verb=get", "--resource=pods").returncode == 0
    assert bob("create", "rolebinding", "carol-narrow", "--role=narrow", "--user=carol").returncode == 0
    assert bob("create", "rolebinding", "carol-edit", "--clusterrole=edit", "--user=carol").returncode == 1
    binder["rules"].append({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                            "resourceNames": ["edit"], "verbs": ["bind"]})
    assert admin("apply", "-f", "-", stdin=json.dumps(binder)).returncode == 0
    r = bob("create", "rolebinding", "carol-edit", "--clusterrole=edit", "--user=carol")
    assert r.returncode == 0, r.stderr  # bind on that ClusterRole
