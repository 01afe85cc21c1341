"""The real kubectl (v1.32) against a live pitwall Kubernetes API over the SQLite RevStore."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import SHARED
from tests.kube.conftest import KubeServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

DATA = Path(__file__).parent / "data"
WEB = str(DATA / "web.yaml")
WAVE2 = SHARED / "conformance" / "wave2"
needs_wave2 = pytest.mark.skipif(not WAVE2.is_dir(), reason="../shared/conformance/wave2 is not beside the repo")


def _json(p: subprocess.CompletedProcess[str]) -> dict:  # type: ignore[type-arg]
    out: dict = json.loads(p.stdout)  # type: ignore[type-arg]
    return out


def test_apply_get_describe(kube_server: KubeServer) -> None:
    k = kube_server.kubectl
    out = k("apply", "-f", WEB).stdout
    assert "configmap/web-config created" in out
    assert "deployment.apps/web created" in out
    assert "service/web created" in out

    table = k("get", "deployments").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:4] == ["web", "0/2", "0", "0"]
    wide = k("get", "deploy", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1].split()[-3:] == ["web", "nginx:1.27", "app=web"]
    svc = k("get", "svc", "web").stdout.splitlines()
    assert svc[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert svc[1].split()[1] == "ClusterIP" and svc[1].split()[4] == "80/TCP"
    assert k("get", "cm", "web-config").stdout.splitlines()[0].split() == ["NAME", "DATA", "AGE"]

    dep = _json(k("get", "deploy", "web", "-o", "json"))
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate",
                                       "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    assert dep["spec"]["revisionHistoryLimit"] == 10 and dep["spec"]["progressDeadlineSeconds"] == 600
    pod = dep["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Always" and pod["terminationGracePeriodSeconds"] == 30
    assert pod["dnsPolicy"] == "ClusterFirst"
    assert pod["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert pod["containers"][0]["ports"][0]["protocol"] == "TCP"
    assert dep["metadata"]["generation"] == 1 and int(dep["metadata"]["resourceVersion"]) > 0
    assert "kubectl.kubernetes.io/last-applied-configuration" in dep["metadata"]["annotations"]
    as_yaml = yaml.safe_load(k("get", "svc", "web", "-o", "yaml").stdout)
    assert as_yaml["spec"]["sessionAffinity"] == "None" and as_yaml["spec"]["clusterIP"].startswith("127.96.")

    desc = k("describe", "deployment", "web").stdout
    assert "RollingUpdateStrategy:  25% max unavailable, 25% max surge" in desc
    assert "nginx:1.27" in desc

    again = k("apply", "-f", WEB).stdout
    assert "deployment.apps/web unchanged" in again
    assert _json(k("get", "deploy", "web", "-o", "json"))["metadata"]["resourceVersion"] == \
        dep["metadata"]["resourceVersion"]

    changed = Path(kube_server.kubeconfig.parent / "web-changed.yaml")
    changed.write_text(Path(WEB).read_text().replace("replicas: 2", "replicas: 3"))
    assert "deployment.apps/web configured" in k("apply", "-f", str(changed)).stdout
    assert _json(k("get", "deploy", "web", "-o", "json"))["spec"]["replicas"] == 3


def test_label_annotate_scale_patch(kube_server: KubeServer) -> None:
    k = kube_server.kubectl
    k("apply", "-f", WEB)
    assert "labeled" in k("label", "deploy", "web", "tier=front", "--overwrite").stdout
    assert "annotated" in k("annotate", "deploy", "web", "note=hello", "--overwrite").stdout
    assert "scaled" in k("scale", "deploy", "web", "--replicas=4").stdout
    k("patch", "deploy", "web", "-p", '{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"}]}}}}')
    k("patch", "deploy", "web", "--type=merge", "-p", '{"metadata":{"labels":{"merged":"yes"}}}')
    k("patch", "deploy", "web", "--type=json", "-p", '[{"op":"add","path":"/metadata/annotations/json","value":"1"}]')
    dep = _json(k("get", "deploy", "web", "-o", "json"))
    assert dep["metadata"]["labels"] == {"app": "web", "tier": "front", "merged": "yes"}
    assert dep["metadata"]["annotations"]["note"] == "hello" and dep["metadata"]["annotations"]["json"] == "1"
    assert dep["spec"]["replicas"] == 4
    c = dep["spec"]["template"]["spec"]["containers"]
    assert len(c) == 1 and c[0]["image"] == "nginx:1.28" and c[0]["env"][0]["name"] == "GREETING"
    assert k("get", "deploy", "-l", "tier in (front,back)", "-o", "name").stdout.strip() == "deployment.apps/web"
    assert k("get", "deploy", "-l", "tier!=front", "-o", "name").stdout.strip() == ""
    bad = k("patch", "deploy", "web", "--type=json", "-p", '[{"op":"replace","path":"/spec/replicas","value":-1}]',
            check=False)
    assert bad.returncode != 0 and "spec.replicas: Invalid value: -1" in bad.stderr


def test_server_side_apply(kube_server: KubeServer) -> None:
    k = kube_server.kubectl
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1", "b": "2"}}
    out = k("apply", "--server-side", "-f", "-", input=json.dumps(doc)).stdout
    assert "configmap/ssa serverside-applied" in out
    doc["data"] = {"a": "1"}
    k("apply", "--server-side", "-f", "-", input=json.dumps(doc))
    cm = _json(k("get", "cm", "ssa", "-o", "json", "--show-managed-fields"))
    assert cm["data"] == {"a": "1"}  # b was applied before and is no longer: removed
    assert [m["manager"] for m in cm["metadata"]["managedFields"]] == ["kubectl"]
    k("patch", "cm", "ssa", "--type=merge", "-p", '{"data":{"a":"other"}}')
    conflict = k("apply", "--server-side", "-f", "-", input=json.dumps(doc), check=False)
    assert conflict.returncode != 0 and "conflict" in conflict.stderr.lower()
    k("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(doc))
    assert _json(k("get", "cm", "ssa", "-o", "json"))["data"] == {"a": "1"}


def test_watch_sees_update(kube_server: KubeServer) -> None:
    k = kube_server.kubectl
    k("apply", "-f", WEB)
    env_cmd = ["/usr/bin/kubectl", f"--cache-dir={kube_server.cache}", "get", "deploy", "web", "-w",
               "--request-timeout=20s"]
    env = {**os.environ, "KUBECONFIG": str(kube_server.kubeconfig), "HOME": str(kube_server.kubeconfig.parent)}
    with subprocess.Popen(env_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            header = proc.stdout.readline()
            assert header.split()[:2] == ["NAME", "READY"]
            first = proc.stdout.readline()
            assert first.split()[0] == "web"
            k("scale", "deploy", "web", "--replicas=6")
            for _ in range(10):
                line = proc.stdout.readline()
                if line.split()[1:2] == ["0/6"]:
                    break
            else:
                raise AssertionError("watch did not show the update")
        finally:
            proc.kill()


def test_discovery_and_explain(kube_server: KubeServer) -> None:
    k = kube_server.kubectl
    versions = k("api-versions").stdout.split()
    for gv in ("v1", "apps/v1", "batch/v1", "autoscaling/v2", "discovery.k8s.io/v1", "events.k8s.io/v1",
               "apiextensions.k8s.io/v1"):
        assert gv in versions
    res = {line.split()[0]: line.split() for line in k("api-resources").stdout.splitlines()[1:]}
    assert res["deployments"][1:] == ["deploy", "apps/v1", "true", "Deployment"]
    assert res["namespaces"][1:] == ["ns", "v1", "false", "Namespace"]
    assert res["horizontalpodautoscalers"][1:] == ["hpa", "autoscaling/v2", "true", "HorizontalPodAutoscaler"]
    explain = k("explain", "deployment.spec").stdout
    assert "KIND:       Deployment" in explain and "revisionHistoryLimit" in explain
    assert "strategy\t<DeploymentStrategy>" in explain
    version = k("version", "-o", "json").stdout
    assert json.loads(version)["serverVersion"]["minor"] == "32"


def test_errors(kube_server: KubeServer) -> None:
    k = kube_server.kubectl
    nf = k("get", "pod", "nope", check=False)
    assert nf.returncode == 1 and 'pods "nope" not found' in nf.stderr
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "Bad_Name"},
           "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 70000}]}]}}}}
    p = k("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert p.returncode != 0
    assert 'The Deployment "Bad_Name" is invalid' in p.stderr
    assert "metadata.name: Invalid value" in p.stderr
    assert "spec.template.spec.containers[0].image: Required value" in p.stderr
    assert "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 70000" in p.stderr
    unknown = dict(bad, metadata={"name": "good"}, spec={"replicaz": 1})
    p = k("apply", "-f", "-", input=json.dumps(unknown), check=False)
    assert p.returncode != 0 and 'unknown field "spec.replicaz"' in p.stderr
    assert k("get", "nosuchkind", check=False).stderr.strip().endswith(
        'the server doesn\'t have a resource type "nosuchkind"')


def test_delete_cascading(kube_server: KubeServer) -> None:
    k = kube_server.kubectl
    k("apply", "-f", WEB)
    duid = _json(k("get", "deploy", "web", "-o", "json"))["metadata"]["uid"]
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "web-1", "labels": {"app": "web"}, "ownerReferences": [
              {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": duid, "controller": True,
               "blockOwnerDeletion": True}]},
          "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                   "template": {"metadata": {"labels": {"app": "web"}},
                                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}
    k("apply", "-f", "-", input=json.dumps(rs))
    rsuid = _json(k("get", "rs", "web-1", "-o", "json"))["metadata"]["uid"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web-1-a", "labels": {"app": "web"}, "ownerReferences": [
               {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": rsuid, "controller": True}]},
           "spec": {"containers": [{"name": "web", "image": "nginx"}]}}
    k("apply", "-f", "-", input=json.dumps(pod))
    pods = k("get", "pods").stdout.splitlines()
    assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert pods[1].split()[:4] == ["web-1-a", "0/1", "Pending", "0"]
    assert 'deployment.apps "web" deleted' in k("delete", "deployment", "web").stdout
    for _ in range(100):
        left = k("get", "rs,pods", "-o", "name").stdout.split()
        if not left:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"dependents not collected: {left}")


@needs_wave2
def test_crd_round_trip(kube_server: KubeServer) -> None:
    k = kube_server.kubectl
    assert "customresourcedefinition.apiextensions.k8s.io/canaries.flagger.app created" in \
        k("apply", "-f", str(WAVE2 / "flagger/artifacts/flagger/crd.yaml")).stdout
    k("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "test"}}))
    example = WAVE2 / "flagger/artifacts/examples/istio-canary.yaml"
    assert "canary.flagger.app/podinfo created" in k("apply", "-f", str(example)).stdout
    rows = k("get", "canaries", "-n", "test").stdout.splitlines()
    assert rows[0].split() == ["NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME", "AGE"]
    assert rows[1].split()[0] == "podinfo"
    got = yaml.safe_load(k("get", "canary", "podinfo", "-n", "test", "-o", "yaml").stdout)
    assert got["spec"] == yaml.safe_load(example.read_text())["spec"]
    bad = yaml.safe_load(example.read_text())
    bad["metadata"]["name"] = "bad"
    bad["spec"]["analysis"]["threshold"] = "many"
    p = k("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert p.returncode != 0 and "spec.analysis.threshold" in p.stderr
    k("apply", "-f", str(WAVE2 / "chaos-mesh/config/crd/bases/chaos-mesh.org_podchaos.yaml"))
    chaos = WAVE2 / "chaos-mesh/examples/pod-kill-example.yaml"
    k("apply", "-f", str(chaos))
    assert "unchanged" in k("apply", "-f", str(chaos)).stdout
    changed = chaos.read_text().replace("mode: one", "mode: all")
    assert "configured" in k("apply", "-f", "-", input=changed).stdout  # client-side apply: a merge patch for CRs
    assert _json(k("get", "podchaos", "pod-kill-example", "-o", "json"))["spec"]["mode"] == "all"
    assert "pod-kill-example" in k("get", "podchaos", "-A").stdout
    assert "podchaos" in k("api-resources", "--api-group=chaos-mesh.org").stdout
    k("delete", "crd", "canaries.flagger.app")
    gone = k("get", "canaries", "-n", "test", check=False)
    assert gone.returncode != 0


def test_create_generators_send_protobuf(kube_server: KubeServer) -> None:
    """kubectl's typed clients send Kubernetes protobuf bodies; the generators' kinds decode."""
    k = kube_server.kubectl
    assert "namespace/gen created" in k("create", "namespace", "gen").stdout
    k("create", "configmap", "gen-cm", "-n", "gen", "--from-literal=a=1", "--from-literal=b=2")
    k("create", "secret", "generic", "gen-s", "-n", "gen", "--from-literal=pw=x")
    k("create", "deployment", "gen-d", "-n", "gen", "--image=nginx:1.27", "--replicas=2", "--port=8080")
    k("expose", "deployment", "gen-d", "-n", "gen", "--port=80", "--target-port=8080")
    k("run", "gen-p", "-n", "gen", "--image=busybox", "--env=A=1", "--labels=x=y", "--", "sleep", "10")
    k("create", "job", "gen-j", "-n", "gen", "--image=busybox", "--", "echo", "hi")
    k("create", "cronjob", "gen-cj", "-n", "gen", "--image=busybox", "--schedule=*/5 * * * *", "--", "date")
    k("create", "serviceaccount", "gen-sa", "-n", "gen")
    assert _json(k("get", "cm", "gen-cm", "-n", "gen", "-o", "json"))["data"] == {"a": "1", "b": "2"}
    assert _json(k("get", "secret", "gen-s", "-n", "gen", "-o", "json"))["data"] == {"pw": "eA=="}
    dep = _json(k("get", "deploy", "gen-d", "-n", "gen", "-o", "json"))
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["selector"] == {"matchLabels": {"app": "gen-d"}}
    assert dep["spec"]["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    svc = _json(k("get", "svc", "gen-d", "-n", "gen", "-o", "json"))
    assert svc["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 8080}]
    pod = _json(k("get", "pod", "gen-p", "-n", "gen", "-o", "json"))
    assert pod["spec"]["containers"][0]["args"] == ["sleep", "10"] and pod["metadata"]["labels"] == {"x": "y"}
    cj = _json(k("get", "cronjob", "gen-cj", "-n", "gen", "-o", "json"))
    assert cj["spec"]["schedule"] == "*/5 * * * *"
    assert cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"] == ["date"]


def test_nodes_and_leases(kube_server: KubeServer) -> None:
    k = kube_server.kubectl
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "pitwall", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0-pitwall", "osImage": "Debian", "kernelVersion": "6.1",
                                    "containerRuntimeVersion": "pitwall://0.1", "architecture": "amd64",
                                    "bootID": "", "machineID": "", "operatingSystem": "linux", "systemUUID": "",
                                    "kubeProxyVersion": ""}}}
    k("apply", "-f", "-", input=json.dumps(node))  # a node registers with its status
    wide = k("get", "nodes", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    cells = wide[1].split()
    assert cells[:3] == ["pitwall", "Ready", "control-plane"] and cells[4:6] == ["v1.32.0-pitwall", "127.0.0.1"]
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "pitwall", "namespace": "kube-node-lease"},
             "spec": {"holderIdentity": "pitwall", "leaseDurationSeconds": 40}}
    k("apply", "-f", "-", input=json.dumps(lease))
    described = k("describe", "node", "pitwall").stdout
    assert "HolderIdentity:  pitwall" in described and "Failed to get lease" not in described


def _docs(paths: list[Path]) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for p in paths:
        out += [d for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict) and d.get("kind")]
    return out


@needs_wave2
def test_upstream_crds_and_examples_round_trip(kube_server: KubeServer) -> None:
    """Chaos Mesh's and Istio's CRDs, then every Chaos Mesh example and Istio's Bookinfo routing samples."""
    k = kube_server.kubectl
    k("apply", "--server-side", "-f", str(WAVE2 / "chaos-mesh/config/crd/bases"))
    k("apply", "-f", str(WAVE2 / "istio/manifests/charts/base/files/crd-all.gen.yaml"))
    k("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": "istio-system"}}))
    for d in ("db", "storage", "web", "chaos-testing", "busybox", "tidb-cluster"):
        k("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": d}}))
    chaos = sorted((WAVE2 / "chaos-mesh/examples").rglob("*.yaml"))
    bookinfo = sorted((WAVE2 / "istio/samples/bookinfo/networking").glob("*.yaml"))
    for group in (chaos, bookinfo):
        args = [a for p in group for a in ("-f", str(p))]
        k("apply", *args)
    last: dict[tuple[str, str, str], dict] = {}  # type: ignore[type-arg]
    for doc in _docs(chaos + bookinfo):  # a later sample may re-apply an object: the last one wins
        last[(doc["kind"], doc["metadata"].get("namespace", "default"), doc["metadata"]["name"])] = doc
    kinds = sorted({f"{kind.lower()}.{d['apiVersion'].split('/')[0]}" for (kind, _, _), d in last.items()})
    listed = _json(k("get", ",".join(kinds), "-A", "-o", "json"))["items"]
    stored = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o for o in listed}
    assert set(last) <= set(stored)
    for key, doc in last.items():
        assert _subset(doc.get("spec"), stored[key].get("spec")), key  # schema defaults may add fields


