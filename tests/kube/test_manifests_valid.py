"""The manifests the tests apply to pitwall are real Kubernetes YAML: kubernetes-validate, strict, v1.32."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.test_pitwall_server import _manifests

kv = pytest.importorskip("kubernetes_validate")
DATA = Path(__file__).parent / "data"


def _docs() -> list[tuple[str, dict[str, Any]]]:
    out = [(f"web.yaml[{i}]", d) for i, d in enumerate(yaml.safe_load_all((DATA / "web.yaml").read_text())) if d]
    out += [(f"pitwall-server[{i}]", json.loads(line)) for i, line in enumerate(_manifests("v1").splitlines())]
    return out


@pytest.mark.parametrize(("name", "doc"), _docs(), ids=[n for n, _ in _docs()])
def test_manifest_is_strictly_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    kv.validate(doc, "1.32", strict=True)  # raises ValidationError naming the field
