"""Builds the releases capability as a ``core.lifecycle.Part``: Flagger's CRDs built into the Kubernetes API."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.kube import KubeAPI
from pitwall.releases.crds import flagger_crds

__all__ = ["ReleasesPart", "build_releases_part"]


@dataclass
class ReleasesPart:
    """Releases as a part of the server."""

    name: str = "releases"

    def components(self) -> Sequence[Component]:
        return []

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return []

    async def reload(self, settings: Any) -> None:
        """Nothing to reload: Canaries are Kubernetes objects."""

    def register_metrics(self, metrics: SelfMetrics) -> None:
        return None


def build_releases_part(kube: KubeAPI) -> ReleasesPart:
    """The part over ``kube`` (call before ``kube`` starts: Flagger's CRDs go in)."""
    kube.add_builtin_crds(flagger_crds())
    return ReleasesPart()
