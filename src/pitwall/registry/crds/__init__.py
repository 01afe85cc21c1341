"""pitwall's own ``ConfigTemplate`` CRD (``pitwall.dev/v1``), served built in by the registry part."""

from __future__ import annotations

import copy
from typing import Any

from pitwall.core.vendored import yaml_documents

__all__ = ["config_template_crds"]


def config_template_crds() -> list[dict[str, Any]]:
    """The CRD objects for ``KubeAPI.add_builtin_crds`` (parsed once per process; callers get copies)."""
    return [copy.deepcopy(d) for d in yaml_documents(__package__, "configtemplate.yaml")
            if d.get("kind") == "CustomResourceDefinition"]
