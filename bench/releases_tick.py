"""Canary controller cost: the time of one analysis tick (Flagger's advanceCanary) over the Kubernetes API.

    .venv/bin/python bench/releases_tick.py [--canaries 20]

A KubeAPI over SQLite with Flagger's and Istio's CRDs, in one process (no
HTTP, no pods: Deployments are marked rolled out between ticks, as the
kubelet and Deployment controller would). Each Canary is initialised, then a
new revision is promoted through five weight steps to Succeeded, with both
built-in metric checks answered by a constant PromQL stand-in (the query
engine's own cost is measured by bench/promql_queries.py). Prints p50/p99/max
of a tick by kind of tick. Flagger documents no figure; its ticker runs a
Canary every ``analysis.interval`` (10s at least). Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitwall.kube.wiring import build_kube
from pitwall.releases.checks import MetricContext
from pitwall.releases.controller import CanaryController
from pitwall.releases.crds import flagger_crds
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traffic.istio_crds import istio_crds


@dataclass
class _Result:
    result_type: str
    values: list[list[float]]


def _instant(expr: str, at_ms: int, tenant: str = "default") -> _Result:
    return _Result("vector", [[100.0 if "response_code" in expr else 20.0]])


async def _roll_out(client: Any) -> None:
    for d in (await client.list("apps/v1", "Deployment")).items:
        n = d["spec"].get("replicas", 1)
        st = {"observedGeneration": d["metadata"].get("generation", 1), "replicas": n, "updatedReplicas": n,
              "readyReplicas": n, "availableReplicas": n}
        if d.get("status") != st:
            d["status"] = st
            await client.update_status(d)


def _objects(name: str) -> list[dict[str, Any]]:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "app", "image": "podinfo:v1"}]}}}}
    cd = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": name, "namespace": "default"},
          "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                   "service": {"port": 80},
                   "analysis": {"interval": "1s", "threshold": 2, "stepWeight": 20, "maxWeight": 100, "metrics": [
                       {"name": "request-success-rate", "thresholdRange": {"min": 99}},
                       {"name": "request-duration", "thresholdRange": {"max": 500}}]}}}
    return [dep, cd]


async def run(canaries: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteRevStore(Path(tmp) / "state.db", compact_interval_s=None)
        await store.start()
        kube = build_kube(store)
        kube.add_builtin_crds(flagger_crds())
        kube.add_builtin_crds(istio_crds())
        await kube.start()
        now = [0.0]
        ctl = CanaryController(kube.client, metrics=MetricContext(instant=_instant, client=kube.client),
                               clock=lambda: now[0])
        times: dict[str, list[float]] = {}
        try:
            names = [f"app{i}" for i in range(canaries)]
            for n in names:
                for obj in _objects(n):
                    await kube.client.create(obj)
            for n in names:
                for _ in range(20):
                    now[0] += 3600
                    await _roll_out(kube.client)
                    before = (await kube.client.get("flagger.app/v1beta1", "Canary", n, "default")).get("status") or {}
                    t0 = time.perf_counter()
                    await ctl.reconcile(f"default/{n}")
                    times.setdefault(before.get("phase") or "(new)", []).append(time.perf_counter() - t0)
                    after = await kube.client.get("flagger.app/v1beta1", "Canary", n, "default")
                    phase = (after.get("status") or {}).get("phase")
                    if phase == "Initialized" and before.get("phase") == "Initialized":
                        d = await kube.client.get("apps/v1", "Deployment", n, "default")
                        d["spec"]["template"]["spec"]["containers"][0]["image"] = "podinfo:v2"
                        await kube.client.update(d)
                    if phase == "Succeeded":
                        break
                else:
                    raise RuntimeError(f"{n} did not succeed")
        finally:
            await kube.stop()
            await store.stop()
        return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--canaries", type=int, default=20)
    args = ap.parse_args()
    times = asyncio.run(run(args.canaries))
    for phase, ts in times.items():
        ts = sorted(ts)
        p99 = ts[min(len(ts) - 1, int(len(ts) * 0.99))]
        print(f"tick in {phase:<12} n={len(ts):4d} p50 {statistics.median(ts) * 1000:6.1f} ms  "
              f"p99 {p99 * 1000:6.1f} ms  max {ts[-1] * 1000:6.1f} ms")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
