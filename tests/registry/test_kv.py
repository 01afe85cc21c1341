"""Consul KV through py-consul against a live pitwall (SQLite store): what is not per backend
(the cases both backends share are in test_kv_backends.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import consul
import httpx
import pytest
from consul.exceptions import ACLPermissionDenied, ConsulException

from pitwall.config import load_settings
from pitwall.incidents import ChangeEvent, ChangeLog
from pitwall.registry.history import ConfigHistory
from pitwall.registry.kv import KVStore
from pitwall.server import create_app
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.conftest import LiveServer
from tests.registry.conftest import ADMIN, READER, client_for

pytestmark = pytest.mark.timeout(60)


def test_raw_and_headers(server: LiveServer, c: consul.Consul) -> None:
    c.kv.put("raw/k", b"\x00\x01bytes")
    r = httpx.get(f"{server.url}/v1/kv/raw/k?raw", headers={"X-Consul-Token": ADMIN})
    assert r.content == b"\x00\x01bytes" and r.headers["content-type"].startswith("text/plain")
    assert int(r.headers["X-Consul-Index"]) > 0 and r.headers["X-Consul-KnownLeader"] == "true"
    assert r.headers["X-Consul-LastContact"] == "0"


def test_tokens_and_scopes(server: LiveServer) -> None:
    reader = client_for(server, READER)
    client_for(server).kv.put("scoped", "v")
    assert reader.kv.get("scoped")[1]["Value"] == b"v"
    with pytest.raises((ACLPermissionDenied, ConsulException)):
        reader.kv.put("scoped", "w")
    r = httpx.get(f"{server.url}/v1/kv/scoped?token={READER}")
    assert r.status_code == 200
    r = httpx.get(f"{server.url}/v1/kv/scoped", headers={"Authorization": f"Bearer {READER}"})
    assert r.status_code == 200
    assert httpx.get(f"{server.url}/v1/kv/scoped").status_code == 401
    assert httpx.get(f"{server.url}/v1/kv/scoped", headers={"X-Consul-Token": "wrong-token-0000000000"}
                     ).status_code == 401
    # X-Consul-Token is only for Consul's paths
    assert httpx.get(f"{server.url}/api/v1/query?query=1", headers={"X-Consul-Token": ADMIN}).status_code == 401


def test_history_records_who_and_what(server: LiveServer, c: consul.Consul) -> None:
    c.kv.put("hist/k", "one")
    c.kv.put("hist/k", "two")
    c.kv.delete("hist/k")
    r = httpx.get(f"{server.url}/api/config/v1/history", params={"key": "hist/k"},
                  headers={"Authorization": f"Bearer {ADMIN}"})
    changes = r.json()["changes"]
    assert [(ch["Old"], ch["New"]) for ch in changes] == [(None, "b25l"), ("b25l", "dHdv"), ("dHdv", None)]
    assert {ch["Who"] for ch in changes} == {"ops"}
    revs = [ch["Revision"] for ch in changes]
    assert revs == sorted(revs) and len(set(revs)) == 3


def test_config_history_cli(server: LiveServer, c: consul.Consul) -> None:
    c.kv.put("cli/timeout", "5s")
    c.kv.put("cli/timeout", "10s")
    env = dict(os.environ, PITWALL_URL=server.url, PITWALL_TOKEN=ADMIN)
    out = subprocess.run([sys.executable, "-m", "pitwall.cli.main", "config", "history", "cli/timeout"],
                         capture_output=True, text=True, env=env, timeout=60, check=True).stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(r[2], r[3], r[4]) for r in rows] == [("ops", "(none)", "5s"), ("ops", "5s", "10s")]
    js = subprocess.run([sys.executable, "-m", "pitwall.cli.main", "config", "history", "cli/timeout", "-o", "json"],
                        capture_output=True, text=True, env=env, timeout=60, check=True).stdout
    assert [ch["Revision"] for ch in json.loads(js)] == [int(r[0]) for r in rows]
    missing = subprocess.run([sys.executable, "-m", "pitwall.cli.main", "config", "history", "cli/none"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 1 and "no recorded changes" in missing.stderr


async def test_kv_changes_are_change_events(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as h:
            before = time.time_ns()
            assert (await h.put("/v1/kv/events/flag", content=b"on")).json() is True
            answered = time.time_ns()
            index = int((await h.get("/v1/kv/events/flag")).headers["X-Consul-Index"])
        store = app.state.components.control_plane.kube.store
        mine: list[ChangeEvent] = []
        deadline = time.monotonic() + 10
        while not mine and time.monotonic() < deadline:  # written after the change, batched (EVENT_LINGER_S)
            await asyncio.sleep(0.02)
            events = await ChangeLog(store).between(0, time.time_ns() + 1)
            mine = [e for e in events if e.details.get("key") == "events/flag"]
        assert len(mine) == 1 and mine[0].kind == "config" and mine[0].source == "consul-kv"
        assert mine[0].who == "anonymous" and mine[0].summary == "Consul KV events/flag created"
        assert before <= mine[0].ts_ns <= answered  # stamped with the change's time, not the batch's
        stored = (await store.range(ChangeLog(store).prefix)).kvs
        assert [kv.mod_revision > index for kv in stored if kv.value == mine[0].to_json()] == [True]


async def test_change_events_of_a_burst_share_commits_and_a_stop_writes_what_waits(tmp_path: Path) -> None:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    changes = ChangeLog(store)
    history = ConfigHistory(store, changes)
    kv = KVStore(store, history)
    try:
        await asyncio.gather(*(kv.put(f"burst/{i}", b"v", who="t") for i in range(40)))
        written = await store.revision()
        deadline = time.monotonic() + 10
        while len(await changes.between(0, time.time_ns() + 1)) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        events = (await store.range(changes.prefix)).kvs
        assert len(events) == 40
        assert len({e.mod_revision for e in events}) <= 2  # one commit per batch, not one per change
        assert await store.revision() - written <= 2
        await kv.put("last/one", b"v", who="t")
        await history.stop()  # before the linger is over: written now, not lost
        assert len((await store.range(changes.prefix)).kvs) == 41
    finally:
        await store.stop()


def _cli(server: LiveServer, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PITWALL_URL=server.url, PITWALL_TOKEN=ADMIN)
    return subprocess.run([sys.executable, "-m", "pitwall.cli.main", "config", *args], capture_output=True,
                          text=True, env=env, timeout=60, check=check)


def test_config_diff_and_rollback_cli(server: LiveServer, c: consul.Consul) -> None:
    c.kv.put("rb/a", "1")
    c.kv.put("rb/b", "x")
    r1 = int(c.kv.get("rb/b")[0])
    c.kv.put("rb/a", "2")
    c.kv.delete("rb/b")
    c.kv.put("rb/c", "new")
    r2 = int(c.kv.get("rb/c")[0])
    changes = json.loads(_cli(server, "diff", str(r1), str(r2), "--prefix", "rb/", "-o", "json").stdout)
    assert [(ch["Key"], ch["Old"], ch["New"]) for ch in changes] == [
        ("rb/a", "MQ==", "Mg=="), ("rb/b", "eA==", None), ("rb/c", None, "bmV3")]
    out = _cli(server, "rollback", "rb/a", "--to", str(r1)).stdout
    assert "restored to its value at revision" in out and c.kv.get("rb/a")[1]["Value"] == b"1"
    _cli(server, "rollback", "rb/c", "--to", str(r2))  # the value it got at r2: unchanged
    assert c.kv.get("rb/c")[1]["Value"] == b"new"
    hist = json.loads(_cli(server, "history", "rb/a", "-o", "json").stdout)
    assert [base64.b64decode(h["New"]) for h in hist] == [b"1", b"2", b"1"]  # the rollback is a change too
    bad = _cli(server, "rollback", "rb/never", "--to", str(r1), check=False)
    assert bad.returncode == 1 and "no recorded change" in bad.stderr
    future = _cli(server, "diff", "1", str(r2 + 10_000), check=False)
    assert future.returncode == 1 and "HTTP 400" in future.stderr
