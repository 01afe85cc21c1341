"""Two `pitwall server` processes on one etcd (Debian's), each its own node with a disjoint pod range.

The multi-server tests (leader failover, the mesh's mutual TLS between nodes) start the real CLI in
subprocesses with the shared state on etcd, so each can be killed with SIGKILL.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import free_port, start_pitwall_process, wait_ready
from tests.storage.revstore.conftest import start_etcd

TOKEN = "pitwall-two-servers-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Server:
    """One `pitwall server` process whose state lives on the shared etcd."""

    def __init__(self, root: Path, name: str, etcd_url: str, cidr: str, extra: dict[str, Any] | None = None) -> None:
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = root / name / "data"
        self.data.mkdir(parents=True)
        self.cfg = root / name / "pitwall.yaml"
        self.cfg.write_text(yaml.safe_dump({
            "storage": {"fsync": False}, "auth_tokens": [{"token": TOKEN, "scopes": ["read", "write", "admin"]}],
            "state": {"backend": "etcd", "endpoints": [etcd_url], "election_ttl": "3s"},
            "kube": {"node_name": name, "pod_cidr": cidr}, **(extra or {})}))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for attempt in range(3):
            self.proc = start_pitwall_process(self.data, self.port, config=self.cfg)
            try:
                wait_ready(self.url, timeout=90, proc=self.proc)
                return
            except RuntimeError as e:
                # free_port() only found the port free: a parallel test's process may have taken it since
                if "cannot listen on" not in str(e) or attempt == 2:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)

    def req(self, method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        """An authorised request with ``body`` as JSON."""
        return httpx.request(method, self.url + path, headers=AUTH, json=body, timeout=15, **kw)

    def get(self, path: str) -> Any:
        """GET ``path`` as JSON, raising on an error status."""
        r = httpx.get(self.url + path, headers=AUTH, timeout=10)
        r.raise_for_status()
        return r.json()

    def metric(self, name: str) -> float:
        """The value of an unlabelled sample on /metrics (0 when absent)."""
        for line in self.req("GET", "/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def leading(self) -> bool:
        """Whether this server holds the controllers' leader election."""
        text = httpx.get(self.url + "/metrics", headers=AUTH, timeout=5).text
        m = re.search(r"^pitwall_controllers_leading(?:\{[^}]*\})? (\S+)$", text, re.M)
        return m is not None and float(m.group(1)) == 1.0


@contextmanager
def two_servers(root: Path, cidrs: tuple[str, str],
                extra: dict[str, Any] | None = None) -> Iterator[tuple[Server, Server]]:
    """A fresh etcd and servers node-a and node-b on it (pod ranges ``cidrs``; ``extra`` top-level settings
    for both), killed on exit."""
    etcd = start_etcd(root / "etcd")
    servers = (Server(root, "node-a", etcd.url, cidrs[0], extra), Server(root, "node-b", etcd.url, cidrs[1], extra))
    try:
        for s in servers:
            s.start()
        yield servers
    finally:
        for s in servers:
            s.stop(signal.SIGKILL)
        etcd.stop()


def until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something truthy (an HTTP error counts as not yet) and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = check()
        except httpx.HTTPError:
            got = None
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
