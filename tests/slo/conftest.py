"""A started KubeAPI (SQLite, no HTTP) with the SLO CRDs built in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pitwall.kube import KubeAPI
from pitwall.kube.wiring import build_kube
from pitwall.slo.wiring import builtin_crds
from pitwall.storage.revstore.sqlite import SqliteRevStore


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    api.add_builtin_crds(builtin_crds())
    await api.start()
    try:
        yield api
    finally:
        await api.stop()
        await store.stop()
