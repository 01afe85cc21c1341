"""Releases: Flagger's Canary (progressive canary, A/B testing, blue/green) on pitwall's mesh.

``__all__`` is the pillar's public interface.
"""

from __future__ import annotations

from pitwall.releases.crds import flagger_crds

__all__ = ["flagger_crds"]
