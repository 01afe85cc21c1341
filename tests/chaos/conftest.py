"""A started KubeAPI with Chaos Mesh's CRDs installed, over SQLite in the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pitwall.chaos.crds import chaos_mesh_crds
from pitwall.kube import KubeAPI
from tests.chaos.mesh_world import World
from tests.chaos.pod_env import Env
from tests.conftest import SHARED
from tests.kube_fixture import started_kube

CHAOS_MESH = SHARED / "conformance" / "wave2" / "chaos-mesh"
CTK_FIXTURES = SHARED / "conformance" / "wave2" / "chaostoolkit" / "tests" / "fixtures"


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with started_kube(tmp_path, chaos_mesh_crds()) as api:
        yield api


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """The service proxy and the chaos controllers over one KubeAPI, Services with real servers behind them."""
    w = World(tmp_path)
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """The chaos controllers over a KubeAPI whose node runs real pods (and the workload controllers)."""
    async with Env(tmp_path) as e:
        yield e
