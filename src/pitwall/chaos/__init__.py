"""Chaos engineering: Chaos Mesh's kinds injected by pitwall itself, Chaos Toolkit experiments, a halt-all.

``__all__`` is the pillar's public interface.

Names load on first use (``pitwall.core.exports``), so ``pitwall.config`` can import the settings module cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitwall.core.exports import lazy_exports

if TYPE_CHECKING:
    from pitwall.chaos.console import EXPERIMENT_KINDS, ChaosConsole
    from pitwall.chaos.crds import chaos_mesh_crds
    from pitwall.chaos.resilience import (
        ResilienceReporter,
        find_selector,
        golden_signals,
        margin_s,
        phase_of,
        signal_selector,
        window,
    )

# the console pulls in the halt API's web framework, which ``pitwall chaos run`` must start without: lazy
_EXPORTS = {
    "EXPERIMENT_KINDS": "pitwall.chaos.console",
    "ChaosConsole": "pitwall.chaos.console",
    "chaos_mesh_crds": "pitwall.chaos.crds",
    **{n: "pitwall.chaos.resilience" for n in ("ResilienceReporter", "find_selector", "golden_signals", "margin_s",
                                               "phase_of", "signal_selector", "window")},
}

__all__ = ["EXPERIMENT_KINDS", "ChaosConsole", "ResilienceReporter", "chaos_mesh_crds", "find_selector",
           "golden_signals", "margin_s", "phase_of", "signal_selector", "window"]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
