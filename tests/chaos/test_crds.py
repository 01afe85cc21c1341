"""Chaos Mesh's CRDs are served, and every upstream example is accepted and round-trips unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pitwall.chaos.crds import chaos_mesh_crds
from pitwall.kube import Invalid, KubeAPI
from tests.chaos.conftest import CHAOS_MESH
from tests.kube_fixture import extras, schema_defaults

pytestmark = pytest.mark.timeout(60)

EXAMPLES = sorted((CHAOS_MESH / "examples").rglob("*.yaml")) if CHAOS_MESH.is_dir() else []


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_there_are_31_examples() -> None:
    if not CHAOS_MESH.is_dir():
        pytest.skip("../shared is absent")
    assert len(EXAMPLES) == 31


async def test_crds_listed(kube: KubeAPI) -> None:
    names = {c["metadata"]["name"] for c in (await kube.client.list("apiextensions.k8s.io/v1",
                                                                    "CustomResourceDefinition")).items}
    assert {"podchaos.chaos-mesh.org", "networkchaos.chaos-mesh.org", "httpchaos.chaos-mesh.org",
            "stresschaos.chaos-mesh.org", "iochaos.chaos-mesh.org", "timechaos.chaos-mesh.org",
            "schedules.chaos-mesh.org", "workflows.chaos-mesh.org", "statuschecks.chaos-mesh.org"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(CHAOS_MESH / "examples")))
async def test_example_accepted_and_round_trips(kube: KubeAPI, path: Path) -> None:
    for doc in _docs(path):
        ns = (doc.get("metadata") or {}).get("namespace") or "default"
        if ns != "default":
            await kube.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        made = await kube.client.create(doc)
        got = await kube.client.get(doc["apiVersion"], doc["kind"], made["metadata"]["name"], ns)
        # unchanged but for the defaults the schema declares (as kube-apiserver fills them in)
        assert extras(got["spec"], doc["spec"], "spec") <= schema_defaults(chaos_mesh_crds(), doc["kind"])
        again = await kube.client.get(doc["apiVersion"], doc["kind"], made["metadata"]["name"], ns)
        assert again["spec"] == got["spec"]


async def test_invalid_object_rejected_with_the_field_path(kube: KubeAPI) -> None:
    bad = {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "PodChaos", "metadata": {"name": "x", "namespace": "default"},
           "spec": {"action": "pod-explode", "mode": "one", "selector": {}}}
    with pytest.raises(Invalid) as e:
        await kube.client.create(bad)
    assert "spec.action" in str(e.value)
    bad["spec"] = {"action": "pod-kill", "mode": "one", "selector": {}, "duration": 5}
    with pytest.raises(Invalid) as e:
        await kube.client.create(bad)
    assert "spec.duration" in str(e.value)
