"""A world for HTTPChaos/NetworkChaos tests: KubeAPI with Chaos Mesh's CRDs, the service proxy, the chaos
controllers feeding its fault table, Services with real HTTP/TCP servers on pod addresses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from pitwall.chaos.crds import chaos_mesh_crds
from pitwall.chaos.events import ChaosReport
from pitwall.chaos.guard import Guard, OpenIncidents
from pitwall.chaos.wiring import build_chaos_runners
from pitwall.controllers import ControllerRunner
from pitwall.incidents import ChangeLog
from pitwall.kube.wiring import build_kube
from pitwall.slo import SLOStatusQuery
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traffic import ServiceProxy
from tests.traffic.conftest import Backend, cluster_ip, endpoint, eventually, make_service, pod_ips, put_slice
from tests.traffic.mesh_helpers import App, add_pod

GROUP = "chaos-mesh.org/v1alpha1"
Obj = dict[str, Any]


class World:
    """KubeAPI with Chaos Mesh's CRDs, the service proxy, the chaos controllers feeding its fault table;
    Service ``web`` (HTTP, two pods), Service ``echo`` (plain TCP, one pod), callers ``sleep`` and ``other``."""

    def __init__(self, tmp: Path, slo_status: SLOStatusQuery | None = None,
                 open_incidents: OpenIncidents | None = None) -> None:
        self.tmp = tmp
        self.slo_status = slo_status
        self.open_incidents = open_incidents
        self.runners: list[ControllerRunner] = []
        self.apps: list[App] = []
        self.echoes: list[Backend] = []

    async def start(self) -> None:
        self.store = SqliteRevStore(self.tmp / "state.db", compact_interval_s=None)
        await self.store.start()
        self.kube = build_kube(self.store)
        self.kube.add_builtin_crds(chaos_mesh_crds())
        await self.kube.start()
        self.client = self.kube.client
        self.changes = ChangeLog(self.store)
        await self.start_plane()
        web_ips = pod_ips(2)
        self.caller_ip, self.other_ip, echo_ip = pod_ips(3)
        for i, ip in enumerate(web_ips):
            await add_pod(self.client, f"web-{i}", ip, {"app": "web"})
            self.apps.append(await App(ip, 8080, f"web-{i}").start())
        await add_pod(self.client, "echo-0", echo_ip, {"app": "echo"})
        self.echoes.append(await Backend(echo_ip, 9000, echo=True).start())
        await add_pod(self.client, "sleep", self.caller_ip, {"app": "sleep"})
        await add_pod(self.client, "other", self.other_ip, {"app": "other"})
        self.ip = cluster_ip(await make_service(self.client, "web"))
        await put_slice(self.client, "web", [endpoint(ip) for ip in web_ips])
        self.echo_ip = cluster_ip(await make_service(self.client, "echo", [{"name": "tcp", "port": 9000}]))
        await put_slice(self.client, "echo", [endpoint(echo_ip)], ports=[{"name": "tcp", "port": 9000}])
        await self.wait_endpoints()

    async def wait_endpoints(self) -> None:
        await eventually(lambda: len(self.proxy.endpoints(self.ip, 80)) == 2
                         and len(self.proxy.endpoints(self.echo_ip, 9000)) == 1
                         and self.caller_ip in self.proxy.pods)

    async def start_plane(self) -> None:
        """The proxy and the controllers, as a pitwall process starts them (a fresh, empty fault table)."""
        self.proxy = ServiceProxy(self.client, drain_timeout_s=0.5, connect_budget_s=1.0, attempt_timeout_s=0.5)
        await self.proxy.start()
        await self.proxy.wait_synced(10)
        self.report = ChaosReport(self.changes)
        self.runners = build_chaos_runners(self.client, node=None, store=self.store, report=self.report,
                                           mesh=self.proxy.faults,
                                           guard=Guard(self.client, self.slo_status, self.open_incidents))
        for r in self.runners:
            await r.start()

    async def stop_plane(self) -> None:
        for r in self.runners:
            await r.stop()
        await self.proxy.stop()

    async def stop(self) -> None:
        await self.stop_plane()
        for a in self.apps:
            await a.stop()
        for b in self.echoes:
            await b.stop()
        await self.kube.stop()
        await self.store.stop()

    def http(self, source: str | None = None) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=source or self.caller_ip)
        return httpx.AsyncClient(base_url=f"http://{self.ip}", transport=transport, timeout=10)

    async def create(self, kind: str, name: str, spec: Obj) -> Obj:
        return await self.client.create({"apiVersion": GROUP, "kind": kind,
                                         "metadata": {"name": name, "namespace": "default"}, "spec": spec})

    async def obj(self, kind: str, name: str) -> Obj | None:
        try:
            return await self.client.get(GROUP, kind, name, "default")
        except Exception:
            return None

    async def conds(self, kind: str, name: str) -> dict[str, str]:
        o = await self.obj(kind, name)
        return {c["type"]: c["status"] for c in ((o or {}).get("status") or {}).get("conditions") or []}

    async def until_conds(self, kind: str, name: str, **want: str) -> None:
        async def ok() -> bool:
            got = await self.conds(kind, name)
            return all(got.get(k) == v for k, v in want.items())
        await eventually(ok, tries=1500)

    async def until_gone(self, kind: str, name: str) -> None:
        async def gone() -> bool:
            return await self.obj(kind, name) is None
        await eventually(gone, tries=1500)

    async def delete(self, kind: str, name: str) -> None:
        await self.client.delete(GROUP, kind, name, "default")
        await self.until_gone(kind, name)
