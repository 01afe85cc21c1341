"""Both backends behind one fixture: a fresh SQLite store, or a real etcd started for the session.

etcd runs from Debian's ``etcd-server`` package (``/usr/bin/etcd``) on
127.0.0.1 with random ports and a temporary data directory; its election
timeout is short so its minimum lease TTL is one second. Tests that share
the etcd process keep to their own key prefix (``ns``) and compare
revisions relative to ones they observed.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pitwall.storage.revstore import RevStore
from pitwall.storage.revstore.etcd import EtcdRevStore
from pitwall.storage.revstore.sqlite import SqliteRevStore

MakeStore = Callable[[], Awaitable[RevStore]]

WATCH_QUEUE_LIMIT = 8  # small, so the slow-watcher path runs in every watch test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdServer:
    url: str
    proc: subprocess.Popen[bytes]
    ports: tuple[int, int]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def etcd_binary() -> str | None:
    return shutil.which("etcd") or (("/usr/bin/etcd") if Path("/usr/bin/etcd").exists() else None)


def start_etcd(data_dir: Path, ports: tuple[int, int] | None = None) -> EtcdServer:
    """An etcd on 127.0.0.1 (client, peer ports: given, to restart one, or free ones)."""
    binary = etcd_binary()
    if binary is None:
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    client, peer = ports or (free_port(), free_port())
    url = f"http://127.0.0.1:{client}"
    log_path = data_dir.parent / f"{data_dir.name}.log"
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [binary, "--name", "t", "--data-dir", str(data_dir),
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"t=http://127.0.0.1:{peer}",
             # Minimum lease TTL is 1.5 election timeouts, rounded up to seconds: 1 s here.
             "--heartbeat-interval", "100", "--election-timeout", "500"],
            stdout=log, stderr=subprocess.STDOUT)
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError(f"etcd exited with {proc.returncode}; see {log_path}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.post(f"{url}/v3/kv/range", json={"key": "AA=="}, timeout=1).status_code == 200:
                return EtcdServer(url, proc, (client, peer))
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("etcd did not answer within 20 s")


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = start_etcd(tmp_path_factory.mktemp("etcd") / "data")
    yield server
    server.stop()


@pytest.fixture
def ns() -> str:
    """A key prefix of this test's own."""
    return f"/t/{uuid.uuid4().hex[:12]}/"


@pytest.fixture(params=["sqlite", "etcd"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(backend: str, request: pytest.FixtureRequest,
                     tmp_path: Path) -> AsyncIterator[MakeStore]:
    """A factory of started stores of the test's backend, all on the same data; stopped at the end."""
    stores: list[RevStore] = []
    server = request.getfixturevalue("etcd_server") if backend == "etcd" else None

    async def make() -> RevStore:
        s: RevStore
        if server is not None:
            s = EtcdRevStore([server.url], compact_interval_s=None, watch_queue_limit=WATCH_QUEUE_LIMIT)
        else:
            # SQLite is one process's store: a second "client" is the same object.
            if stores:
                return stores[0]
            s = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None,
                               watch_queue_limit=WATCH_QUEUE_LIMIT)
        await s.start()
        stores.append(s)
        return s

    yield make
    for s in stores:
        await s.stop()


@pytest.fixture
async def store(make_store: MakeStore) -> RevStore:
    return await make_store()
