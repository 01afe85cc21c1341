"""Chaos engineering: Chaos Mesh's kinds injected by pitwall itself, Chaos Toolkit experiments, a halt-all.

``__all__`` is the pillar's public interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pitwall.chaos.crds import chaos_mesh_crds

if TYPE_CHECKING:
    from pitwall.chaos.console import EXPERIMENT_KINDS, ChaosConsole

__all__ = ["EXPERIMENT_KINDS", "ChaosConsole", "chaos_mesh_crds"]


def __getattr__(name: str) -> Any:
    """The console on first use: it pulls in the halt API's web framework, which ``pitwall chaos run`` (the CLI
    imports this package) must start without."""
    if name in ("ChaosConsole", "EXPERIMENT_KINDS"):
        from pitwall.chaos import console

        return getattr(console, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
