"""Fault latency: a chaos object created -> ``AllInjected``, and paused -> ``AllRecovered`` (p50/max).

    .venv/bin/python bench/chaos_faults.py [--rounds 10]

A KubeAPI over SQLite, a kubelet and the chaos controllers in one process (no
HTTP). Each round runs a one-replica Deployment's pod and, in turn, a PodChaos
pod-kill (created -> injected, then -> the Deployment's replacement running),
a PodChaos pod-failure (created -> injected, paused -> recovered and running
again) and, when Debian's stress-ng is installed, a StressChaos (created ->
injected, paused -> recovered). Chaos Mesh documents no latency target; its
controllers requeue on events as these do. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pitwall.chaos.crds import chaos_mesh_crds
from pitwall.chaos.events import ChaosReport
from pitwall.chaos.wiring import build_chaos_runners
from pitwall.controllers.wiring import build_controllers
from pitwall.kube.wiring import build_kube
from pitwall.node import Kubelet
from pitwall.storage.revstore.sqlite import SqliteRevStore

API = "chaos-mesh.org/v1alpha1"
SLEEPER = "import time\nwhile True: time.sleep(0.5)\n"


async def _until(pred: Callable[[], Awaitable[Any]], timeout: float = 30) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await pred():
            return time.monotonic() - t0
        await asyncio.sleep(0.005)
    raise TimeoutError("condition not met")


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


async def main(rounds: int) -> None:
    data = Path(tempfile.mkdtemp())
    store = SqliteRevStore(data / "state.db", compact_interval_s=None)
    await store.start()
    kube = build_kube(store)
    kube.add_builtin_crds(chaos_mesh_crds())
    await kube.start()
    client = kube.client
    kubelet = Kubelet(kube, data_dir=data / "node", node_name="bench", max_shutdown_grace_s=1, sample_interval_s=0.2)
    await kubelet.start()
    workloads = build_controllers(kube, election=None)
    await workloads.start()
    runners = build_chaos_runners(client, node=kubelet, store=store, report=ChaosReport())
    for r in runners:
        await r.start()

    async def running() -> list[str]:
        items = (await client.list("v1", "Pod", "default", label_selector="app=bench")).items
        return [p["metadata"]["name"] for p in items if not p["metadata"].get("deletionTimestamp") and
                all("running" in (c.get("state") or {}) for c in (p.get("status") or {}).get("containerStatuses")
                    or [{}])]

    def cond(kind: str, name: str, typ: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            obj = await client.get(API, kind, name, "default")
            return any(c["type"] == typ and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions")
                       or [])
        return check

    await client.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bench", "namespace": "default"},
                         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "bench"}},
                                  "template": {"metadata": {"labels": {"app": "bench"}},
                                               "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                                                   {"name": "main", "image": "python",
                                                    "command": [sys.executable, "-c", SLEEPER]}]}}}})
    figures: dict[str, list[float]] = {}

    def add(k: str, v: float) -> None:
        figures.setdefault(k, []).append(v)

    kinds = [("PodChaos", {"action": "pod-failure", "mode": "one"}, "pod-failure")]
    if shutil.which("stress-ng"):
        kinds.append(("StressChaos", {"mode": "one", "stressors": {"cpu": {"workers": 1, "load": 20}}}, "stress"))
    try:
        for i in range(rounds):
            await _until(lambda: _one(running()))
            name = f"kill-{i}"
            before = set(await running())
            t0 = time.monotonic()
            await client.create({"apiVersion": API, "kind": "PodChaos", "metadata": {"name": name, "namespace": "default"},
                                 "spec": {"action": "pod-kill", "mode": "one",
                                          "selector": {"labelSelectors": {"app": "bench"}}}})
            await _until(cond("PodChaos", name, "AllInjected"))
            add("pod-kill: created -> injected", time.monotonic() - t0)

            async def replaced(before: set[str] = before) -> bool:
                now = set(await running())
                return bool(now) and not (now & before)
            await _until(replaced)
            add("pod-kill: created -> replacement running", time.monotonic() - t0)
            await client.delete(API, "PodChaos", name, "default")
            for kind, spec, label in kinds:
                fname = f"{label}-{i}"
                t0 = time.monotonic()
                await client.create({"apiVersion": API, "kind": kind, "metadata": {"name": fname, "namespace": "default"},
                                     "spec": {**spec, "selector": {"labelSelectors": {"app": "bench"}}}})
                add(f"{label}: created -> injected", await _until(cond(kind, fname, "AllInjected")))
                t0 = time.monotonic()
                await client.patch(API, kind, fname,
                                   {"metadata": {"annotations": {"experiment.chaos-mesh.org/pause": "true"}}},
                                   namespace="default")
                add(f"{label}: paused -> recovered", await _until(cond(kind, fname, "AllRecovered")))
                await client.delete(API, kind, fname, "default")
    finally:
        for r in runners:
            await r.stop()
        await workloads.stop()
        await kubelet.stop()
        await kube.stop()
        await store.stop()
        shutil.rmtree(data, ignore_errors=True)
    for k, xs in figures.items():
        print(f"{k:45s} n={len(xs):3d} p50={_pct(xs, 0.5) * 1000:7.1f} ms  max={max(xs) * 1000:7.1f} ms")


async def _one(coro: Awaitable[list[str]]) -> bool:
    return len(await coro) == 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=10)
    asyncio.run(main(ap.parse_args().rounds))
