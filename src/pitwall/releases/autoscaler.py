"""``spec.autoscalerRef`` for a HorizontalPodAutoscaler (Flagger's ``pkg/canary/hpa_reconciler.go``, v1.44.0).

From the referenced HPA (``autoscaling/v2``, which keeps scaling the target
Deployment) a ``<hpa>-primary`` HPA is made for ``<target>-primary``: the
same min/max replicas (or ``autoscalerRef.primaryScalerReplicas``), metrics
and behavior, the HPA's labels, the Canary as controller owner (so it goes
with the Canary). It is created at initialisation and brought to the
target HPA's spec when a promotion starts (a change to the HPA is promoted
like one to the pod template). Pausing the target's HPA needs nothing: an
HPA does not scale a Deployment at zero replicas.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from pitwall.kube import KubeClient, NotFoundError
from pitwall.releases.configs import without_flux
from pitwall.releases.model import API_VERSION, CANARY, CanaryView

__all__ = ["HPA", "AutoscalerError", "delete_primary", "min_replicas", "reconcile_primary"]

HPA = "HorizontalPodAutoscaler"
AUTOSCALING = "autoscaling/v2"
Obj = dict[str, Any]


class AutoscalerError(Exception):
    """The referenced autoscaler cannot be read or mirrored (reported as a Warning Event; the tick stops)."""


def _ref(cd: CanaryView) -> Obj:
    r: Obj = cd.spec.get("autoscalerRef") or {}
    return r


async def _target_hpa(client: KubeClient, cd: CanaryView) -> Obj:
    name = str(_ref(cd).get("name") or "")
    try:
        hpa: Obj = await client.get(AUTOSCALING, HPA, name, cd.namespace)
    except NotFoundError as e:
        raise AutoscalerError(f"HorizontalPodAutoscaler {name}.{cd.namespace} get query error: {e}") from None
    return hpa


def primary_spec(cd: CanaryView, hpa: Obj) -> Obj:
    """The primary HPA's spec from the target's (Flagger's reconcilePrimaryHpaV2)."""
    src = hpa.get("spec") or {}
    ref = src.get("scaleTargetRef") or {}
    spec: Obj = {"scaleTargetRef": {"apiVersion": ref.get("apiVersion", "apps/v1"), "kind": ref.get("kind",
                                                                                                      "Deployment"),
                                    "name": cd.primary_workload},
                 "maxReplicas": src.get("maxReplicas")}
    for f in ("minReplicas", "metrics", "behavior"):
        if src.get(f) is not None:
            spec[f] = copy.deepcopy(src[f])
    override = _ref(cd).get("primaryScalerReplicas") or {}
    if isinstance(override.get("minReplicas"), int):
        spec["minReplicas"] = override["minReplicas"]
    if isinstance(override.get("maxReplicas"), int):
        spec["maxReplicas"] = override["maxReplicas"]
    return spec


def _owner(cd: CanaryView) -> Obj:
    return {"apiVersion": API_VERSION, "kind": CANARY, "name": cd.name, "uid": str(cd.meta.get("uid") or ""),
            "controller": True, "blockOwnerDeletion": True}


def _fields(spec: Obj, meta: Obj) -> tuple[Any, ...]:
    """What Flagger compares (hasHPAChanged): metrics, behavior, labels, annotations (Flux's never copied, so
    not compared), min (default 1), max."""
    return (spec.get("metrics"), spec.get("behavior"), without_flux(meta.get("labels")),
            without_flux(meta.get("annotations")), spec.get("minReplicas") or 1, spec.get("maxReplicas"))


async def reconcile_primary(client: KubeClient, cd: CanaryView, *, init: bool) -> bool:
    """Create ``<hpa>-primary`` when absent; when not ``init``, bring it to the target HPA. True if written."""
    hpa = await _target_hpa(client, cd)
    name = f"{_ref(cd).get('name')}-primary"
    want = primary_spec(cd, hpa)
    hm = hpa.get("metadata") or {}
    try:
        primary = await client.get(AUTOSCALING, HPA, name, cd.namespace)
    except NotFoundError:
        await client.create({"apiVersion": AUTOSCALING, "kind": HPA,
                             "metadata": {"name": name, "namespace": cd.namespace,
                                          "labels": without_flux(hm.get("labels")), "ownerReferences": [_owner(cd)]},
                             "spec": want})
        return True
    pm = primary.get("metadata") or {}
    if init or _fields(want, hm) == _fields(primary.get("spec") or {}, pm):
        return False

    def change(o: Obj) -> None:
        spec = o.setdefault("spec", {})
        for f in ("minReplicas", "maxReplicas", "metrics", "behavior"):
            if f in want:
                spec[f] = copy.deepcopy(want[f])
            else:
                spec.pop(f, None)
        o["metadata"]["labels"] = without_flux(hm.get("labels"))  # Flux would prune what carries its labels
        o["metadata"]["annotations"] = without_flux(hm.get("annotations"))

    await client.modify(primary, change)
    return True


async def min_replicas(client: KubeClient, cd: CanaryView) -> int:
    """Replicas to scale the target up with under an HPA (Flagger's ScaleFromZero: its minReplicas, at least 1)."""
    try:
        hpa = await _target_hpa(client, cd)
    except AutoscalerError:
        return 1
    v = (hpa.get("spec") or {}).get("minReplicas")
    return v if isinstance(v, int) and v > 1 else 1


async def delete_primary(client: KubeClient, cd: CanaryView) -> None:
    """Remove the primary HPA (the Canary is being deleted; the owner reference would remove it too)."""
    with contextlib.suppress(NotFoundError):
        await client.delete(AUTOSCALING, HPA, f"{_ref(cd).get('name')}-primary", cd.namespace)
