"""Chaos controllers over a KubeAPI with pitwall's node running real pods (the ``env`` fixture in conftest)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, Self

from pitwall.chaos.crds import chaos_mesh_crds
from pitwall.chaos.events import ChaosReport
from pitwall.chaos.wiring import build_chaos_runners
from pitwall.controllers import ControllerRunner
from pitwall.controllers.wiring import build_controllers
from pitwall.incidents import ChangeLog
from pitwall.kube.wiring import build_kube
from pitwall.node import Kubelet
from pitwall.node.runtime import kill_leftovers
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traffic import FaultTable
from tests.node.conftest import FAST, NODE, Sinks

SLEEPER = "import time\nwhile True: time.sleep(0.2)\n"


class Env:
    """A KubeAPI over SQLite, pitwall's node, the workload controllers and the chaos controllers; an async
    context manager. ``service_cidr`` and ``pod_cidr`` give it address ranges of its own."""

    def __init__(self, tmp: Path, *, service_cidr: str = "", pod_cidr: str = "") -> None:
        self.tmp = tmp
        self.service_cidr, self.pod_cidr = service_cidr, pod_cidr
        self.runners: list[ControllerRunner] = []
        self.mesh: FaultTable | None = None  # the fault table HTTPChaos and NetworkChaos go into, if any

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.store = SqliteRevStore(self.tmp / "state.db", compact_interval_s=None)
        await self.store.start()
        self.kube = build_kube(self.store, service_cidr=self.service_cidr)
        self.kube.add_builtin_crds(chaos_mesh_crds())
        await self.kube.start()
        self.client = self.kube.client
        self.sinks = Sinks()
        self.kubelet = Kubelet(self.kube, data_dir=self.tmp / "node", logs=self.sinks, metrics=self.sinks,
                               node_name=NODE, pod_cidr=self.pod_cidr, **FAST)
        await self.kubelet.start()
        await self.kubelet.wait_synced()
        self.workloads = build_controllers(self.kube, election=None)
        await self.workloads.start()
        self.changes = ChangeLog(self.store)
        await self.start_chaos()

    async def start_chaos(self) -> None:
        self.report = ChaosReport(self.changes)
        self.runners = build_chaos_runners(self.client, node=self.kubelet, store=self.store, report=self.report,
                                           mesh=self.mesh)
        for r in self.runners:
            await r.start()

    async def stop_chaos(self) -> None:
        for r in self.runners:
            await r.stop()

    async def stop(self) -> None:
        await self.stop_chaos()
        await self.workloads.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.kubelet.stop(), 30)
        kill_leftovers(self.tmp / "node" / "pods")
        await self.kube.stop()
        await self.store.stop()

    async def chaos(self, kind: str, name: str) -> dict[str, Any]:
        return await self.client.get("chaos-mesh.org/v1alpha1", kind, name, "default")

    async def cond(self, kind: str, name: str) -> dict[str, str]:
        with contextlib.suppress(Exception):
            obj = await self.chaos(kind, name)
            return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
        return {}

    async def gone(self, kind: str, name: str) -> bool:
        try:
            await self.chaos(kind, name)
        except Exception:
            return True
        return False
