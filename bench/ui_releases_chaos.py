"""Server-side cost of the releases and chaos pages: the time to answer ``/releases``, one Canary's page,
``/chaos`` and one experiment's page, with many objects in the Kubernetes API.

    .venv/bin/python bench/ui_releases_chaos.py [--canaries 100] [--experiments 200] [--rounds 20]

A KubeAPI over SQLite with Flagger's, Istio's and Chaos Mesh's CRDs in one process, the UI router on an
in-process ASGI client (no browser: the charts' data requests are ``/ui/api/chart``, measured by the PromQL
benches). Prints p50/p99/max per page. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import httpx
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.ui.test_chaos import http_chaos
from tests.ui.test_releases import canary

from pitwall.chaos import ChaosConsole, chaos_mesh_crds
from pitwall.chaos.events import ChaosReport
from pitwall.incidents import ChangeLog
from pitwall.kube.wiring import build_kube
from pitwall.metrics import TargetsSnapshot
from pitwall.releases import ReleasesConsole, flagger_crds
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traffic.istio_crds import istio_crds
from pitwall.ui.routes import ui_router
from pitwall.ui.settings import UISettings
from pitwall.ui.web import UIDeps


async def _seed(client: Any, canaries: int, experiments: int) -> None:
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "test"}})
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    for i in range(canaries):
        obj = canary()
        obj["metadata"]["name"] = f"app-{i}"
        obj["spec"]["targetRef"]["name"] = f"app-{i}"
        del obj["status"]
        made = await client.create(obj)
        made["status"] = {"phase": "Progressing", "canaryWeight": 20, "lastTransitionTime": "2026-01-01T00:00:00Z"}
        await client.update_status(made)
    now = time.time()
    for i in range(experiments):
        obj = http_chaos(f"exp-{i}", now - 600 - i, recovered=i % 2 == 0, desired="Stop" if i % 2 == 0 else "Run")
        obj["status"]["experiment"]["containerRecords"][0]["selectorKey"] = "."
        status = obj.pop("status")
        obj["metadata"].pop("creationTimestamp")
        made = await client.create(obj)
        made["status"] = status
        await client.update(made)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--canaries", type=int, default=100)
    ap.add_argument("--experiments", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        store = SqliteRevStore(Path(d) / "state.db", compact_interval_s=None)
        await store.start()
        api = build_kube(store)
        api.add_builtin_crds([*flagger_crds(), *istio_crds(), *chaos_mesh_crds()])
        await api.start()
        try:
            await _seed(api.client, a.canaries, a.experiments)
            deps = UIDeps(settings=UISettings(), metrics=cast(Any, None), targets=lambda: TargetsSnapshot([], [], {}),
                          traces=None, logs=None, alerts=None, dashboards=cast(Any, None),
                          releases=ReleasesConsole(api.client), chaos=ChaosConsole(api.client, ChaosReport()),
                          changes=ChangeLog(store))
            app = FastAPI()
            app.include_router(ui_router(deps))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c:
                for path in ("/releases", "/releases/test/app-0", "/chaos", "/chaos/shop/HTTPChaos/exp-0"):
                    times = []
                    for _ in range(a.rounds):
                        t = time.perf_counter()
                        r = await c.get(path)
                        times.append((time.perf_counter() - t) * 1000)
                        assert r.status_code == 200, (path, r.status_code)
                    times.sort()
                    print(f"{path:32} p50 {statistics.median(times):7.1f} ms  p99 {times[int(len(times) * 0.99) - 1]:7.1f}"
                          f" ms  max {times[-1]:7.1f} ms  ({len(r.content) // 1024} KiB)")
        finally:
            await api.stop()
            await store.stop()


if __name__ == "__main__":
    print(f"{sys.argv[0]}: canaries and experiments in a SQLite KubeAPI, pages over in-process ASGI")
    asyncio.run(main())
