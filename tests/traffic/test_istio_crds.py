"""Istio's CRDs built in: upstream's Bookinfo samples and CRD fixtures through the in-process kube client."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitwall.kube import KubeAPI, KubeError
from pitwall.traffic.istio_crds import ISTIO_KINDS, istio_crds
from tests.conftest import SHARED
from tests.kube.conftest import KubeServer
from tests.kube.test_cel_rules import CEL_REJECTED
from tests.kube_fixture import started_kube

pytestmark = pytest.mark.timeout(120)

ISTIO = SHARED / "conformance" / "wave2" / "istio"
CRD_FIXTURES = ISTIO / "pkg" / "config" / "validation" / "testdata" / "crds"
needs_wave2 = pytest.mark.skipif(not ISTIO.is_dir(), reason="../shared/conformance/wave2 is not beside the repo")

# *-invalid.yaml docs our schema validation rejects (type, enum, required, pattern, bounds). Most others are
# caught by Istio's CEL rules (x-kubernetes-validations: tests/kube/test_cel_rules.py's CEL_REJECTED); two need
# schema checks pitwall lacks (minProperties, list-map key uniqueness) and are still accepted.
SCHEMA_REJECTED = {
    ("destinationrule-invalid.yaml", "bookinfo-ratings"),  # three docs of that name: warmup bounds, required
    ("peerauth-invalid.yaml", "bad-mode"),
    ("reqauth-invalid.yaml", "bad-target-name"),
    ("reqauth-invalid.yaml", "bad-target-group"),
    ("reqauth-invalid.yaml", "bad-target-kind"),
    ("reqauth-invalid.yaml", "no-issuer"),
    ("reqauth-invalid.yaml", "empty-aud"),
    ("reqauth-invalid.yaml", "invalid-from-headers-no-name"),
    ("reqauth-invalid.yaml", "invalid-from-headers-empty-name"),
    ("reqauth-invalid.yaml", "invalid-from-params"),
    ("reqauth-invalid.yaml", "invalid-from-cookies"),
    ("reqauth-invalid.yaml", "invalid-claim-to-header-unset"),
    ("reqauth-invalid.yaml", "invalid-claim-to-header-claim-empty"),
    ("reqauth-invalid.yaml", "invalid-claim-to-header-header-empty"),
    ("reqauth-invalid.yaml", "invalid-claim-to-header-bad-header"),
    ("reqauth-invalid.yaml", "invalid-space-delimited-claims"),
    ("reqauth-invalid.yaml", "invalid-presence-value"),
    ("serviceentry-invalid.yaml", "no-spec"),
    ("serviceentry-invalid.yaml", "missing-host"),
}


@pytest.fixture
async def istio_kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with started_kube(tmp_path, istio_crds()) as api:
        yield api


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


async def _round_trip(api: KubeAPI, doc: dict[str, Any]) -> None:
    body = copy.deepcopy(doc)
    body["metadata"]["namespace"] = "default"  # samples naming istio-system land beside the others
    created = await api.client.create(body)
    got = await api.client.get(doc["apiVersion"], doc["kind"], created["metadata"]["name"], "default")
    assert got.get("spec") == doc.get("spec"), doc["metadata"]["name"]
    await api.client.delete(doc["apiVersion"], doc["kind"], created["metadata"]["name"], "default")


async def test_every_istio_kind_is_served(istio_kube: KubeAPI) -> None:
    crds = await istio_kube.client.list("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    names = {c["metadata"]["name"] for c in crds.items}
    assert {"virtualservices.networking.istio.io", "authorizationpolicies.security.istio.io"} <= names
    for api_version, kind in ISTIO_KINDS:
        assert (await istio_kube.client.list(api_version, kind, "default")).items == []


async def test_schema_rejects_a_wrong_type(istio_kube: KubeAPI) -> None:
    bad = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": "bad", "namespace": "default"}, "spec": {"hosts": "not-a-list"}}
    with pytest.raises(KubeError, match=r"spec\.hosts"):
        await istio_kube.client.create(bad)
    assert (await istio_kube.client.list("networking.istio.io/v1", "VirtualService", "default")).items == []


@needs_wave2
async def test_bookinfo_samples_round_trip(istio_kube: KubeAPI) -> None:
    files = sorted((ISTIO / "samples" / "bookinfo" / "networking").glob("*.yaml"))
    assert len(files) == 21
    for f in files:
        for doc in _docs(f):
            await _round_trip(istio_kube, doc)


@pytest.fixture
def istio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeServer]:
    s = KubeServer(tmp_path_factory.mktemp("kube"))
    s.kube.add_builtin_crds(istio_crds())
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _json_stream(text: str) -> list[dict[str, Any]]:
    """The objects kubectl prints one after another (one JSON document per input document)."""
    dec, out, i = json.JSONDecoder(), [], 0
    while (i := _skip_ws(text, i)) < len(text):
        obj, i = dec.raw_decode(text, i)
        out.append(obj)
    return out


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


@needs_wave2
@pytest.mark.slow
def test_valid_fixtures_and_bookinfo_round_trip_through_kubectl(istio_server: KubeServer) -> None:
    """kubectl parses the YAML (Go's parser: ``[1.2.3.4, 001:db8::]`` is two strings, unlike PyYAML's),
    applies it, and reads it back with ``spec`` unchanged."""
    k = istio_server.kubectl
    k("create", "namespace", "istio-system")
    files = sorted(CRD_FIXTURES.glob("*-valid.yaml")) + sorted((ISTIO / "samples" / "bookinfo" / "networking")
                                                               .glob("*.yaml"))
    assert len(files) == 26
    checked = 0
    for f in files:
        docs = _json_stream(k("create", "--dry-run=client", "-o", "json", "-f", str(f)).stdout)
        for doc in docs:  # one at a time: some files hold several docs of the same name
            k("apply", "-f", "-", input=json.dumps(doc))
            ns = doc["metadata"].get("namespace") or "default"
            ref = [f"{doc['kind'].lower()}.{doc['apiVersion'].split('/')[0]}", doc["metadata"]["name"], "-n", ns]
            got = json.loads(k("get", *ref, "-o", "json").stdout)
            assert got["spec"] == doc["spec"], f"{f.name}: {doc['metadata']['name']}"
            k("delete", *ref)
            checked += 1
    assert checked >= 40


@needs_wave2
async def test_invalid_fixtures_rejected_by_schema_or_cel(istio_kube: KubeAPI) -> None:
    rejected: set[tuple[str, str]] = set()
    for f in sorted(CRD_FIXTURES.glob("*-invalid.yaml")):
        for doc in _docs(f):
            doc.pop("_err", None)
            doc["metadata"]["namespace"] = "default"
            try:
                await istio_kube.client.create(doc)
            except KubeError:
                rejected.add((f.name, doc["metadata"]["name"]))
            else:
                await istio_kube.client.delete(doc["apiVersion"], doc["kind"], doc["metadata"]["name"], "default")
    assert rejected == SCHEMA_REJECTED | CEL_REJECTED
