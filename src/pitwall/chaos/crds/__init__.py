"""Chaos Mesh's CustomResourceDefinitions (``chaos-mesh.org/v1alpha1``), vendored at a release tag.

See ``PROVENANCE.md`` beside this file for where they come from.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml

__all__ = ["CRD_FILES", "chaos_mesh_crds"]

CRD_FILES = ("podchaos", "networkchaos", "httpchaos", "stresschaos", "iochaos", "timechaos", "schedules",
             "workflows", "workflownodes")


@functools.cache
def _load(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath(f"chaos-mesh.org_{name}.yaml").read_text()
    doc: dict[str, Any] = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return doc


def chaos_mesh_crds() -> list[dict[str, Any]]:
    """The CRD objects for ``KubeAPI.add_builtin_crds`` (parsed once per process; callers get copies)."""
    import copy

    return [copy.deepcopy(_load(n)) for n in CRD_FILES]
