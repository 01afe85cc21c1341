"""The data plane: the service proxy on every Service's ClusterIP (later the mesh and the gateway)."""

from pitwall.traffic.balancer import Backend, PortBalancer
from pitwall.traffic.faults import FaultTable, HttpFault, HttpMessage, Link, NetFault
from pitwall.traffic.proxy import PortSpec, ServiceProxy, ServiceStats
from pitwall.traffic.wiring import TrafficPart, build_proxy, build_traffic_part

__all__ = [
    "Backend",
    "FaultTable",
    "HttpFault",
    "HttpMessage",
    "Link",
    "NetFault",
    "PortBalancer",
    "PortSpec",
    "ServiceProxy",
    "ServiceStats",
    "TrafficPart",
    "build_proxy",
    "build_traffic_part",
]
