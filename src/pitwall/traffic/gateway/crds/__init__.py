"""The Gateway API's standard-channel CustomResourceDefinitions (``gateway.networking.k8s.io``
GatewayClass, Gateway, HTTPRoute), vendored at a release tag. See ``PROVENANCE.md`` beside this file.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

__all__ = ["gateway_api_crds"]

FILES = ("gateway.networking.k8s.io_gatewayclasses.yaml", "gateway.networking.k8s.io_gateways.yaml",
         "gateway.networking.k8s.io_httproutes.yaml")


@functools.cache
def _load() -> tuple[dict[str, Any], ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out: list[dict[str, Any]] = []
    for name in FILES:
        text = resources.files(__package__).joinpath(name).read_text()
        out.extend(d for d in yaml.load_all(text, Loader=loader) if d and d.get("kind") == "CustomResourceDefinition")
    return tuple(out)


def gateway_api_crds() -> list[dict[str, Any]]:
    """The CRD objects for ``KubeAPI.add_builtin_crds`` (parsed once per process; callers get copies)."""
    return [copy.deepcopy(d) for d in _load()]
