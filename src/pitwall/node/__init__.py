"""The node: the kubelet of pitwall, running a Pod's containers as host processes.

``__all__`` is the pillar's public interface.
"""

from __future__ import annotations

from pitwall.node.kubelet import POD_NETWORK, Kubelet
from pitwall.node.wiring import NodePart, build_node, build_node_part

__all__ = ["POD_NETWORK", "Kubelet", "NodePart", "build_node", "build_node_part"]
