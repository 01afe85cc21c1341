"""Chaos Mesh's CustomResourceDefinitions (``chaos-mesh.org/v1alpha1``), vendored at a release tag.

See ``PROVENANCE.md`` beside this file for where they come from.
"""

from __future__ import annotations

from typing import Any

from pitwall.core.vendored import yaml_documents

__all__ = ["CRD_FILES", "chaos_mesh_crds"]

CRD_FILES = ("podchaos", "networkchaos", "httpchaos", "stresschaos", "iochaos", "timechaos", "dnschaos", "schedules",
             "workflows", "workflownodes", "statuschecks")


def _load(name: str) -> dict[str, Any]:
    (doc,) = yaml_documents(__package__, f"chaos-mesh.org_{name}.yaml")
    return dict(doc)


def chaos_mesh_crds() -> list[dict[str, Any]]:
    """The CRD objects for ``KubeAPI.add_builtin_crds`` (fresh copies: the caller may keep or change them)."""
    import copy

    return [copy.deepcopy(_load(n)) for n in CRD_FILES]
