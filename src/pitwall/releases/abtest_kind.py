"""``pitwall.dev/v1`` ABTest: a saved A/B experiment, the inputs of ``/api/releases/v1/abtest`` kept as a
Kubernetes object on the state store (``kubectl apply``, ``kubectl get abtests``).

The object's ``spec`` holds the fields of the endpoint's JSON body; the report is computed when asked for
(``GET /api/releases/v1/abtests/{namespace}/{name}``, the page ``/releases/abtest?experiment=ns/name``), not
stored: the counts change as the experiment runs. Admission checks the spec with the endpoint's own parser, so
an object the report would refuse is refused at ``kubectl apply`` (422, the field under ``spec.``).
"""

from __future__ import annotations

from typing import Any

from pitwall.kube import Cause, KubeAPI, KubeClient, NotFoundError
from pitwall.releases.abtest_spec import ABTestInputError, ABTestSpec, spec_from_json
from pitwall.releases.crds import abtest_crd

__all__ = ["API_VERSION", "GROUP", "KIND", "install_abtest_kind", "saved_spec", "validate_abtest"]

GROUP = "pitwall.dev"
API_VERSION = f"{GROUP}/v1"
KIND = "ABTest"


def install_abtest_kind(kube: KubeAPI) -> None:
    """The CRD built in and its admission check (call before ``kube`` starts)."""
    kube.add_builtin_crds([abtest_crd()])
    kube.resources.add_admission(GROUP, KIND, validate=validate_abtest)


def validate_abtest(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """The spec as the endpoint reads it: its first bad field, under ``spec.``."""
    try:
        spec_from_json(obj.get("spec") or {})
    except ABTestInputError as e:
        return [Cause(f"spec.{e.field}", "FieldValueInvalid", e.detail)]
    return []


async def saved_spec(client: KubeClient, namespace: str, name: str) -> ABTestSpec | None:
    """The spec of a saved experiment, or None when there is no such object."""
    try:
        obj = await client.get(API_VERSION, KIND, name, namespace)
    except NotFoundError:
        return None
    return spec_from_json(obj.get("spec") or {})
