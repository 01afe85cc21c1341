"""Flagger's CRDs are served: the upstream Canary examples and every ``flagger.app`` object in the docs' YAML
blocks are accepted and round-trip, in process and through the real kubectl (Flagger's printer columns)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitwall.kube import AlreadyExists, Invalid, KubeAPI, NotFoundError
from pitwall.releases.crds import flagger_crds
from tests.kube.conftest import KubeServer
from tests.kube_fixture import extras, schema_defaults
from tests.releases.conftest import FLAGGER

pytestmark = pytest.mark.timeout(120)

EXAMPLES = sorted((FLAGGER / "artifacts" / "examples").glob("*.yaml")) if FLAGGER.is_dir() else []
_FENCE = re.compile(r"```ya?ml\n(.*?)```", re.S)


def _docs_objects() -> list[tuple[str, dict[str, Any]]]:
    """Every complete ``flagger.app`` object in a fenced YAML block of the docs pages (many are fragments)."""
    out: list[tuple[str, dict[str, Any]]] = []
    if not FLAGGER.is_dir():
        return out
    for page in sorted((FLAGGER / "docs").rglob("*.md")):
        for i, block in enumerate(_FENCE.findall(page.read_text())):
            try:
                docs = [d for d in yaml.safe_load_all(block) if isinstance(d, dict)]
            except yaml.YAMLError:
                continue  # a block with placeholders, not YAML
            for d in docs:
                if str(d.get("apiVersion", "")).startswith("flagger.app/"):
                    name = (d.get("metadata") or {}).get("name")
                    out.append((f"{page.stem}#{i}:{d['kind']}/{name}", _complete(d)))
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _complete(doc: dict[str, Any]) -> dict[str, Any]:
    """A Canary block that shows only part of a spec ("omitted for brevity") laid over the upstream Istio
    example, so the part shown is what gets validated; complete objects are taken as they are."""
    if doc["kind"] != "Canary" or "targetRef" in (doc.get("spec") or {}):
        return doc
    base = yaml.safe_load((FLAGGER / "artifacts" / "examples" / "istio-canary.yaml").read_text())
    spec = doc.get("spec") or {}
    if "analysis" in spec:
        base["spec"].pop("analysis")  # a shown analysis is whole (iterations exclude the example's weights)
    return _merge(base, {"spec": spec})


DOC_OBJECTS = _docs_objects()
# Blocks of the docs that Flagger's own CRD schema rejects (kube-apiserver would refuse them too): the
# AlertProvider sets both ``address`` and ``secretRef`` (the schema's oneOf), and the MetricTemplate blocks
# that only show a provider have no ``query``. Each must be refused naming the field. One block is still
# ``flagger.app/v1alpha1``, a version the CRD no longer serves.
DOCS_INVALID = {
    "alerting#0:AlertProvider/on-call": "spec in body must validate one and only one schema (oneOf)",
    "metrics#1:MetricTemplate/my-metric": "spec.query: Required value",
    "metrics#10:MetricTemplate/my-metric": "spec.query: Required value",
    "metrics#22:MetricTemplate/my-metric": "spec.query: Required value",
}
DOCS_UNSERVED = {"metrics#14:MetricTemplate/cloudwatch-error-rate"}


def test_the_fixtures_are_there() -> None:
    if not FLAGGER.is_dir():
        pytest.skip("../shared is absent")
    assert len(EXAMPLES) == 5
    kinds = {d["kind"] for _, d in DOC_OBJECTS}
    assert kinds == {"Canary", "MetricTemplate", "AlertProvider"}


async def test_crds_listed(kube: KubeAPI) -> None:
    names = {c["metadata"]["name"] for c in (await kube.client.list("apiextensions.k8s.io/v1",
                                                                    "CustomResourceDefinition")).items}
    assert {"canaries.flagger.app", "metrictemplates.flagger.app", "alertproviders.flagger.app"} <= names


async def _ensure_ns(kube: KubeAPI, ns: str) -> None:
    if ns == "default":
        return
    with contextlib.suppress(AlreadyExists):
        await kube.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
async def test_example_accepted_and_round_trips(kube: KubeAPI, path: Path) -> None:
    for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
        ns = doc["metadata"].get("namespace") or "default"
        await _ensure_ns(kube, ns)
        await kube.client.create(doc)
        got = await kube.client.get(doc["apiVersion"], doc["kind"], doc["metadata"]["name"], ns)
        assert extras(got["spec"], doc["spec"], "spec") <= schema_defaults(flagger_crds())


@pytest.mark.parametrize(("label", "doc"), DOC_OBJECTS, ids=[lbl for lbl, _ in DOC_OBJECTS])
async def test_docs_object_accepted_and_round_trips(kube: KubeAPI, label: str, doc: dict[str, Any]) -> None:
    ns = doc["metadata"].get("namespace") or "default"
    await _ensure_ns(kube, ns)
    if label in DOCS_UNSERVED:
        with pytest.raises(NotFoundError) as missing:
            await kube.client.create(doc)
        assert 'no matches for kind "MetricTemplate" in version "flagger.app/v1alpha1"' in str(missing.value)
        return
    if label in DOCS_INVALID:
        with pytest.raises(Invalid) as e:
            await kube.client.create(doc)
        assert DOCS_INVALID[label] in str(e.value)
        return
    await kube.client.create(doc)
    got = await kube.client.get(doc["apiVersion"], doc["kind"], doc["metadata"]["name"], ns)
    assert extras(got["spec"], doc["spec"], "spec") <= schema_defaults(flagger_crds()), label


async def test_invalid_canary_rejected_with_the_field_path(kube: KubeAPI) -> None:
    bad = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "x", "namespace": "default"},
           "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
                    "service": {"port": 80}, "analysis": {"threshold": "many"}}}
    with pytest.raises(Invalid) as e:
        await kube.client.create(bad)
    assert "spec.analysis.threshold" in str(e.value)
    with pytest.raises(Invalid) as e:
        await kube.client.create({**bad, "spec": {"service": {"port": 80}}})
    assert "spec.targetRef" in str(e.value)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeServer]:
    s = KubeServer(tmp_path_factory.mktemp("flagger-kubectl"))
    s.kube.add_builtin_crds(flagger_crds())
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.mark.skipif(not FLAGGER.is_dir(), reason="../shared is absent")
def test_kubectl_applies_the_examples_and_prints_flaggers_columns(server: KubeServer) -> None:
    out = server.kubectl("get", "crd", "-o", "name").stdout
    for plural in ("canaries", "metrictemplates", "alertproviders"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{plural}.flagger.app" in out
    server.kubectl("create", "namespace", "test")
    for path in EXAMPLES:
        doc = yaml.safe_load(path.read_text())
        doc["metadata"]["name"] = path.stem  # several examples share the name podinfo
        server.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        got = yaml.safe_load(server.kubectl("get", "canary", path.stem, "-n", "test", "-o", "yaml").stdout)
        assert extras(got["spec"], doc["spec"], "spec") <= schema_defaults(flagger_crds()), path
    rows = server.kubectl("get", "canaries", "-n", "test").stdout.splitlines()
    assert rows[0].split() == ["NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME", "AGE"]
    assert sorted(r.split()[0] for r in rows[1:]) == sorted(p.stem for p in EXAMPLES)
    wide = server.kubectl("get", "canaries", "-n", "test", "-o", "wide").stdout.splitlines()[0].split()
    assert wide[:9] == ["NAME", "STATUS", "WEIGHT", "SUSPENDED", "FAILEDCHECKS", "INTERVAL", "MIRROR", "STEPWEIGHT",
                        "STEPWEIGHTS"]
    server.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate", "metadata": {"name": "errors", "namespace": "test"},
        "spec": {"provider": {"type": "prometheus", "address": "http://prometheus:9090"}, "query": "1"}}))
    assert server.kubectl("get", "metrictemplates", "-n", "test").stdout.splitlines()[0].split()[:2] == \
        ["NAME", "PROVIDER"]
