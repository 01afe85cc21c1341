"""The Python ``kubernetes`` client listing, creating, scaling and watching against pitwall.

The client runs in its own process, as a user's script would (and so its
connection pool never outlives it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.kube.conftest import KubeServer

pytest.importorskip("kubernetes")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

SCRIPT = textwrap.dedent('''
    import json, sys, threading
    from kubernetes import client, config, watch

    config.load_kube_config(sys.argv[1])
    cfg = client.Configuration.get_default_copy()
    cfg.verify_ssl = True
    cfg.ssl_ca_cert = sys.argv[2]
    api = client.ApiClient(cfg)
    v1, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    out = {"namespaces": sorted(n.metadata.name for n in v1.list_namespace().items)}
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-cm", labels={"src": "py"}), data={"a": "1"})
    out["uid"] = bool(v1.create_namespaced_config_map("default", cm).metadata.uid)
    listed = v1.list_namespaced_config_map("default", label_selector="src=py")
    out["listed"] = [c.metadata.name for c in listed.items]
    timer = threading.Timer(0.3, lambda: v1.patch_namespaced_config_map("py-cm", "default", {"data": {"a": "2"}}))
    timer.start()
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_config_map, "default", label_selector="src=py",
                       resource_version=listed.metadata.resource_version, timeout_seconds=10):
        out["event"] = [ev["type"], ev["object"].data]
        break
    timer.join()
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "py-dep"},
           "spec": {"selector": {"matchLabels": {"app": "py"}},
                    "template": {"metadata": {"labels": {"app": "py"}},
                                 "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    apps.create_namespaced_deployment("default", dep)
    scale = apps.read_namespaced_deployment_scale("py-dep", "default")
    out["scale"] = [scale.spec.replicas, scale.status.selector]
    apps.patch_namespaced_deployment_scale("py-dep", "default", {"spec": {"replicas": 3}})
    out["replicas"] = apps.read_namespaced_deployment("py-dep", "default").spec.replicas
    try:
        v1.read_namespaced_config_map("nope", "default")
    except client.ApiException as e:
        out["missing"] = [e.status, json.loads(e.body)["reason"]]
    stale = v1.read_namespaced_config_map("py-cm", "default")
    v1.patch_namespaced_config_map("py-cm", "default", {"data": {"a": "3"}})
    stale.data = {"a": "stale"}
    try:
        v1.replace_namespaced_config_map("py-cm", "default", stale)
    except client.ApiException as e:
        out["stale"] = [e.status, json.loads(e.body)["reason"]]
    print(json.dumps(out))
''')


def test_list_create_watch_scale(kube_server: KubeServer) -> None:
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(kube_server.kubeconfig),
                        str(kube_server.kubeconfig.parent / "tls.crt")], capture_output=True, text=True, timeout=50)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= set(out["namespaces"])
    assert out["uid"] is True and out["listed"] == ["py-cm"]
    assert out["event"] == ["MODIFIED", {"a": "2"}]
    assert out["scale"] == [1, "app=py"] and out["replicas"] == 3
    assert out["missing"] == [404, "NotFound"]
    assert out["stale"] == [409, "Conflict"]
