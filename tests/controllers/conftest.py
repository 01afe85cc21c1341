"""A started KubeAPI over SQLite in the test's loop, and helpers to wait on controllers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from pitwall.controllers.loop import ControllerRunner, Reconciler
from pitwall.controllers.wiring import build_controllers
from pitwall.kube import Conflict, KubeAPI, KubeClient, MetricsProvider, NotFoundError
from tests.kube.conftest import KubeServer
from tests.kube_fixture import started_kube


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    """A started KubeAPI over a fresh SQLite store (no HTTP)."""
    async with started_kube(tmp_path) as api:
        yield api


async def eventually(check: Callable[[], Awaitable[bool]], *, tries: int = 400, every_s: float = 0.02) -> None:
    """Wait (bounded) until ``check()`` is true; fail with the last state otherwise."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(every_s)
    raise AssertionError("condition not reached")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def set_ready(client: KubeClient, pod: dict[str, Any], ready: bool = True, *,
                    since: str | None = None, restarts: int = 0) -> None:
    """What a kubelet would write: Running with a Ready condition (``ready``) since ``since`` (now)."""
    m = pod["metadata"]
    for _ in range(10):
        try:
            cur = await client.get("v1", "Pod", m["name"], m["namespace"])
        except NotFoundError:
            return
        cur["status"] = {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "lastTransitionTime": since or _now()}],
            "containerStatuses": [{"name": "c", "ready": ready, "restartCount": restarts, "image": "x",
                                   "imageID": "", "started": True, "state": {"running": {"startedAt": _now()}}}],
        }
        try:
            await client.update_status(cur)
            return
        except NotFoundError:  # deleted between the read and the write (a rollout scaling it down)
            return
        except Conflict:
            continue


class Kubelet:
    """A simulated kubelet: marks every new pod (of ``namespace``) ready, optionally only when ``admit`` says."""

    def __init__(self, client: KubeClient, namespace: str = "default") -> None:
        self.client = client
        self.namespace = namespace
        self.admit: Callable[[dict[str, Any]], bool] = lambda pod: True
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Kubelet:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sweep(self) -> None:
        for pod in (await self.client.list("v1", "Pod", self.namespace)).items:
            if pod["metadata"].get("deletionTimestamp") or pod.get("status", {}).get("phase") == "Running":
                continue
            if self.admit(pod):
                await set_ready(self.client, pod)

    async def _run(self) -> None:
        while True:
            await self.sweep()
            await asyncio.sleep(0.02)


async def run_controller(client: KubeClient, reconciler: Reconciler) -> ControllerRunner:
    r = ControllerRunner(client, reconciler, workers=2, resync_s=0)
    await r.start()
    await asyncio.wait_for(r.synced.wait(), 5)
    return r


class ControllerServer(KubeServer):
    """A live Kubernetes API (kubectl's peer) whose lifespan also runs the controllers and a simulated kubelet.

    ``kubelet`` makes the kubelet for the API's client; ``metrics``, if given, makes the provider served as
    metrics.k8s.io (set before the controllers start, as the HPA controller reads it).
    """

    def __init__(self, data: Path, kubelet: Callable[[KubeClient], Kubelet] = Kubelet,
                 metrics: Callable[[KubeClient], MetricsProvider] | None = None) -> None:
        super().__init__(data)
        inner = self.app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with inner(app):
                if metrics is not None:
                    self.kube.set_metrics_provider(metrics(self.kube.client))
                manager = build_controllers(self.kube, election=None)
                await manager.start()
                try:
                    async with kubelet(self.kube.client):
                        yield
                finally:
                    await manager.stop()

        self.app.router.lifespan_context = lifespan
