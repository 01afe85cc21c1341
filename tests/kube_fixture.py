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


def extras(got: Any, want: Any, path: str) -> set[str]:
    """``key=value`` present in ``got`` but not ``want`` (what the server filled in); fails on any changed or
    missing value, naming its path. With ``schema_defaults``: an object round-trips unchanged but for them."""
    if isinstance(want, dict):
        assert isinstance(got, dict), path
        out: set[str] = set()
        for k, v in want.items():
            assert k in got, f"{path}.{k} dropped"
            out |= extras(got[k], v, f"{path}.{k}")
        return out | {f"{k}={got[k]}" for k in got.keys() - want.keys()}
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        return set().union(*(extras(g, w, path) for g, w in zip(got, want, strict=True)))
    assert got == want, path
    return set()


def schema_defaults(crds: Sequence[dict[str, Any]], kind: str | None = None) -> set[str]:
    """``key=value`` of every property with a ``default`` in the CRDs' schemas (of ``kind`` only, if given)."""
    out: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in (node.get("properties") or {}).items():
                if isinstance(v, dict) and "default" in v:
                    out.add(f"{k}={v['default']}")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for crd in crds:
        if kind is None or crd["spec"]["names"]["kind"] == kind:
            walk(crd["spec"]["versions"])
    return out
