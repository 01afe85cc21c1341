"""The Gateway API's standard-channel CustomResourceDefinitions (``gateway.networking.k8s.io``
GatewayClass, Gateway, HTTPRoute), vendored at a release tag. See ``PROVENANCE.md`` beside this file.
"""

from __future__ import annotations

import copy
from typing import Any

from pitwall.core.vendored import yaml_documents

__all__ = ["gateway_api_crds"]

FILES = ("gateway.networking.k8s.io_gatewayclasses.yaml", "gateway.networking.k8s.io_gateways.yaml",
         "gateway.networking.k8s.io_httproutes.yaml")


def _load() -> tuple[dict[str, Any], ...]:
    return tuple(d for name in FILES for d in yaml_documents(__package__, name)
                 if d.get("kind") == "CustomResourceDefinition")


def gateway_api_crds() -> list[dict[str, Any]]:
    """The CRD objects for ``KubeAPI.add_builtin_crds`` (parsed once per process; callers get copies)."""
    return [copy.deepcopy(d) for d in _load()]