def _subset(want: object, got: object) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and all(_subset(v, got.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) and all(_subset(a, b) for a, b in zip(want, got, strict=True))
    return want == got


def test_auth_can_i_and_whoami(kube_server: KubeServer) -> None:
    k = kube_server.kubectl
    assert k("auth", "can-i", "create", "deployments").stdout.strip() == "yes"
    assert "Username    test" in k("auth", "whoami").stdout
    assert "[*]" in k("auth", "can-i", "--list").stdout


class _Metrics:
    async def pod_metrics(self, namespace: str) -> list[dict]:  # type: ignore[type-arg]
        pods = [{"metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
                 "timestamp": "2026-01-01T00:00:00Z", "window": "10s",
                 "containers": [{"name": "web", "usage": {"cpu": "250m", "memory": "64Mi"}}]}]
        return [p for p in pods if not namespace or p["metadata"]["namespace"] == namespace]

    async def node_metrics(self) -> list[dict]:  # type: ignore[type-arg]
        return [{"metadata": {"name": "pitwall"}, "timestamp": "2026-01-01T00:00:00Z", "window": "10s",
                 "usage": {"cpu": "1", "memory": "1Gi"}}]


def test_top_reads_metrics_api(kube_server: KubeServer) -> None:
    kube_server.kube.set_metrics_provider(_Metrics())
    k = kube_server.kubectl
    rows = k("top", "pod").stdout.splitlines()
    assert rows[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"] and rows[1].split() == ["web-1", "250m", "64Mi"]
    assert k("top", "pod", "-l", "app=other", check=False).stderr.strip().startswith("No resources found")
    assert "metrics.k8s.io/v1beta1" in k("api-versions").stdout.split()


def test_autoscale_posts_v1_hpa(kube_server: KubeServer) -> None:
    k = kube_server.kubectl
    k("create", "deployment", "web", "--image=nginx")
    out = k("autoscale", "deployment", "web", "--min=1", "--max=4", "--cpu-percent=50").stdout
    assert "autoscaled" in out
    rows = k("get", "hpa").stdout.splitlines()
    assert rows[1].split()[:6] == ["web", "Deployment/web", "cpu:", "<unknown>/50%", "1", "4"]
    v2 = json.loads(k("get", "horizontalpodautoscalers.v2.autoscaling", "web", "-o", "json").stdout)
    assert v2["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]
    v1 = json.loads(k("get", "horizontalpodautoscalers.v1.autoscaling", "web", "-o", "json").stdout)
    assert v1["apiVersion"] == "autoscaling/v1" and v1["spec"]["targetCPUUtilizationPercentage"] == 50
    assert "annotations" not in v1["metadata"]
    assert "autoscaling/v1" in k("api-versions").stdout.split()


def test_rollout_undo_stores_no_nulls(kube_server: KubeServer) -> None:
    """kubectl rollout undo patches in the old ReplicaSet's template as Go marshals it
    (``metadata.creationTimestamp: null``); the apiserver's decoding drops the null."""
    k = kube_server.kubectl
    k("create", "deployment", "undo", "--image=nginx:1")
    dep = _json(k("get", "deployment", "undo", "-o", "json"))
    for rev, image in ((1, "nginx:1"), (2, "nginx:2")):
        tpl = json.loads(json.dumps(dep["spec"]["template"]))
        tpl["metadata"]["labels"]["pod-template-hash"] = f"h{rev}"
        tpl["spec"]["containers"][0]["image"] = image
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"undo-h{rev}", "labels": tpl["metadata"]["labels"],
                           "annotations": {"deployment.kubernetes.io/revision": str(rev)},
                           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "undo",
                                                "uid": dep["metadata"]["uid"], "controller": True}]},
              "spec": {"replicas": 0, "selector": {"matchLabels": tpl["metadata"]["labels"]}, "template": tpl}}
        k("create", "-f", "-", input=json.dumps(rs))
    k("set", "image", "deployment/undo", "nginx=nginx:2")
    k("annotate", "deployment/undo", "deployment.kubernetes.io/revision=2")  # as the controller would
    out = k("rollout", "undo", "deployment/undo").stdout
    assert "rolled back" in out
    back = _json(k("get", "deployment", "undo", "-o", "json"))
    assert back["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1"
    assert "creationTimestamp" not in back["spec"]["template"]["metadata"]


def test_v1_hpa_server_side_apply(kube_server: KubeServer) -> None:
    k = kube_server.kubectl
    hpa = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "ssa", "namespace": "default"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 70}}
    k("apply", "--server-side", "-f", "-", input=json.dumps(hpa))
    hpa["spec"]["targetCPUUtilizationPercentage"] = 30
    out = k("apply", "--server-side", "-f", "-", input=json.dumps(hpa)).stdout
    assert "serverside-applied" in out
    v2 = _json(k("get", "horizontalpodautoscalers.v2.autoscaling", "ssa", "-o", "json",
                 "--show-managed-fields"))
    assert v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 30
    assert v2["spec"]["maxReplicas"] == 3 and "annotations" not in v2["metadata"]
    assert [e["apiVersion"] for e in v2["metadata"]["managedFields"]] == ["autoscaling/v1"]
    k("patch", "horizontalpodautoscalers.v1.autoscaling", "ssa", "--type=merge", "-p",
      '{"spec": {"maxReplicas": 5}}')
    v1 = _json(k("get", "horizontalpodautoscalers.v1.autoscaling", "ssa", "-o", "json"))
    assert v1["spec"]["maxReplicas"] == 5 and v1["spec"]["targetCPUUtilizationPercentage"] == 30


def test_a_list_applies_and_is_validated_on_the_client(kube_server: KubeServer) -> None:
    """kubectl checks a List's items itself, against ``/openapi/v2`` in protobuf; ``get -o yaml`` output replays."""
    k = kube_server.kubectl
    good = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"listed-{i}"}, "data": {"n": str(i)}}
        for i in range(2)]}
    out = k("apply", "-f", "-", input=yaml.safe_dump(good)).stdout
    assert "configmap/listed-0 created" in out and "configmap/listed-1 created" in out
    bad = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "listed-bad"}, "dataa": {"x": "1"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "listed-bad"}, "spec": {"replicas": "x"}}]}
    p = k("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert p.returncode == 1
    assert 'unknown field "dataa" in io.k8s.api.core.v1.ConfigMap' in p.stderr
    assert 'invalid type for io.k8s.api.apps.v1.DeploymentSpec.replicas: got "string", expected "integer"' in p.stderr
    assert k("get", "cm", "listed-bad", check=False).returncode == 1  # nothing of a refused List is applied
    listed = k("get", "cm", "-l", "!nothing", "-o", "yaml").stdout
    assert "kind: List" in listed
    assert "configmap/listed-0 replaced" in k("replace", "-f", "-", input=listed).stdout
