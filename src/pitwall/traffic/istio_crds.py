"""Istio's CRDs, vendored from istio/istio (see ``crds/PROVENANCE.md``) and installed at start.

``networking.istio.io`` VirtualService, DestinationRule, ServiceEntry, Gateway
and ``security.istio.io`` AuthorizationPolicy, PeerAuthentication,
RequestAuthentication, and ``telemetry.istio.io`` Telemetry (its ``accessLogging``
drives the mesh's access logs, ``traffic.accesslog``), with every served version and the upstream
openAPIV3Schema, so ``kubectl apply`` of Istio's own manifests works and
``kubectl get virtualservice`` lists them. The CEL rules
(``x-kubernetes-validations``) ship with the schema but are not evaluated by
pitwall's CRD validation (see docs/traffic.md).
"""

from __future__ import annotations

import copy
from typing import Any

from pitwall.core.vendored import yaml_documents

__all__ = ["ISTIO_KINDS", "istio_crds"]

_FILES = ("istio-crds.yaml", "telemetry-crd.yaml")

# (apiVersion, kind) of the kinds the mesh reads (v1 is served by every vendored CRD).
ISTIO_KINDS: tuple[tuple[str, str], ...] = (
    ("networking.istio.io/v1", "VirtualService"), ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "ServiceEntry"), ("networking.istio.io/v1", "Gateway"),
    ("security.istio.io/v1", "AuthorizationPolicy"), ("security.istio.io/v1", "PeerAuthentication"),
    ("security.istio.io/v1", "RequestAuthentication"), ("telemetry.istio.io/v1", "Telemetry"),
)


def _load() -> tuple[dict[str, Any], ...]:
    return tuple(d for f in _FILES for d in yaml_documents("pitwall.traffic", "crds", f))


def istio_crds() -> list[dict[str, Any]]:
    """The vendored CRD objects (fresh copies: the caller may keep or change them)."""
    return [copy.deepcopy(d) for d in _load()]
