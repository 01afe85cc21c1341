"""Istio's CRDs, vendored from istio/istio (see ``crds/PROVENANCE.md``) and installed at start.

``networking.istio.io`` VirtualService, DestinationRule, ServiceEntry, Gateway
and ``security.istio.io`` AuthorizationPolicy, PeerAuthentication,
RequestAuthentication, with every served version and the upstream
openAPIV3Schema, so ``kubectl apply`` of Istio's own manifests works and
``kubectl get virtualservice`` lists them. The CEL rules
(``x-kubernetes-validations``) ship with the schema but are not evaluated by
pitwall's CRD validation (see docs/traffic.md).
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

__all__ = ["ISTIO_KINDS", "istio_crds"]

_FILE = "istio-crds.yaml"

# (apiVersion, kind) of the kinds the mesh reads (v1 is served by every vendored CRD).
ISTIO_KINDS: tuple[tuple[str, str], ...] = (
    ("networking.istio.io/v1", "VirtualService"), ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "ServiceEntry"), ("networking.istio.io/v1", "Gateway"),
    ("security.istio.io/v1", "AuthorizationPolicy"), ("security.istio.io/v1", "PeerAuthentication"),
    ("security.istio.io/v1", "RequestAuthentication"),
)


@functools.cache
def _load() -> tuple[dict[str, Any], ...]:
    text = resources.files("pitwall.traffic").joinpath("crds", _FILE).read_text(encoding="utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(d for d in yaml.load_all(text, Loader=loader) if d)


def istio_crds() -> list[dict[str, Any]]:
    """The vendored CRD objects (fresh copies: the caller may keep or change them)."""
    return [copy.deepcopy(d) for d in _load()]
