"""build_controllers / build_controllers_part: every registered controller, gated by the election when shared."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pitwall.controllers.wiring import RECONCILERS, build_controllers, build_controllers_part
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.kube import KubeAPI
from tests.controllers.conftest import eventually


def settings(backend: str) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(backend=backend, election_ttl=2_000), listen="127.0.0.1:0")


def test_registered_controllers() -> None:
    names = {reg.make.__name__ for reg in RECONCILERS}
    assert {"ReplicaSetController", "EndpointsReconciler", "JobController"} <= names


@pytest.mark.timeout(20)
async def test_manager_runs_every_registered_controller(kube: KubeAPI) -> None:
    m = build_controllers(kube, election=None)
    assert {r.name for r in m.runners} >= {"replicaset-controller", "deployment-controller"}
    part = build_controllers_part(kube, settings("sqlite"))
    assert list(part.components()) == [part.manager] and part.election is None
    part.register_metrics(SelfMetrics())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("backend", ["etcd", "postgres"])  # the stores several servers may share
async def test_shared_store_runs_controllers_on_the_leader(kube: KubeAPI, backend: str) -> None:
    part = build_controllers_part(kube, settings(backend))  # the election works over any store
    assert part.election is not None
    comps = list(part.components())
    for c in comps:
        await c.start()
    try:
        async def leading() -> bool:
            return part.manager.leading and all(r.running for r in part.manager.runners)

        await eventually(leading)
    finally:
        for c in reversed(comps):
            await c.stop()
    assert not part.manager.leading
