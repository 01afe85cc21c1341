"""Chaos engineering: Chaos Mesh's kinds injected by pitwall itself, Chaos Toolkit experiments, a halt-all.

``__all__`` is the pillar's public interface.
"""

from __future__ import annotations

from pitwall.chaos.console import EXPERIMENT_KINDS, ChaosConsole
from pitwall.chaos.crds import chaos_mesh_crds

__all__ = ["EXPERIMENT_KINDS", "ChaosConsole", "chaos_mesh_crds"]
