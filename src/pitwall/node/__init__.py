"""The node: the kubelet of pitwall, running a Pod's containers as host processes.

``__all__`` is the pillar's public interface.
"""

from __future__ import annotations

from pitwall.node.kubelet import POD_NETWORK, Kubelet
from pitwall.node.wiring import build_node

__all__ = ["POD_NETWORK", "Kubelet", "build_node"]
