"""kubectl against the Kubernetes API stored in a real etcd (Debian's etcd-server), not SQLite."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.conftest import KubeServer
from tests.storage.revstore.conftest import start_etcd

pytestmark = [pytest.mark.slow, pytest.mark.peer, pytest.mark.timeout(120)]
WEB = str(Path(__file__).parent / "data" / "web.yaml")


@pytest.fixture(scope="module")
def etcd_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeServer]:
    etcd = start_etcd(tmp_path_factory.mktemp("etcd") / "data")
    try:
        s = KubeServer(tmp_path_factory.mktemp("kube-etcd"), etcd_url=etcd.url)
        s.start()
        try:
            yield s
        finally:
            s.stop()
    finally:
        etcd.stop()


def test_kubectl_smoke_on_etcd(etcd_kube: KubeServer) -> None:
    k = etcd_kube.kubectl
    assert "deployment.apps/web created" in k("apply", "-f", WEB).stdout
    assert "deployment.apps/web unchanged" in k("apply", "-f", WEB).stdout
    k("scale", "deploy", "web", "--replicas=3")
    k("patch", "deploy", "web", "--type=merge", "-p", '{"metadata":{"labels":{"on":"etcd"}}}')
    dep = json.loads(k("get", "deploy", "web", "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 3 and dep["metadata"]["labels"]["on"] == "etcd"
    assert dep["metadata"]["generation"] == 2
    stale = dict(dep, metadata={**dep["metadata"], "resourceVersion": "1"})
    conflict = k("replace", "-f", "-", input=json.dumps(stale), check=False)
    assert conflict.returncode != 0 and "the object has been modified" in conflict.stderr
    uid = dep["metadata"]["uid"]
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "web-1", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                              "name": "web", "uid": uid}]},
          "spec": {"selector": {"matchLabels": {"app": "web"}},
                   "template": {"metadata": {"labels": {"app": "web"}},
                                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}
    k("apply", "-f", "-", input=json.dumps(rs))
    k("delete", "deploy", "web")
    for _ in range(100):
        if not k("get", "rs", "-o", "name").stdout.strip():
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the ReplicaSet was not collected")
    assert k("get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}").stdout.startswith("127.96.")
