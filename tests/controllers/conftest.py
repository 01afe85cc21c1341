"""A started KubeAPI over SQLite in the test's loop, and helpers to wait on controllers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from pitwall.kube import KubeAPI
from pitwall.kube.wiring import build_kube
from pitwall.storage.revstore.sqlite import SqliteRevStore


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    """A started KubeAPI over a fresh SQLite store (no HTTP)."""
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    await api.start()
    try:
        yield api
    finally:
        await api.stop()
        await store.stop()


async def eventually(check: Callable[[], Awaitable[bool]], *, tries: int = 400, every_s: float = 0.02) -> None:
    """Wait (bounded) until ``check()`` is true; fail with the last state otherwise."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(every_s)
    raise AssertionError("condition not reached")
