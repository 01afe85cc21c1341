"""Every backend behind one fixture: a fresh SQLite store, a real etcd or a real PostgreSQL started
for the session.

etcd runs from Debian's ``etcd-server`` package (``/usr/bin/etcd``) on
127.0.0.1 with random ports and a temporary data directory; its election
timeout is short so its minimum lease TTL is one second. Tests that share
the etcd process keep to their own key prefix (``ns``) and compare
revisions relative to ones they observed.

PostgreSQL runs from Debian's ``postgresql`` package (``/usr/lib/postgresql/<v>/bin``): ``initdb``
makes a throwaway cluster in a temporary directory, ``postgres`` serves it on a free 127.0.0.1 port
(and a Unix socket in that directory). PostgreSQL refuses to run as root, so when the tests run as
root the directory is handed to the ``postgres`` user and the server runs as that user (``runuser``).
The cluster runs with ``fsync=off`` (a test never pulls the power); each test gets a database of its
own, so revisions start at 0 there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pitwall.storage.revstore import RevStore
from pitwall.storage.revstore.election import DEFAULT_PREFIX, Election
from pitwall.storage.revstore.etcd import EtcdRevStore
from pitwall.storage.revstore.postgres import PostgresRevStore
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


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster; ``dsn(db)`` addresses one of its databases."""

    port: int
    root: Path
    cmd: list[str]  # how to run the server (again, after stop_server)
    stop_cmd: list[str]  # pg_ctl's fast shutdown: open sessions are ended, nothing is left behind
    proc: subprocess.Popen[bytes] | None = None

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_database(self) -> str:
        """A new empty database; returns its DSN."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def run_server(self) -> None:
        """Start the server process and wait until it answers."""
        import psycopg

        with open(self.root / "postgres.log", "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(300):
            if self.proc.poll() is not None:
                log = (self.root / "postgres.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{log}")
            with contextlib.suppress(psycopg.OperationalError), psycopg.connect(self.dsn(), connect_timeout=1):
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not answer within 30 s")

    def stop_server(self) -> None:
        """Stop the server process (fast shutdown: open sessions are ended); the data stays."""
        if self.proc is None:
            return
        # Not SIGTERM: that is PostgreSQL's "smart" shutdown, which waits for every client.
        subprocess.run(self.stop_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)


def postgres_bindir() -> Path | None:
    """Debian's versioned bin directory of the newest installed PostgreSQL."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def start_postgres() -> PostgresServer:
    """initdb + postgres in a fresh directory under /tmp; as root, run as the ``postgres`` user."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    root = Path(tempfile.mkdtemp(prefix="pitwall-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse root
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-sync"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = PostgresServer(port, root, [
        *prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
        "-k", str(root), "-c", "fsync=off", "-c", "max_connections=200"],
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "stop", "-m", "fast", "-w", "-t", "30"])
    try:
        server.run_server()
    except RuntimeError:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def ns() -> str:
    """A key prefix of this test's own."""
    return f"/t/{uuid.uuid4().hex[:12]}/"


@pytest.fixture(params=["sqlite", "etcd", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(backend: str, request: pytest.FixtureRequest,
                     tmp_path: Path) -> AsyncIterator[MakeStore]:
    """A factory of started stores of the test's backend, all on the same data; stopped at the end."""
    stores: list[RevStore] = []
    server = request.getfixturevalue("etcd_server") if backend == "etcd" else None
    dsn = request.getfixturevalue("postgres_server").create_database() if backend == "postgres" else None

    async def make() -> RevStore:
        s: RevStore
        if dsn is not None:  # each store its own connections, as separate servers would have
            s = PostgresRevStore(dsn, compact_interval_s=None, watch_queue_limit=WATCH_QUEUE_LIMIT)
        elif server is not None:
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


# A candidate in another process: elected "child" for "ctl" on the backend named by argv (etcd or postgres,
# its endpoint or DSN, the TTL, the key prefix), it prints LEADER and then holds on until killed.
_CANDIDATE = textwrap.dedent("""
    import asyncio, sys
    from pitwall.storage.revstore.election import Election

    async def main() -> None:
        backend, address, ttl, prefix = sys.argv[1:5]
        if backend == "etcd":
            from pitwall.storage.revstore.etcd import EtcdRevStore
            store = EtcdRevStore([address], compact_interval_s=None)
        else:
            from pitwall.storage.revstore.postgres import PostgresRevStore
            store = PostgresRevStore(address, compact_interval_s=None)
        await store.start()
        e = Election(store, "ctl", "child", ttl_s=float(ttl), prefix=prefix)
        await e.start()
        await e.elected.wait()
        print("LEADER", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


async def assert_takeover_after_kill_9(store: RevStore, backend: str, address: str, *, ttl_s: float,
                                       prefix: str = DEFAULT_PREFIX) -> None:
    """A candidate process leads on ``backend`` at ``address``; an Election on ``store`` follows it for half
    the TTL; after SIGKILL of that process it is elected (within 30s) and names itself the leader."""
    child = subprocess.Popen([sys.executable, "-c", _CANDIDATE, backend, address, str(ttl_s), prefix],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)
        assert line.strip() == b"LEADER"
        me = Election(store, "ctl", "parent", ttl_s=ttl_s, prefix=prefix)
        await me.start()
        await asyncio.sleep(ttl_s / 2)
        assert not me.is_leader and await me.leader() == "child"
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.wait_for(me.elected.wait(), 30)
        assert await me.leader() == "parent"
        await me.stop()
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
