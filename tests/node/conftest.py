"""A kubelet over a real KubeAPI (SQLite), tiny back-off constants, in-memory telemetry sinks.

Every fixture stops its kubelet (which stops every container) and then
kills whatever process group a pid file still names, so a failing test
leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pitwall.kube import KubeAPI
from pitwall.kube.wiring import build_kube
from pitwall.node import Kubelet
from pitwall.node.runtime import kill_leftovers
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.conftest import free_port
from tests.kube.conftest import KubeServer

PY = sys.executable
NODE = "test-node"
FAST: dict[str, Any] = {"backoff_initial_s": 0.3, "backoff_max_s": 1.2, "backoff_reset_s": 600.0, "volume_sync_s": 0.3,
        "sample_interval_s": 0.2, "metrics_interval_s": 0.5, "lease_interval_s": 5.0, "max_shutdown_grace_s": 5.0, "resync_s": 2.0,
        "log_flush_s": 0.2}

# Tiny programs the pods run.
HTTP_SERVER = """
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        bad = os.path.exists(os.environ.get("FAILFILE", "/nonexistent/x"))
        self.send_response(500 if bad else 200); self.end_headers(); self.wfile.write(b"hello from " + os.environ["POD_IP"].encode())
    def log_message(self, *a): pass
print("listening on", os.environ["POD_IP"], os.environ["PORT"], flush=True)
http.server.HTTPServer((os.environ["POD_IP"], int(os.environ["PORT"])), H).serve_forever()
"""
IGNORE_TERM = """
import signal, time, os
signal.signal(signal.SIGTERM, lambda *a: print("got SIGTERM, ignoring", flush=True))
print("sleeping", os.getpid(), flush=True)
while True: time.sleep(0.1)
"""
MEMORY_HOG = """
import time
print("allocating", flush=True)
blocks = []
for _ in range(60):
    blocks.append(bytearray(8 << 20))
    for i in range(0, len(blocks[-1]), 4096): blocks[-1][i] = 1
    time.sleep(0.05)
time.sleep(30)
"""


class Sinks:
    """In-memory LogAppender and Appender."""

    def __init__(self) -> None:
        self.log_streams: list[Any] = []
        self.batches: list[Any] = []

    async def push(self, tenant: str, streams: Sequence[Any]) -> None:
        self.log_streams.extend(streams)

    async def append(self, tenant: str, batch: Any) -> None:
        self.batches.append(batch)

    async def append_metadata(self, tenant: str, metadata: Sequence[Any]) -> None:
        return None

    async def append_exemplars(self, tenant: str, exemplars: Sequence[Any]) -> None:
        return None

    def lines(self, **labels: str) -> list[str]:
        out = []
        for s in self.log_streams:
            d = dict(s.labels)
            if all(d.get(k) == v for k, v in labels.items()):
                out += [e.line for e in s.entries]
        return out

    def metric_names(self) -> set[str]:
        return {dict(lbl).get("__name__", "") for b in self.batches for lbl in b.series}


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (a /proc scan), zombies excluded."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            raw = (d / "stat").read_bytes()
            f = raw[raw.rfind(b")") + 2:].split()
            if int(f[1]) == pid and f[0] != b"Z":
                out.append(int(d.name))
    return out


def pod_children(pid: int) -> list[int]:
    """Children of ``pid`` that are pod containers (they carry ``POD_IP``), not other tests' helpers."""
    out = []
    for child in children_of(pid):
        with contextlib.suppress(OSError):
            if b"\0POD_IP=" in b"\0" + Path(f"/proc/{child}/environ").read_bytes():
                out.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/stat").read_bytes()
        return raw[raw.rfind(b")") + 2:].split()[0] != b"Z"
    return False


async def until(pred: Callable[[], Awaitable[Any]], timeout: float = 20.0, every: float = 0.1) -> Any:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await pred()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def pod(name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                           "labels": {"app": name}},
            "spec": {"containers": list(containers), "terminationGracePeriodSeconds": 2, **spec}}


def py(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "python:3.11", "command": [PY, "-u", "-c", code], **extra}


class Node:
    """A started KubeAPI + Kubelet in the test's loop."""

    def __init__(self, kube: KubeAPI, kubelet: Kubelet, sinks: Sinks, data: Path) -> None:
        self.kube, self.kubelet, self.sinks, self.data = kube, kubelet, sinks, data
        self.client = kube.client

    async def get(self, name: str) -> dict[str, Any]:
        return await self.client.get("v1", "Pod", name, "default")

    async def status(self, name: str) -> dict[str, Any]:
        return (await self.get(name)).get("status") or {}

    async def container(self, name: str, idx: int = 0) -> dict[str, Any]:
        cs = (await self.status(name)).get("containerStatuses") or [{}]
        return cs[idx] if idx < len(cs) else {}

    async def events(self, name: str) -> list[dict[str, Any]]:
        items = (await self.client.list("v1", "Event", "default")).items
        return [e for e in items if (e.get("involvedObject") or {}).get("name") == name]

    def pids(self, name: str) -> list[int]:
        w = self.kubelet.worker_for("default", name)
        return [c.proc.pid for c in w.containers if c.proc is not None] if w is not None else []

    async def restart_kubelet(self, **opts: Any) -> None:
        await self.kubelet.stop()
        self.kubelet = Kubelet(self.kube, data_dir=self.data, logs=self.sinks, metrics=self.sinks, node_name=NODE,
                               **{**FAST, **opts})
        await self.kubelet.start()
        await self.kubelet.wait_synced()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    await api.start()
    sinks = Sinks()
    data = tmp_path / "node"
    kubelet = Kubelet(api, data_dir=data, logs=sinks, metrics=sinks, node_name=NODE, **FAST)
    n = Node(api, kubelet, sinks, data)
    try:
        await kubelet.start()
        await kubelet.wait_synced()
        yield n
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(n.kubelet.stop(), 30)
        kill_leftovers(data / "pods")
        await api.stop()
        await store.stop()


class NodeServer(KubeServer):
    """The live KubeServer of tests/kube with a kubelet started in its lifespan."""

    def __init__(self, data: Path) -> None:
        super().__init__(data)
        self.node_data = data / "node"
        self.sinks = Sinks()
        inner = self.app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            async with inner(app):
                k = Kubelet(self.kube, data_dir=self.node_data, logs=self.sinks, metrics=self.sinks,
                            node_name=NODE, **FAST)
                self.holder["kubelet"] = k
                await k.start()
                try:
                    yield
                finally:
                    await k.stop()

        self.app.router.lifespan_context = lifespan

    @property
    def kubelet(self) -> Kubelet:
        k: Kubelet = self.holder["kubelet"]
        return k


@pytest.fixture
def node_server(tmp_path: Path) -> Iterator[NodeServer]:
    s = NodeServer(tmp_path)
    s.start()
    try:
        yield s
    finally:
        s.stop()
        kill_leftovers(s.node_data / "pods")


__all__ = ["FAST", "HTTP_SERVER", "IGNORE_TERM", "MEMORY_HOG", "NODE", "PY", "Node", "NodeServer", "Sinks", "alive",
           "children_of", "free_port", "pod", "py", "until"]
