"""deploy/kubernetes stays valid: `kubectl kustomize` builds each variant and `kubernetes-validate
--strict` accepts every object; the objects fit together (selectors, names, probes, the pitwall.yaml
the ConfigMap carries loads as pitwall's settings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitwall.config import load_settings
from pitwall.metrics.scrape.config import parse_scrape_configs
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(120)

KUBECTL = "/usr/bin/kubectl"
DEPLOY = REPO / "deploy" / "kubernetes"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
VARIANTS = {"base": DEPLOY / "base", "remote": DEPLOY / "overlays" / "remote"}


def _kustomize(path: Path) -> str:
    if not os.path.exists(KUBECTL):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    p = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _validate(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VALIDATE), "--strict", "--quiet", "-"], input=text, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def built(request: pytest.FixtureRequest) -> tuple[str, str, list[dict[str, Any]]]:
    text = _kustomize(VARIANTS[request.param])
    return request.param, text, [d for d in yaml.safe_load_all(text) if d]


def _one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [obj] = [o for o in objs if o["kind"] == kind]
    return obj


def _workload(variant: str, objs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(objs, "StatefulSet" if variant == "base" else "Deployment")


def test_strictly_valid(built: tuple[str, str, list[dict[str, Any]]]) -> None:
    _, text, objs = built
    p = _validate(text)
    assert p.returncode == 0, p.stdout + p.stderr
    assert {o["metadata"]["namespace"] for o in objs} == {"pitwall"}


def test_the_validator_rejects_what_it_should() -> None:
    """The check above can fail: an unknown field is an error under --strict."""
    text = _kustomize(VARIANTS["base"]).replace("serviceName: pitwall-headless", "serviceName: pitwall-headless\n"
                                                "  replica: 2", 1)
    p = _validate(text)
    assert p.returncode != 0 and "replica" in p.stdout + p.stderr


def test_modes(built: tuple[str, str, list[dict[str, Any]]]) -> None:
    variant, _, objs = built
    kinds = {o["kind"] for o in objs}
    w = _workload(variant, objs)
    if variant == "base":  # embedded: one replica on its own volume
        assert "Deployment" not in kinds and w["spec"]["replicas"] == 1
        [claim] = w["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"
        assert _one([o for o in objs if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"],
                    "Service")["metadata"]["name"] == w["spec"]["serviceName"]
    else:  # remote: several stateless replicas
        assert "StatefulSet" not in kinds and w["spec"]["replicas"] >= 2
        env = {e["name"]: e for e in w["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "pitwall-postgres"


def test_objects_fit_together(built: tuple[str, str, list[dict[str, Any]]]) -> None:
    variant, _, objs = built
    w = _workload(variant, objs)
    pod = w["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert w["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = _one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [c] = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for svc in (o for o in objs if o["kind"] == "Service"):
        assert svc["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports.keys()
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    cm = _one(objs, "ConfigMap")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]  # the generated, hashed name
    mounts = {m["name"] for m in c["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
    assert mounts <= volumes.keys() | claims
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the Containerfile's user


def test_the_configmap_is_pitwall_settings(built: tuple[str, str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """pitwall.yaml as the pods read it (the Secret's token file stood in for) loads without error."""
    variant, _, objs = built
    w = _workload(variant, objs)
    [c] = w["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert c["args"] == ["server", "--config", f"{mounts['config']}/pitwall.yaml"]
    text = _one(objs, "ConfigMap")["data"]["pitwall.yaml"]
    token = tmp_path / "token"
    token.write_text("a-token-of-at-least-32-characters-000\n")
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(text.replace(f"{mounts['token']}/token", str(token)))
    s = load_settings(cfg)
    assert str(s.data_dir) == mounts["data"] and s.listen == "0.0.0.0:9900"
    assert yaml.safe_load(text)["otlp_grpc"]["listen"] == "0.0.0.0:4317"  # (the tests' env overrides the loaded one)
    assert s.state.backend == ("sqlite" if variant == "base" else "postgres")
    [own] = parse_scrape_configs(s.scrape_configs)  # the self-scrape, as the scrape manager reads it
    assert own.job_name == "pitwall" and own.static_configs[0].targets == [s.listen.replace("0.0.0.0", "127.0.0.1")]
