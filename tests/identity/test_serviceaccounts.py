"""ServiceAccount tokens: the TokenRequest API (``kubectl create token``), JWTs accepted by the Kubernetes
API and decided by RBAC, and the node mounting a token into each pod, which the pod uses to call the API."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from tests.identity.conftest import Pitwall

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ADMIN = "admin-token-00000000"
POD_SCRIPT = """
import os, httpx
d = os.environ["PITWALL_MOUNT_KUBE_API_ACCESS"]
token = open(os.path.join(d, "token")).read()
ns = open(os.path.join(d, "namespace")).read()
mounted = os.path.exists(os.path.join(os.environ["PITWALL_POD_ROOT"], "var/run/secrets/kubernetes.io/serviceaccount/token"))
r = httpx.get(os.environ["API"] + f"/api/v1/namespaces/{ns}/pods", headers={"Authorization": "Bearer " + token}, verify=False)
print("mounted", mounted, "status", r.status_code, flush=True)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pitwall]:
    p = Pitwall(tmp_path_factory.mktemp("sa"), {"auth_tokens": [{"token": ADMIN, "name": "operator",
                                                                   "scopes": ["admin"]}]})
    try:
        admin = p.kubectl_as(ADMIN, "operator")
        for sa in ("robot", "nobody"):
            assert admin("create", "serviceaccount", sa).returncode == 0
        r = admin("create", "rolebinding", "robot-views", "--clusterrole=view", "--serviceaccount=default:robot")
        assert r.returncode == 0, r.stderr
        yield p
    finally:
        p.stop()


def test_token_request_and_rbac(server: Pitwall) -> None:
    admin = server.kubectl_as(ADMIN, "operator")
    r = admin("create", "token", "robot", "--duration=15m")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:default:robot"
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "robot"
    assert 890 <= claims["exp"] - claims["iat"] <= 910
    robot = server.kubectl_as(token, "robot")
    who = json.loads(robot("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert who["username"] == "system:serviceaccount:default:robot"
    assert {"system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"} <= set(who["groups"])
    assert robot("auth", "can-i", "list", "pods").stdout.strip() == "yes"
    assert robot("auth", "can-i", "delete", "pods").stdout.strip() == "no"
    r = robot("get", "pods", "-n", "kube-system")
    assert ('pods is forbidden: User "system:serviceaccount:default:robot" cannot list resource "pods" in API group '
            '"" in the namespace "kube-system"') in r.stderr
    # pitwall's other APIs: no pitwall role for it
    r2 = httpx.get(server.url + "/api/v1/query", params={"query": "1"}, verify=False,
                   headers={"Authorization": f"Bearer {token}"})
    assert r2.status_code == 403
    # too short a token, as kube-apiserver refuses
    r = admin("create", "token", "robot", "--duration=1m")
    assert r.returncode != 0 and "expirationSeconds" in r.stderr


def test_deleting_the_serviceaccount_revokes_its_tokens(server: Pitwall) -> None:
    admin = server.kubectl_as(ADMIN, "operator")
    assert admin("create", "serviceaccount", "temp").returncode == 0
    token = admin("create", "token", "temp").stdout.strip()
    h = {"Authorization": f"Bearer {token}"}
    sar = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    url = server.url + "/apis/authentication.k8s.io/v1/selfsubjectreviews"
    assert httpx.post(url, json=sar, headers=h, verify=False).status_code == 201
    assert admin("delete", "serviceaccount", "temp").returncode == 0
    r = httpx.post(url, json=sar, headers=h, verify=False)
    assert r.status_code == 401 and "no longer exists" in r.text
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert httpx.post(url, json=sar, headers={"Authorization": f"Bearer {forged}"}, verify=False).status_code == 401


def _pod(name: str, sa: str, api: str) -> dict:  # type: ignore[type-arg]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"serviceAccountName": sa, "restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "python", "command": [sys.executable, "-c", POD_SCRIPT],
                                     "env": [{"name": "API", "value": api}]}]}}


def _logs(admin: object, name: str) -> str:
    for _ in range(300):
        r = admin("logs", name)  # type: ignore[operator]
        if "status" in r.stdout:
            return str(r.stdout)
        time.sleep(0.2)
    raise AssertionError(f"pod {name} printed nothing: {admin('describe', 'pod', name).stdout}")  # type: ignore[operator]


def test_pods_get_a_token_for_their_serviceaccount(server: Pitwall) -> None:
    admin = server.kubectl_as(ADMIN, "operator")
    for name, sa in (("uses-robot", "robot"), ("uses-nobody", "nobody")):
        r = admin("apply", "-f", "-", stdin=json.dumps(_pod(name, sa, server.url)))
        assert r.returncode == 0, r.stderr
    assert _logs(admin, "uses-robot").split() == ["mounted", "True", "status", "200"]
    assert _logs(admin, "uses-nobody").split() == ["mounted", "True", "status", "403"]
