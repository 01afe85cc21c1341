"""A started KubeAPI with Chaos Mesh's CRDs installed, over SQLite in the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pitwall.chaos.crds import chaos_mesh_crds
from pitwall.kube import KubeAPI
from pitwall.kube.wiring import build_kube
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.chaos.mesh_world import World
from tests.conftest import SHARED

CHAOS_MESH = SHARED / "conformance" / "wave2" / "chaos-mesh"
CTK_FIXTURES = SHARED / "conformance" / "wave2" / "chaostoolkit" / "tests" / "fixtures"


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    api.add_builtin_crds(chaos_mesh_crds())
    await api.start()
    try:
        yield api
    finally:
        await api.stop()
        await store.stop()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """The service proxy and the chaos controllers over one KubeAPI, Services with real servers behind them."""
    w = World(tmp_path)
    await w.start()
    try:
        yield w
    finally:
        await w.stop()
