"""A started KubeAPI over a fresh SQLite store in the test's loop, with a capability's CRDs built in: the
fixture every capability's tests build on (``async with started_kube(tmp_path, my_crds()) as api``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pitwall.kube import KubeAPI
from pitwall.kube.wiring import build_kube
from pitwall.storage.revstore.sqlite import SqliteRevStore


@asynccontextmanager
async def started_kube(tmp_path: Path, *crds: Sequence[dict[str, Any]]) -> AsyncIterator[KubeAPI]:
    """The API with each list of CRDs installed as the server installs them, stopped afterwards."""
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    for c in crds:
        api.add_builtin_crds(list(c))
    await api.start()
    try:
        yield api
    finally:
        await api.stop()
        await store.stop()
