"""Flagger's CustomResourceDefinitions (``flagger.app/v1beta1`` Canary, MetricTemplate, AlertProvider),
vendored at a release tag, and pitwall's own ABTest kind (``pitwall.dev/v1``, a saved A/B experiment).
See ``PROVENANCE.md`` beside this file for where they come from.
"""

from __future__ import annotations

import copy
from typing import Any

from pitwall.core.vendored import yaml_documents

__all__ = ["abtest_crd", "flagger_crds"]


def _load() -> tuple[dict[str, Any], ...]:
    return tuple(d for d in yaml_documents(__package__, "crd.yaml") if d.get("kind") == "CustomResourceDefinition")


def flagger_crds() -> list[dict[str, Any]]:
    """The three CRD objects for ``KubeAPI.add_builtin_crds`` (parsed once per process; callers get copies)."""
    return [copy.deepcopy(d) for d in _load()]


def abtest_crd() -> dict[str, Any]:
    """pitwall's own ``pitwall.dev/v1`` ABTest CRD (a copy)."""
    (doc,) = yaml_documents(__package__, "pitwall.dev_abtests.yaml")
    return copy.deepcopy(dict(doc))
