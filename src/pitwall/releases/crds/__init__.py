"""Flagger's CustomResourceDefinitions (``flagger.app/v1beta1`` Canary, MetricTemplate, AlertProvider),
vendored at a release tag. See ``PROVENANCE.md`` beside this file for where they come from.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

__all__ = ["flagger_crds"]


@functools.cache
def _load() -> tuple[dict[str, Any], ...]:
    text = resources.files(__package__).joinpath("crd.yaml").read_text()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(d for d in yaml.load_all(text, Loader=loader) if d and d.get("kind") == "CustomResourceDefinition")


def flagger_crds() -> list[dict[str, Any]]:
    """The three CRD objects for ``KubeAPI.add_builtin_crds`` (parsed once per process; callers get copies)."""
    return [copy.deepcopy(d) for d in _load()]
