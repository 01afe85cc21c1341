"""Container lines reach the real log store, queryable by the Kubernetes labels."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pitwall.core.labels import Matcher, MatchType
from pitwall.node.logs import LogShipper, stream_labels
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.logs_store import LogStore


@pytest.mark.timeout(30)
async def test_shipped_lines_are_queryable_in_the_log_store(tmp_path: Path) -> None:
    store = LogStore(TelemetryDB(tmp_path / "t.duckdb"), tmp_path / "wal", fsync=False)
    await store.start()
    try:
        shipper = LogShipper(store)
        pod = {"metadata": {"name": "web-1", "namespace": "shop", "labels": {"app.kubernetes.io/name": "web"}}}
        labels = stream_labels(pod, "main", "stdout", "node-a")
        now = time.time_ns()
        for i in range(3):
            shipper.add(labels, now, f"line {i}")  # same timestamp: kept in order
        await shipper.flush()
        assert shipper.pushed == 3 and shipper.dropped == 0
        streams = store.querier("default").select([Matcher(MatchType.EQUAL, "job", "shop/web")], now - 10**9,
                                                  now + 10**9)
        assert len(streams) == 1
        got = dict(streams[0].labels)
        assert got["namespace"] == "shop" and got["pod"] == "web-1" and got["container"] == "main"
        assert got["app"] == "web"
        assert sorted(streams[0].lines) == ["line 0", "line 1", "line 2"]
    finally:
        await store.stop()
