"""A started KubeAPI with Flagger's CRDs installed, over SQLite in the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pitwall.kube import KubeAPI
from pitwall.kube.wiring import build_kube
from pitwall.releases.crds import flagger_crds
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.conftest import SHARED

FLAGGER = SHARED / "conformance" / "wave2" / "flagger"


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    api.add_builtin_crds(flagger_crds())
    await api.start()
    try:
        yield api
    finally:
        await api.stop()
        await store.stop()


@pytest.fixture
async def mesh_kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    """Flagger's CRDs and Istio's, as the server has them."""
    from pitwall.traffic.istio_crds import istio_crds

    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    api.add_builtin_crds(flagger_crds())
    api.add_builtin_crds(istio_crds())
    await api.start()
    try:
        yield api
    finally:
        await api.stop()
        await store.stop()
