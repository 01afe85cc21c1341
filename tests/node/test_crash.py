"""kill -9 of the process running the kubelet leaves no container process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pitwall.node.runtime import kill_leftovers
from tests.node.conftest import alive

SCRIPT = """
import asyncio, sys
from pathlib import Path
from pitwall.kube.wiring import build_kube
from pitwall.node import Kubelet
from pitwall.storage.revstore.sqlite import SqliteRevStore

async def main(d: Path) -> None:
    store = SqliteRevStore(d / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    await api.start()
    k = Kubelet(api, data_dir=d / "node", node_name="crash-node")
    await k.start()
    await api.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                             "spec": {"containers": [{"name": "c", "image": "x",
                                                      "command": [sys.executable, "-c", "import time; time.sleep(60)"]}]}})
    for _ in range(400):
        w = k.worker_for("default", "p")
        if w is not None and w.containers[0].proc is not None:
            print(w.containers[0].proc.pid, flush=True)
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(120)

asyncio.run(main(Path(sys.argv[1])))
"""


@pytest.mark.timeout(60)
def test_kill_9_of_pitwall_kills_its_containers(tmp_path: Path) -> None:
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        assert line.isdigit(), line
        child = int(line)
        assert alive(child)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stdout is not None:
            p.stdout.close()
        kill_leftovers(tmp_path / "node" / "pods")
