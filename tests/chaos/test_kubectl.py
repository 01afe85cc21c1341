"""Chaos Mesh's objects through the real kubectl: the CRDs listed, the upstream examples applied and read back
with their spec unchanged (but for the schema's defaults), ``kubectl get``'s printer columns, a refusal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitwall.chaos.crds import chaos_mesh_crds
from tests.chaos.conftest import CHAOS_MESH
from tests.kube.conftest import KubeServer
from tests.kube_fixture import extras, schema_defaults

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeServer]:
    s = KubeServer(tmp_path_factory.mktemp("chaos-kubectl"))
    s.kube.add_builtin_crds(chaos_mesh_crds())
    s.start()
    try:
        yield s
    finally:
        s.stop()


def test_crds_listed_by_kubectl(server: KubeServer) -> None:
    out = server.kubectl("get", "crd", "-o", "name").stdout
    for plural in ("podchaos", "networkchaos", "httpchaos", "stresschaos", "iochaos", "timechaos", "schedules",
                   "workflows"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{plural}.chaos-mesh.org" in out


@pytest.mark.skipif(not CHAOS_MESH.is_dir(), reason="../shared is absent")
def test_examples_applied_and_read_back(server: KubeServer) -> None:
    examples = sorted((CHAOS_MESH / "examples").rglob("*.yaml"))
    assert len(examples) == 31
    namespaces = {(d.get("metadata") or {}).get("namespace") for p in examples
                  for d in yaml.safe_load_all(p.read_text()) if d} - {None, "default"}
    for ns in sorted(namespaces):
        server.kubectl("create", "namespace", str(ns))
    for path in examples:
        server.kubectl("apply", "-f", str(path))
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            m = doc["metadata"]
            got: dict[str, Any] = yaml.safe_load(server.kubectl(
                "get", f"{doc['kind'].lower()}.chaos-mesh.org", m["name"], "-n", m.get("namespace") or "default",
                "-o", "yaml").stdout)
            assert extras(got["spec"], doc["spec"], "spec") <= schema_defaults(chaos_mesh_crds(), doc["kind"]), path


def test_invalid_object_refused_with_the_field(server: KubeServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "StressChaos",
                                   "metadata": {"name": "bad", "namespace": "default"},
                                   "spec": {"mode": "everything", "selector": {}}}))
    p = server.kubectl("apply", "-f", str(bad), check=False)
    assert p.returncode != 0 and "spec.mode" in p.stderr
    assert server.kubectl("get", "stresschaos", "bad", check=False).returncode != 0
