"""Consul's catalog and health views: Kubernetes Services' endpoints plus the agent's own services.

Every Kubernetes Service with Endpoints appears as a Consul service (named
as the Service in namespace ``default``, ``<name>-<namespace>`` elsewhere,
as consul-k8s' catalog sync does with its namespace suffix), one instance
per endpoint address and first port, on the node ``k8s-sync``; a ready
address is ``passing``, a not-ready one ``critical`` (check
``k8s-readiness``). Services registered through ``/v1/agent/service/
register`` are on this agent's node with their own checks. The index of
a view is the highest mod revision of what it was built from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pitwall.kube import KubeClient
from pitwall.registry.agent import AgentServices

__all__ = ["K8S_NODE", "KUBE_PREFIX", "Catalog", "Instance"]

K8S_NODE = "k8s-sync"
KUBE_PREFIX = "/registry/services/"  # Services (specs/) and Endpoints (endpoints/) in Kubernetes' etcd layout
_PASSING_NODE_CHECK = "serfHealth"


@dataclass
class Instance:
    """One service instance with its node and checks, in Consul's field names."""

    node: str
    node_address: str
    service: dict[str, Any]
    checks: list[dict[str, Any]] = field(default_factory=list)
    create_index: int = 0
    modify_index: int = 0

    @property
    def name(self) -> str:
        return str(self.service["Service"])

    def status(self) -> str:
        states = {c["Status"] for c in self.checks}
        return "critical" if "critical" in states else "warning" if "warning" in states else "passing"


def consul_name(namespace: str, name: str) -> str:
    return name if namespace == "default" else f"{name}-{namespace}"


class Catalog:
    """Builds the catalog from the Kubernetes API (when there is one) and the agent's services."""

    def __init__(self, kube: KubeClient | None, agent: AgentServices, *, node: str, node_address: str,
                 datacenter: str = "dc1") -> None:
        self.kube = kube
        self.agent = agent
        self.node = node
        self.node_address = node_address
        self.datacenter = datacenter

    async def instances(self) -> tuple[list[Instance], int]:
        kube, kidx = await self._kube_instances()
        own, aidx = await self._agent_instances()
        return kube + own, max(kidx, aidx)

    async def _kube_instances(self) -> tuple[list[Instance], int]:
        if self.kube is None:
            return [], 0
        services = await self.kube.list("v1", "Service")
        endpoints = await self.kube.list("v1", "Endpoints")
        by_key = {(e["metadata"].get("namespace", ""), e["metadata"]["name"]): e for e in endpoints.items}
        out: list[Instance] = []
        idx = 0
        for svc in services.items:
            meta = svc["metadata"]
            ns, name = meta.get("namespace", ""), meta["name"]
            ep = by_key.get((ns, name))
            idx = max(idx, int(meta.get("resourceVersion") or 0))
            if ep is None:
                continue
            rv = int(ep["metadata"].get("resourceVersion") or 0)
            idx = max(idx, rv)
            cname = consul_name(ns, name)
            for subset in ep.get("subsets") or []:
                ports = subset.get("ports") or [{}]
                port = int(ports[0].get("port") or 0)
                for ready, addrs in ((True, subset.get("addresses") or []), (False, subset.get("notReadyAddresses")
                                                                                or [])):
                    for a in addrs:
                        out.append(self._kube_instance(cname, ns, name, a, port, ready, rv))
        return out, idx

    def _kube_instance(self, cname: str, ns: str, name: str, addr: dict[str, Any], port: int, ready: bool,
                       rv: int) -> Instance:
        ip = str(addr.get("ip") or "")
        target = (addr.get("targetRef") or {}).get("name") or ip
        sid = f"{cname}-{target}"
        service = {"ID": sid, "Service": cname, "Tags": ["k8s"], "Address": ip, "Port": port,
                   "Meta": {"external-source": "kubernetes", "k8s-namespace": ns, "k8s-service-name": name}}
        check = {"Node": K8S_NODE, "CheckID": f"k8s-readiness:{sid}", "Name": "Kubernetes readiness",
                 "Status": "passing" if ready else "critical", "Notes": "",
                 "Output": "pod is ready" if ready else "pod is not ready", "ServiceID": sid,
                 "ServiceName": cname, "ServiceTags": ["k8s"], "Type": "", "CreateIndex": rv, "ModifyIndex": rv}
        return Instance(K8S_NODE, "127.0.0.1", service, [self._node_check(K8S_NODE, rv), check], rv, rv)

    def _node_check(self, node: str, rv: int) -> dict[str, Any]:
        return {"Node": node, "CheckID": _PASSING_NODE_CHECK, "Name": "Serf Health Status", "Status": "passing",
                "Notes": "", "Output": "Agent alive and reachable", "ServiceID": "", "ServiceName": "",
                "ServiceTags": [], "Type": "", "CreateIndex": rv, "ModifyIndex": rv}

    async def _agent_instances(self) -> tuple[list[Instance], int]:
        services, sidx = await self.agent.services()
        checks, cidx = await self.agent.all_checks()
        out = []
        for svc, create, mod in services:
            own = [c.to_api(self.node, (cc, cm)) | {"ServiceTags": svc["Tags"]}
                   for c, cc, cm in checks if c.service_id == svc["ID"]]
            out.append(Instance(self.node, self.node_address, svc, [self._node_check(self.node, create), *own],
                                create, mod))
        return out, max(sidx, cidx)

    # ---- Consul's shapes ----------------------------------------------------------------------------

    def catalog_entry(self, i: Instance) -> dict[str, Any]:
        s = i.service
        return {"ID": "", "Node": i.node, "Address": i.node_address, "Datacenter": self.datacenter,
                "TaggedAddresses": {"lan": i.node_address, "wan": i.node_address}, "NodeMeta": {},
                "ServiceKind": "", "ServiceID": s["ID"], "ServiceName": s["Service"], "ServiceTags": s["Tags"],
                "ServiceAddress": s["Address"], "ServiceMeta": s["Meta"], "ServicePort": s["Port"],
                "ServiceWeights": {"Passing": 1, "Warning": 1}, "ServiceEnableTagOverride": False,
                "CreateIndex": i.create_index, "ModifyIndex": i.modify_index}

    def health_entry(self, i: Instance) -> dict[str, Any]:
        s = i.service
        return {"Node": {"ID": "", "Node": i.node, "Address": i.node_address, "Datacenter": self.datacenter,
                         "TaggedAddresses": {"lan": i.node_address, "wan": i.node_address}, "Meta": {},
                         "CreateIndex": i.create_index, "ModifyIndex": i.modify_index},
                "Service": {**s, "Kind": "", "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
                            "CreateIndex": i.create_index, "ModifyIndex": i.modify_index},
                "Checks": i.checks}
